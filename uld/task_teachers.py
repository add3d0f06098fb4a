"""Task teachers: the default teacher trained on an embedded task, on a CPU.

The paper's teachers are instruction-tuned LLMs that already know how to answer. The
offline stand-in is ``default-teacher`` (a 0.9M-parameter Llama, 4 layers of width 128,
with Llama's SentencePiece vocabulary cut to the corpus) trained on one embedded task;
the result is a kit model like any other:

    load_model("teacher-extractive_qa")     # data/teachers/extractive_qa when shipped, else trained once

Teachers trained once with a long recipe are committed under ``data/teachers/<task>``
(``uld.json`` records the recipe, the command, the validation curve and the scores);
a teacher that is not committed is trained on first use with the default recipe and
cached. To rebuild a committed one (about 45 minutes on 2 cores for extractive_qa):

    python -m uld train-teacher --task extractive_qa --out data/teachers/extractive_qa \
        --set steps=4000 --set curve_every=500 --set checkpoint_every=250

Recipe (`TeacherRecipe`): every training text is a freshly generated context of the task
(generator indices from 100,000 on; a context that a committed split holds is skipped)
followed by up to ``questions_per_context`` of the questions the generator can ask about
it, each with its answer: the teacher's zero-shot prompt for the first, a follow-up
``Question: ... Answer: ...`` for the others. One read of a paragraph thus teaches several
look-ups, and the answers, not the paragraphs' random facts, carry most of the signal
(with one question per text the same model stays near F1 15 after 2,500 steps; with
eight it passed 36 after 1,000). The loss is the language-model loss over the whole text
plus ``answer_weight`` times the answers' loss; AdamW with a linear warm-up and cosine
decay, gradients clipped at 1. The teacher answers with 0 shots, the prompt it was
trained on.

Training saves a checkpoint every ``checkpoint_every`` steps in ``<folder>.partial``, so an
interrupted run resumes from there (validation curve included).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from uld.cache import cache_dir

__all__ = ["TASK_TEACHERS", "TeacherRecipe", "recipe_from", "fresh_records", "materialise_task_teacher",
           "train_task_teacher"]

TASK_TEACHERS = {f"teacher-{task}": task for task in ("extractive_qa", "generative_qa", "dialogue_summary")}
FIRST_INDEX = 100_000  # generator indices of the training records: past every committed one
COMMITTED = Path(__file__).resolve().parents[1] / "data" / "teachers"  # teachers the kit ships, trained once


@dataclass(frozen=True)
class TeacherRecipe:
    """How a task teacher is trained (the defaults take about 4 minutes on 2 CPU cores)."""

    base: str = "default-teacher"
    steps: int = 500
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    max_length: int = 512
    checkpoint_every: int = 100
    validation_rows: int = 100
    seed: int = 0
    questions_per_context: int = 8  # answered in one training text: the paragraph is read once for all
    answer_weight: float = 1.0  # the answers' loss, added to the loss over the whole text
    curve_every: int = 0  # score the validation rows every so many steps (0: only at the end)


def recipe_from(settings: list[str]) -> TeacherRecipe:
    """A `TeacherRecipe` from ``field=value`` strings (values typed as the defaults are).

    >>> recipe_from(["steps=4000", "learning_rate=1e-3"]).steps
    4000
    """
    from dataclasses import fields, replace

    types = {f.name: type(getattr(TeacherRecipe(), f.name)) for f in fields(TeacherRecipe)}
    changes = {}
    for setting in settings:
        name, sep, value = setting.partition("=")
        if not sep or name not in types:
            raise ValueError(f"expected FIELD=VALUE with a TeacherRecipe field ({', '.join(types)}), got {setting!r}")
        try:
            changes[name] = types[name](value)
        except ValueError:
            raise ValueError(f"{name} must be a {types[name].__name__}, got {value!r}") from None
    return replace(TeacherRecipe(), **changes)


def materialise_task_teacher(name: str, cache: Path | None = None, recipe: TeacherRecipe | None = None,
                             echo=print) -> Path:
    """The folder of a task teacher.

    Without a ``recipe``: the teacher committed under ``data/teachers/<task>`` when the kit
    ships one, else the default recipe's, trained once into the cache. With a ``recipe``:
    that recipe's, trained once into the cache.
    """
    if name not in TASK_TEACHERS:
        raise ValueError(f"unknown task teacher {name!r}; choose from {', '.join(TASK_TEACHERS)}")
    committed = COMMITTED / TASK_TEACHERS[name]
    if recipe is None and (committed / "uld.json").exists():
        return committed
    recipe = recipe or TeacherRecipe()
    folder = Path(cache or cache_dir()) / "models" / name
    if (folder / "uld.json").exists():
        return folder
    echo(f"training {name} once ({recipe.steps} steps, a few minutes on a CPU); it is cached in {folder}")
    return train_task_teacher(TASK_TEACHERS[name], folder, recipe, cache=cache, echo=echo)


def train_task_teacher(task: str, folder: Path, recipe: TeacherRecipe = TeacherRecipe(), *, cache: Path | None = None,
                       echo=print, progress: bool = True) -> Path:
    """Train ``recipe.base`` on fresh records of the embedded ``task``; save it as ``folder``."""
    import torch
    from tqdm.auto import tqdm

    from uld.data import TASKS, collate
    from uld.models import _save, load_model, load_tokenizer

    if task not in TASK_TEACHERS.values():
        raise ValueError(f"task teachers exist for the embedded tasks only ({', '.join(TASK_TEACHERS.values())}), "
                         f"not {task!r}")
    started = time.perf_counter()
    kind = TASKS[task].kind
    tokenizer, model = load_tokenizer(recipe.base, cache), load_model(recipe.base, cache=cache)
    examples = _training_examples(task, kind, recipe, tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, betas=(0.9, 0.98), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _learning_rate_factor(step, recipe))
    scratch = Path(folder).with_name(Path(folder).name + ".partial")
    step, curve = _resume(scratch / "checkpoint.pt", recipe, model, optimizer, schedule)
    torch.manual_seed(recipe.seed + step)
    model.train()
    bar = tqdm(total=recipe.steps, initial=step, desc=f"training teacher-{task}", disable=not progress)
    while step < recipe.steps:
        batch = collate(examples[step * recipe.batch_size:(step + 1) * recipe.batch_size], tokenizer.pad_token_id)
        loss = _loss(model, batch, recipe.answer_weight)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if recipe.curve_every and step % recipe.curve_every == 0 and step < recipe.steps:
            curve.append({"step": step, **_validation_scores(model, tokenizer, task, kind, recipe.validation_rows)})
            echo(f"step {step}: validation {', '.join(f'{k} {v:.1f}' for k, v in curve[-1].items() if k != 'step')}")
            model.train()
        if step % recipe.checkpoint_every == 0 and step < recipe.steps:
            _checkpoint(scratch / "checkpoint.pt", recipe, step, model, optimizer, schedule, curve)
    bar.close()
    model.eval()
    scores = _validation_scores(model, tokenizer, task, kind, recipe.validation_rows)
    curve.append({"step": step, **scores})
    record = {"name": f"teacher-{task}", "task": task, "recipe": asdict(recipe), "trained_examples": len(examples),
              "seconds": round(time.perf_counter() - started, 1), "validation": scores, "curve": curve, "shots": 0}
    _save(Path(folder), model, tokenizer, record)
    echo(f"teacher-{task}: validation {', '.join(f'{k} {v:.1f}' for k, v in scores.items())} "
         f"after {record['seconds']:.0f} s")
    return Path(folder)


def fresh_records(task: str, count: int, seed: int = 0) -> list[dict]:
    """``count`` generated records of ``task`` whose context no committed split holds, shuffled.

    Each carries, besides its own ``question`` and ``answers``, ``questions``: every
    (question, answer) the generator could ask of its context (`uld.embedded.every_question`).
    """
    from uld.data import load_task
    from uld.embedded import EMBEDDED_TASKS, every_question

    committed = {row["context"] for split in ("train", "validation", "test") for row in load_task(task, split)}
    records, index = [], FIRST_INDEX
    while len(records) < count:
        record = EMBEDDED_TASKS[task](index)
        if record["context"] not in committed:
            records.append({**record, "questions": every_question(task, index)[1]})
        index += 1
    random.Random(seed).shuffle(records)
    return records


def _training_examples(task: str, kind: str, recipe: TeacherRecipe, tokenizer) -> list[dict]:
    """``steps * batch_size`` training texts: a fresh context, then up to
    ``questions_per_context`` of its questions, each followed by its answer."""
    examples = []
    for record in fresh_records(task, recipe.steps * recipe.batch_size, recipe.seed):
        questions = list(record["questions"])
        random.Random(f"{recipe.seed}:{record['id']}").shuffle(questions)
        examples.append(_question_sequence(tokenizer, kind, record["context"], questions[:recipe.questions_per_context],
                                           recipe.max_length))
    return examples


def _question_sequence(tokenizer, kind: str, context: str, questions: list[tuple[str, str]], max_length: int) -> dict:
    """``input_ids`` (teacher prompt, answer, follow-up question, answer, ..., EOS) and ``labels``
    (the answers' ids and the EOS; -100 elsewhere), as many questions as fit ``max_length``."""
    from uld.prompts import follow_up_question, teacher_prompt

    ids: list[int] = []
    labels: list[int] = []
    for number, (question, answer) in enumerate(questions):
        prompt = teacher_prompt(tokenizer, kind, context, question, []) if number == 0 else \
            follow_up_question(kind, question)
        prompt_ids = tokenizer(prompt, add_special_tokens=number == 0)["input_ids"]
        answer_ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
        if len(ids) + len(prompt_ids) + len(answer_ids) + 1 > max_length:
            if number == 0:
                raise ValueError(f"a generated context and its first question do not fit max_length={max_length}")
            break
        ids += prompt_ids + answer_ids
        labels += [-100] * len(prompt_ids) + answer_ids
    ids.append(tokenizer.eos_token_id)
    labels.append(tokenizer.eos_token_id)
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def _loss(model, batch: dict, answer_weight: float):
    """The language-model loss over the whole text plus ``answer_weight`` times the answers' loss.

    The whole text teaches the model to read the paragraphs; the answers, what to copy.
    """
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    logits = logits.reshape(-1, logits.shape[-1])
    text = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, -100).reshape(-1)
    answers = batch["labels"][:, 1:].reshape(-1)
    return F.cross_entropy(logits, text, ignore_index=-100) + answer_weight * F.cross_entropy(logits, answers,
                                                                                             ignore_index=-100)


def _learning_rate_factor(step: int, recipe: TeacherRecipe) -> float:
    """Linear warm-up, then cosine decay to zero at ``recipe.steps``."""
    warmup = min(1.0, (step + 1) / max(recipe.warmup_steps, 1))
    return warmup * 0.5 * (1 + math.cos(math.pi * min(step, recipe.steps) / recipe.steps))


def _checkpoint(path: Path, recipe, step, model, optimizer, schedule, curve: list) -> None:
    import os

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".partial")
    torch.save({"recipe": asdict(recipe), "step": step, "curve": curve, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}, scratch)
    os.replace(scratch, path)


def _resume(path: Path, recipe, model, optimizer, schedule) -> tuple[int, list]:
    """The step to continue from and the validation curve so far: a checkpoint's (same recipe), else 0."""
    import torch

    if not path.exists():
        return 0, []
    state = torch.load(path, weights_only=False)
    if state["recipe"] != asdict(recipe):
        return 0, []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    return state["step"], state["curve"]


def _validation_scores(model, tokenizer, task, kind, rows) -> dict:
    from uld.data import load_task
    from uld.evaluation import answer_questions, score_answers

    validation = load_task(task, "validation", limit=rows)
    predictions = answer_questions(model, tokenizer, validation, kind=kind, prompt="teacher", batch_size=25)
    return score_answers(task, predictions, validation["answers"])
