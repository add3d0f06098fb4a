"""Task teachers: the default teacher trained on an embedded task, in minutes on a CPU.

The paper's teachers are instruction-tuned LLMs that already know how to answer. The
offline stand-in is ``default-teacher`` (a 0.9M-parameter Llama with a trained Unigram
vocabulary) trained on one embedded task; the result is a kit model like any other:

    load_model("teacher-extractive_qa")     # trained on first use (minutes), then cached

Recipe (`TeacherRecipe`): every training example is a freshly generated record of the
task (generator indices from 100,000 on, so never a committed train, validation or test
record; the few that repeat a committed text are skipped), each seen once; the loss is
the language-model loss over the whole zero-shot prompt and answer (the paragraphs are
predictable enough to teach the model to read them, which the answer tokens alone teach
slowly); AdamW with a linear warm-up and cosine decay, gradients clipped at 1. The
teacher answers with 0 shots, the prompt it was trained on.

Training saves a checkpoint every ``checkpoint_every`` steps in ``<folder>.partial``, so an
interrupted run resumes from there. The finished folder's ``uld.json`` records the recipe,
the wall time and the teacher's validation scores, which say how much there is to learn
from it (these are small models: far from perfect, and better than students trained
from scratch on 1,500 examples).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from uld.cache import cache_dir

__all__ = ["TASK_TEACHERS", "TeacherRecipe", "fresh_records", "materialise_task_teacher", "train_task_teacher"]

TASK_TEACHERS = {f"teacher-{task}": task for task in ("extractive_qa", "generative_qa", "dialogue_summary")}
FIRST_INDEX = 100_000  # generator indices of the training records: past every committed one


@dataclass(frozen=True)
class TeacherRecipe:
    """How a task teacher is trained (the defaults take about 4 minutes on 2 CPU cores)."""

    base: str = "default-teacher"
    steps: int = 500
    batch_size: int = 16
    learning_rate: float = 5e-3
    warmup_steps: int = 50
    max_length: int = 512
    checkpoint_every: int = 100
    validation_rows: int = 100
    seed: int = 0


def materialise_task_teacher(name: str, cache: Path | None = None, recipe: TeacherRecipe = TeacherRecipe(),
                             echo=print) -> Path:
    """The folder of a task teacher, trained first when it is not in the cache."""
    if name not in TASK_TEACHERS:
        raise ValueError(f"unknown task teacher {name!r}; choose from {', '.join(TASK_TEACHERS)}")
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
    from uld.prompts import teacher_prompt

    if task not in TASK_TEACHERS.values():
        raise ValueError(f"task teachers exist for the embedded tasks only ({', '.join(TASK_TEACHERS.values())}), "
                         f"not {task!r}")
    started = time.perf_counter()
    kind = TASKS[task].kind
    tokenizer, model = load_tokenizer(recipe.base, cache), load_model(recipe.base, cache=cache)
    render = (lambda row, context: teacher_prompt(tokenizer, kind, context, row["question"], []))
    examples = _training_examples(task, recipe, tokenizer, render)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, betas=(0.9, 0.98), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _learning_rate_factor(step, recipe))
    scratch = Path(folder).with_name(Path(folder).name + ".partial")
    step = _resume(scratch / "checkpoint.pt", recipe, model, optimizer, schedule)
    torch.manual_seed(recipe.seed + step)
    model.train()
    bar = tqdm(total=recipe.steps, initial=step, desc=f"training teacher-{task}", disable=not progress)
    while step < recipe.steps:
        batch = collate(examples[step * recipe.batch_size:(step + 1) * recipe.batch_size], tokenizer.pad_token_id)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)  # the whole text
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % recipe.checkpoint_every == 0 and step < recipe.steps:
            _checkpoint(scratch / "checkpoint.pt", recipe, step, model, optimizer, schedule)
    bar.close()
    model.eval()
    scores = _validation_scores(model, tokenizer, task, kind, recipe.validation_rows)
    record = {"name": f"teacher-{task}", "task": task, "recipe": asdict(recipe), "trained_examples": len(examples),
              "seconds": round(time.perf_counter() - started, 1), "validation": scores, "shots": 0}
    _save(Path(folder), model, tokenizer, record)
    echo(f"teacher-{task}: validation {', '.join(f'{k} {v:.1f}' for k, v in scores.items())} "
         f"after {record['seconds']:.0f} s")
    return Path(folder)


def fresh_records(task: str, count: int, seed: int = 0) -> list[dict]:
    """``count`` generated records of ``task`` that no committed split holds, shuffled."""
    from uld.data import load_task
    from uld.embedded import EMBEDDED_TASKS

    committed = {(row["context"], row["question"]) for split in ("train", "validation", "test")
                 for row in load_task(task, split)}
    records, index = [], FIRST_INDEX
    while len(records) < count:
        record = EMBEDDED_TASKS[task](index)
        index += 1
        if (record["context"], record["question"]) not in committed:
            records.append(record)
    random.Random(seed).shuffle(records)
    return records


def _training_examples(task, recipe: TeacherRecipe, tokenizer, render) -> list[dict]:
    """``steps * batch_size`` tokenised fresh records."""
    from datasets import Dataset

    from uld.data import tokenize_dataset

    records = fresh_records(task, recipe.steps * recipe.batch_size, recipe.seed)
    dataset, report = tokenize_dataset(Dataset.from_list(records), tokenizer, render, is_encoder_decoder=False,
                                       max_length=recipe.max_length)
    if report["too_long"]:
        raise ValueError(f"{report['too_long']} generated {task} records do not fit max_length={recipe.max_length}")
    return list(dataset)


def _learning_rate_factor(step: int, recipe: TeacherRecipe) -> float:
    """Linear warm-up, then cosine decay to zero at ``recipe.steps``."""
    warmup = min(1.0, (step + 1) / max(recipe.warmup_steps, 1))
    return warmup * 0.5 * (1 + math.cos(math.pi * min(step, recipe.steps) / recipe.steps))


def _checkpoint(path: Path, recipe, step, model, optimizer, schedule) -> None:
    import os

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".partial")
    torch.save({"recipe": asdict(recipe), "step": step, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}, scratch)
    os.replace(scratch, path)


def _resume(path: Path, recipe, model, optimizer, schedule) -> int:
    """The step to continue from: a checkpoint's (same recipe), else 0."""
    import torch

    if not path.exists():
        return 0
    state = torch.load(path, weights_only=False)
    if state["recipe"] != asdict(recipe):
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    return state["step"]


def _validation_scores(model, tokenizer, task, kind, rows) -> dict:
    from uld.data import TASKS, load_task
    from uld.generation import greedy_first_lines
    from uld.metrics import exact_match, score
    from uld.prompts import teacher_prompt

    validation = load_task(task, "validation", limit=rows)
    predictions = []
    for start in range(0, len(validation), 25):
        chunk = validation.select(range(start, min(start + 25, len(validation))))
        prompts = [teacher_prompt(tokenizer, kind, row["context"], row["question"], []) for row in chunk]
        predictions += greedy_first_lines(model, tokenizer, prompts, max_new_tokens=48)
    metric = TASKS[task].metric
    scores = {metric: score(metric, predictions, validation["answers"])}
    if kind != "summarization":
        scores["em"] = exact_match(predictions, validation["answers"])
    return scores
