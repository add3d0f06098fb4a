"""Teacher answers: the paper's training data, generated once and resumable.

The teacher answers each training question with its few-shot prompt (shots drawn from the
training split, never the question itself), greedily, up to ``max_new_tokens``; the
first line of its answer is kept. Answers are appended to ``<run>/teacher_answers.jsonl``
one batch at a time and flushed to disk, so an interrupted run continues where it
stopped: finished rows are never generated again, and a half-written last line is
dropped and redone. `record_settings` keeps ``teacher_answers.json`` beside the journal:
what the answers depend on (`answer_settings`: the teacher, its shots, the answer length,
...); a folder whose answers were written under other settings is refused with a
`ValueError` naming the difference, so they are never reused by mistake.

    answers = generate_teacher_answers(teacher, tokenizer, load_task("extractive_qa", "train"),
                                       kind="extractive_qa", run_dir="runs/x", shots=2)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from uld.generation import greedy_first_lines
from uld.storage import write_atomically
from uld.prompts import shots_for_row, teacher_prompt

__all__ = ["generate_teacher_answers", "load_teacher_answers", "answer_settings", "record_settings", "MissingAnswers",
           "ANSWERS_FILE", "SETTINGS_FILE"]

ANSWERS_FILE = "teacher_answers.jsonl"
SETTINGS_FILE = "teacher_answers.json"


class MissingAnswers(ValueError):
    """Some questions have no teacher answer on disk yet: generate them."""


def generate_teacher_answers(model, tokenizer, dataset, *, kind: str, run_dir, shots: int = 0, shot_pool=None,
                             batch_size: int = 8, max_new_tokens: int = 150, seed: int = 0, progress: bool = True):
    """Answer every row of ``dataset`` with the teacher; returns the rows plus ``teacher_answer``.

    Args:
        model, tokenizer: the teacher (decoder or encoder-decoder) and its tokenizer.
        dataset: rows with ``id, context, question, answers``.
        kind: the task kind (`uld.prompts.KINDS`), for the prompt.
        run_dir: where ``teacher_answers.jsonl`` is written and resumed from.
        shots, shot_pool: few-shot examples per prompt, drawn from ``shot_pool`` (default:
            ``dataset`` itself) with a per-row seed, never the row being answered.
    """
    from tqdm.auto import tqdm

    path = Path(run_dir) / ANSWERS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    done = _finished(path)
    pool = list(shot_pool if shot_pool is not None else dataset) if shots else []
    todo = [(index, row) for index, row in enumerate(dataset) if row["id"] not in done]
    with open(path, "a", encoding="utf-8") as journal:
        bar = tqdm(total=len(dataset), initial=len(dataset) - len(todo), desc="teacher answers", disable=not progress)
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            prompts = [teacher_prompt(tokenizer, kind, row["context"], row["question"],
                                      shots_for_row(pool, shots, seed, index, row["id"])) for index, row in batch]
            answers = greedy_first_lines(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                         add_special_tokens=not tokenizer.chat_template)
            for (_, row), answer in zip(batch, answers):
                journal.write(json.dumps({"id": row["id"], "teacher_answer": answer}, ensure_ascii=False) + "\n")
            journal.flush()
            os.fsync(journal.fileno())
            bar.update(len(batch))
        bar.close()
    return load_teacher_answers(run_dir, dataset)


def answer_settings(teacher: str, *, shots: int, max_new_tokens: int, seed: int, dtype: str | None = None) -> dict:
    """What a teacher's answers to given questions depend on: the teacher and its dtype, its
    shots, the answer length, and the seed when shots are drawn.

    >>> answer_settings("default-teacher", shots=0, max_new_tokens=16, seed=3)
    {'teacher': 'default-teacher', 'dtype': None, 'shots': 0, 'max_new_tokens': 16, 'seed': 0}
    """
    return {"teacher": teacher, "dtype": dtype, "shots": shots, "max_new_tokens": max_new_tokens,
            "seed": seed if shots else 0}


def record_settings(run_dir, settings: dict) -> None:
    """Record that the teacher answers in ``run_dir`` are written under ``settings``
    (`answer_settings`); `ValueError` naming the difference when other settings were
    recorded there (a journal from before settings were recorded is taken as it is)."""
    path = Path(run_dir) / SETTINGS_FILE
    recorded = json.loads(path.read_text()) if path.exists() else settings
    differences = [f"{key} {recorded.get(key)!r} there, {settings.get(key)!r} here"
                   for key in sorted(set(recorded) | set(settings)) if recorded.get(key) != settings.get(key)]
    if differences:
        raise ValueError(f"the teacher answers in {run_dir} were written under other settings ("
                         f"{'; '.join(differences)}): remove {ANSWERS_FILE} and {SETTINGS_FILE} there, "
                         f"or use another folder")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(settings, indent=1, sort_keys=True))


def _finished(path: Path) -> dict[str, str]:
    """Answers already on disk; a torn last line (an interrupted write) is cut off."""
    if not path.exists():
        return {}
    done, good_bytes = {}, 0
    with open(path, "rb") as journal:
        for line in journal:
            try:
                record = json.loads(line)
            except ValueError:
                break
            if not line.endswith(b"\n"):
                break
            done[record["id"]] = record["teacher_answer"]
            good_bytes += len(line)
    if good_bytes != path.stat().st_size:
        with open(path, "r+b") as journal:
            journal.truncate(good_bytes)
    return done


def load_teacher_answers(run_dir, dataset):
    """``dataset`` with a ``teacher_answer`` column from the run's journal; `MissingAnswers`
    when a row has none yet."""
    answers = _finished(Path(run_dir) / ANSWERS_FILE)
    missing = [row_id for row_id in dataset["id"] if row_id not in answers]
    if missing:
        raise MissingAnswers(f"{len(missing)} rows have no teacher answer yet (first: {missing[0]}); run the generation")
    return dataset.add_column("teacher_answer", [answers[row_id] for row_id in dataset["id"]])
