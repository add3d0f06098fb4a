"""Task teachers: the default teacher trained on an embedded task, on a CPU.

The paper's teachers are instruction-tuned LLMs that already know how to answer. The
offline stand-in is ``default-teacher`` (a 0.9M-parameter Llama, 4 layers of width 128,
with Llama's SentencePiece vocabulary cut to the corpus) trained on one embedded task;
the result is a kit model like any other:

    load_model("teacher-extractive_qa")     # data/teachers/extractive_qa when shipped, else trained once

Teachers trained once with a long recipe are committed under ``data/teachers/<task>``
(``uld.json`` records the recipe, the command, the validation curve and the scores);
a teacher that is not committed is trained on first use with the default recipe and
cached. To rebuild a committed one, run the command in its ``uld.json`` (a teacher
trained in two stages keeps the first stage's record, command included, as
``continued_from``). The extractive teacher, 55 minutes on 2 cores, test F1 91.2:

    python -m uld train-teacher --task extractive_qa --out /tmp/stage1 \
        --set steps=3000 --set curve_every=500 --set checkpoint_every=250
    python -m uld train-teacher --task extractive_qa --out data/teachers/extractive_qa \
        --set base=/tmp/stage1 --set steps=2000 --set learning_rate=0.001 --set warmup_steps=50 \
        --set seed=1 --set curve_every=500 --set checkpoint_every=250

Recipe (`TeacherRecipe`): every training text is a freshly generated context of the task
(generator indices from 100,000 on; a context that a committed split holds is skipped)
followed by up to ``questions_per_context`` of the questions the generator can ask about
it, each with its answer: the teacher's zero-shot prompt for the first, a follow-up
``Question: ... Answer: ...`` for the others. One read of a paragraph thus teaches several
look-ups, and the answers, not the paragraphs' random facts, carry most of the signal
(with one question per text the same model stayed near F1 17 after 2,500 steps; with
eight it passed 36 after 1,000 on the paragraphs of earlier versions: `results.md`). The loss is the language-model loss over the whole text
plus ``answer_weight`` times the answers' loss; AdamW with a linear warm-up and cosine
decay, gradients clipped at 1. The teacher answers with 0 shots, the prompt it was
trained on.

Training saves a checkpoint every ``checkpoint_every`` steps in ``<folder>.partial``, so an
interrupted run resumes from there (validation curve included).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from uld.storage import cache_dir, shipped_or_built
from uld.training_loop import Schedule

__all__ = ["TASK_TEACHERS", "TeacherRecipe", "fresh_records", "materialise_task_teacher", "train_task_teacher"]

TASK_TEACHERS = {f"teacher-{task}": task for task in ("extractive_qa", "generative_qa", "dialogue_summary")}
FIRST_INDEX = 100_000  # generator indices of the training records: past every committed one
COMMITTED = Path(__file__).resolve().parents[1] / "data" / "teachers"  # teachers the kit ships, trained once


@dataclass(frozen=True)
class TeacherRecipe(Schedule):
    """How a task teacher is trained: the `Schedule` (steps, batch size, learning rate, ...)
    and what it trains on. The defaults take about 6 minutes on 2 CPU cores."""

    base: str = "default-teacher"  # a tiny model or a folder: a trained teacher's folder continues its training
    max_length: int = 512
    validation_rows: int = 100
    questions_per_context: int = 8  # answered in one training text: the paragraph is read once for all
    answer_weight: float = 1.0  # the answers' loss, added to the loss over the whole text
    curve_every: int = 0  # score the validation rows every so many steps (0: only at the end)


def materialise_task_teacher(name: str, cache: Path | None = None, recipe: TeacherRecipe | None = None,
                             echo=print) -> Path:
    """The folder of a task teacher.

    Without a ``recipe``: the teacher committed under ``data/teachers/<task>`` when the kit
    ships one, else the default recipe's, trained once into the cache. With a ``recipe``:
    that recipe's, trained once into the cache.
    """
    if name not in TASK_TEACHERS:
        raise ValueError(f"unknown task teacher {name!r}; choose from {', '.join(TASK_TEACHERS)}")
    def build(folder: Path) -> Path:
        echo(f"training {name} once ({chosen.steps} steps, minutes on a CPU); it is cached in {folder}")
        return train_task_teacher(TASK_TEACHERS[name], folder, chosen, cache=cache, echo=echo)

    chosen = recipe or TeacherRecipe()
    return shipped_or_built(COMMITTED / TASK_TEACHERS[name], Path(cache or cache_dir()) / "models" / name, build,
                            use_shipped=recipe is None)


def train_task_teacher(task: str, folder: Path, recipe: TeacherRecipe = TeacherRecipe(), *, cache: Path | None = None,
                       echo=print, progress: bool = True, command: str | None = None) -> Path:
    """Train ``recipe.base`` on fresh records of the embedded ``task``; save it as ``folder``
    (``command``, the command line that asked for it, is recorded in its ``uld.json``; when
    the base is itself a trained teacher, its record is kept there as ``continued_from``)."""
    from uld.data import TASKS
    from uld.model_files import base_folder, open_model, open_tokenizer, save_model_folder
    from uld.training_loop import language_model_loss, train_steps

    if task not in TASK_TEACHERS.values():
        raise ValueError(f"task teachers exist for the embedded tasks only ({', '.join(TASK_TEACHERS.values())}), "
                         f"not {task!r}")
    started = time.perf_counter()
    kind = TASKS[task].kind
    base = base_folder(recipe.base, cache)
    tokenizer, model = open_tokenizer(base, recipe.base), open_model(base, recipe.base)
    examples = _training_examples(task, kind, recipe, tokenizer)
    scratch = Path(folder).with_name(Path(folder).name + ".partial")
    curve = train_steps(model, examples, schedule=recipe, pad_token_id=tokenizer.pad_token_id,
                        checkpoint=scratch / "checkpoint.pt", identity={"recipe": asdict(recipe)},
                        loss=lambda model, batch: language_model_loss(model, batch, recipe.answer_weight),
                        every=recipe.curve_every, echo=echo, progress=progress, description=f"training teacher-{task}",
                        measure=lambda: _validation_scores(model, tokenizer, task, kind, recipe.validation_rows))
    scores = _validation_scores(model, tokenizer, task, kind, recipe.validation_rows)
    curve.append({"step": recipe.steps, **scores})
    record = {"name": f"teacher-{task}", "task": task, "role": "teacher", "recipe": asdict(recipe),
              "trained_examples": len(examples), "seconds": round(time.perf_counter() - started, 1),
              "validation": scores, "curve": curve, "shots": 0, "command": command}
    base_record = Path(base) / "uld.json"
    earlier = json.loads(base_record.read_text()) if base_record.exists() else {}
    if "curve" in earlier:  # the base is a trained task teacher: keep its recipe, curve and command
        record["continued_from"] = earlier
    save_model_folder(Path(folder), model, tokenizer, record)
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


def _validation_scores(model, tokenizer, task, kind, rows) -> dict:
    from uld.data import load_task
    from uld.generation import answer_questions
    from uld.metrics import score_answers

    validation = load_task(task, "validation", limit=rows)
    predictions = answer_questions(model, tokenizer, validation, kind=kind, prompt="teacher", batch_size=25)
    return score_answers(task, predictions, validation["answers"])
