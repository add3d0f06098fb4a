"""Evaluation in one place: a model's greedy answers to a task's questions, scored and written.

Every score in the kit is `uld.generation.answer_questions` (greedy first lines) scored by
`uld.metrics.score_answers`; this module puts them to work for a named model
(`evaluate_model`, the command line), for a run's student (``predictions.jsonl``, read back
by the comparisons) and during training (`HeldOutScore`). Students answer their zero-shot
plain prompt; teachers their own prompt (the instruction, ``shots`` examples from the
training split, then the question), as they answer when they teach:

    python -m uld evaluate --model teacher-extractive_qa --task extractive_qa --out runs/eval-teacher
    python -m uld evaluate --model default-student --task extractive_qa --tasks-dir /tmp/tasks-seed7 --out runs/x

``<out>/metrics.json`` holds the scores (the task's metric, and exact match for question
answering), the prompt, the model and the number of questions; ``<out>/predictions.jsonl``
each answer with its references.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from uld.storage import write_atomically

__all__ = ["HeldOutScore", "write_predictions", "read_predictions", "model_prompt", "evaluate_model"]


def write_predictions(folder: Path, rows, predictions: list[str]) -> None:
    """``folder/predictions.jsonl``: ``id``, ``prediction``, ``references`` per question, written whole."""
    write_atomically(Path(folder) / "predictions.jsonl", "".join(
        json.dumps({"id": i, "prediction": p, "references": r}, ensure_ascii=False) + "\n"
        for i, p, r in zip(rows["id"], predictions, rows["answers"])))


def read_predictions(folder: Path) -> list[dict]:
    """The records `write_predictions` wrote to ``folder/predictions.jsonl``, in their order."""
    lines = (Path(folder) / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def model_prompt(name_or_path: str) -> str:
    """The prompt a model answers best: ``teacher`` for the kit's teachers (its ``uld.json``
    says so), else ``student``."""
    from uld.models import resolve_model

    record = Path(resolve_model(name_or_path)) / "uld.json"
    if record.exists():
        info = json.loads(record.read_text())
        if info.get("role") == "teacher" or "task" in info:
            return "teacher"
    return "student"


def evaluate_model(model: str, task: str, out, *, split: str = "test", tasks_dir=None, shots: int = 0,
                   limit: int | None = None, prompt: str | None = None, max_new_tokens: int = 48,
                   max_length: int = 512, source=None, echo=print) -> dict:
    """Score ``model`` on ``task`` and write ``out/metrics.json`` and ``out/predictions.jsonl``.

    ``tasks_dir`` reads an embedded task from another folder (``python -m uld data --out
    DIR --seed 7`` writes one); ``source`` is a local copy of a hub task (as in `load_task`);
    ``prompt`` defaults to `model_prompt`.
    """
    from uld.data import TASKS, load_task
    from uld.generation import answer_questions
    from uld.metrics import score_answers
    from uld.models import default_device, fit_embeddings, load_model, load_tokenizer

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if shots < 0:
        raise ValueError(f"shots must be >= 0, got {shots}")
    if tasks_dir is not None and source is not None:
        raise ValueError("give tasks_dir (embedded tasks) or source (a copy of a hub task), not both")
    source = Path(tasks_dir) / task if tasks_dir is not None else source
    if tasks_dir is not None and not source.is_dir():
        raise ValueError(f"{source} does not exist: --tasks-dir must hold one folder per task (python -m uld data --out)")
    started = time.perf_counter()
    rows = load_task(task, split, limit=limit, source=source)
    prompt = prompt or model_prompt(model)
    pool = load_task(task, "train", source=source) if shots else None
    tokenizer, network = load_tokenizer(model), load_model(model, device=default_device())
    fit_embeddings(network, tokenizer)
    echo(f"{model} answers {len(rows)} {task} {split} questions ({prompt} prompt, {shots} shots)")
    predictions = answer_questions(network, tokenizer, rows, kind=TASKS[task].kind, prompt=prompt, shots=shots,
                                   shot_pool=pool, max_new_tokens=max_new_tokens, max_length=max_length)
    scores = score_answers(task, predictions, rows["answers"])
    Path(out).mkdir(parents=True, exist_ok=True)
    write_predictions(Path(out), rows, predictions)
    results = {"scores": scores, "metric": TASKS[task].metric, "model": model, "task": task, "split": split,
               "tasks_dir": str(tasks_dir) if tasks_dir is not None else None, "prompt": prompt, "shots": shots,
               "n_eval": len(rows), "seconds": round(time.perf_counter() - started, 1)}
    write_atomically(Path(out) / "metrics.json", json.dumps(results, indent=2))
    echo(f"{model}: {', '.join(f'{k} {v:.2f}' for k, v in scores.items())}")
    return results


@dataclass
class HeldOutScore:
    """The task metric of the student's greedy answers on held-out ``rows``.

    ``HeldOutScore(rows, kind, metric, tokenizer)(model) -> float`` (e.g. F1 in percent).
    """

    rows: object  # a datasets.Dataset with id, context, question, answers
    kind: str
    metric: str
    tokenizer: object
    max_new_tokens: int = 150
    max_length: int = 512

    def __call__(self, model) -> float:
        from uld.generation import answer_questions
        from uld.metrics import score

        predictions = answer_questions(model, self.tokenizer, self.rows, kind=self.kind,
                                       max_new_tokens=self.max_new_tokens, max_length=self.max_length)
        return score(self.metric, predictions, self.rows["answers"])
