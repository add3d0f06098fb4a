"""Teacher answers: the paper's training data, generated once and resumable.

The teacher answers each training question with its few-shot prompt (shots drawn from the
training split, never the question itself), greedily, up to ``max_new_tokens``; the
first line of its answer is kept. Answers are appended to ``<run>/teacher_answers.jsonl``
one batch at a time and flushed to disk, so an interrupted run continues where it
stopped: finished rows are never generated again, and a half-written last line is
dropped and redone.

    answers = generate_teacher_answers(teacher, tokenizer, load_task("extractive_qa", "train"),
                                       kind="extractive_qa", run_dir="runs/x", shots=2)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from uld.prompts import draw_shots, first_line, teacher_prompt

__all__ = ["generate_teacher_answers", "load_teacher_answers", "ANSWERS_FILE"]

ANSWERS_FILE = "teacher_answers.jsonl"


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
    import torch
    from tqdm.auto import tqdm

    path = Path(run_dir) / ANSWERS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    done = _finished(path)
    pool = list(shot_pool if shot_pool is not None else dataset) if shots else []
    todo = [(index, row) for index, row in enumerate(dataset) if row["id"] not in done]
    was_training, padding_side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # so every prompt ends where generation starts
    try:
        with open(path, "a", encoding="utf-8") as journal, torch.no_grad():
            bar = tqdm(total=len(dataset), initial=len(dataset) - len(todo), desc="teacher answers", disable=not progress)
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                prompts = [teacher_prompt(tokenizer, kind, row["context"], row["question"],
                                          draw_shots(pool, shots, seed=seed * 1_000_003 + index, exclude_id=row["id"]))
                           for index, row in batch]
                for (_, row), answer in zip(batch, _generate(model, tokenizer, prompts, max_new_tokens)):
                    journal.write(json.dumps({"id": row["id"], "teacher_answer": answer}, ensure_ascii=False) + "\n")
                journal.flush()
                os.fsync(journal.fileno())
                bar.update(len(batch))
            bar.close()
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return load_teacher_answers(run_dir, dataset)


def _generate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=not tokenizer.chat_template)
    encoded = {key: value.to(model.device) for key, value in encoded.items()}
    output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if not model.config.is_encoder_decoder:
        output = output[:, encoded["input_ids"].shape[1]:]
    return [first_line(text) for text in tokenizer.batch_decode(output, skip_special_tokens=True)]


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
    """``dataset`` with a ``teacher_answer`` column from the run's journal (all rows must be done)."""
    answers = _finished(Path(run_dir) / ANSWERS_FILE)
    missing = [row_id for row_id in dataset["id"] if row_id not in answers]
    if missing:
        raise ValueError(f"{len(missing)} rows have no teacher answer yet (first: {missing[0]}); run the generation")
    return dataset.add_column("teacher_answer", [answers[row_id] for row_id in dataset["id"]])
