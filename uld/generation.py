"""Greedy answers: the first line of what a model writes after each prompt.

Shared by the teacher (answering training questions) and the student (answering
evaluation questions), decoder or encoder-decoder alike. `answer_questions` is how every
model in the kit answers a task's questions (evaluation, the held-out score, the task
teachers' validation); `uld.teacher_answers` writes the teacher's training answers with the
same prompts, one journaled batch at a time.
"""

from __future__ import annotations

import torch

from uld.prompts import first_line

__all__ = ["greedy_first_lines", "answer_questions", "PROMPTS"]


def greedy_first_lines(model, tokenizer, prompts: list[str], *, max_new_tokens: int, add_special_tokens: bool = True,
                       max_length: int | None = None) -> list[str]:
    """Greedy continuations of ``prompts`` (one batch), each cut at its first line.

    Prompts are left-padded so that each ends where generation starts; a decoder's output
    is read after the prompt. ``max_length`` truncates the prompts. The model's train/eval
    mode and the tokenizer's padding side are restored afterwards.
    """
    was_training, padding_side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    try:
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens,
                            truncation=max_length is not None, max_length=max_length)
        encoded = {key: value.to(model.device) for key, value in encoded.items()}
        with torch.no_grad():
            output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    if not model.config.is_encoder_decoder:
        output = output[:, encoded["input_ids"].shape[1]:]
    return [first_line(text) for text in tokenizer.batch_decode(output, skip_special_tokens=True)]


PROMPTS = ("student", "teacher")


def answer_questions(model, tokenizer, rows, *, kind: str, prompt: str = "student", shots: int = 0, shot_pool=None,
                     seed: int = 0, batch_size: int = 16, max_new_tokens: int = 48, max_length: int = 512) -> list[str]:
    """Greedy first-line answers to ``rows`` (columns ``id, context, question``), one per row.

    ``prompt="student"``: the plain zero-shot prompt (`uld.prompts.student_prompt`);
    ``prompt="teacher"``: the teacher's prompt with ``shots`` examples from ``shot_pool``,
    drawn per row exactly as when the teacher answers training questions.
    """
    from uld.prompts import shots_for_row, student_prompt, teacher_prompt

    if prompt not in PROMPTS:
        raise ValueError(f"prompt must be one of {', '.join(PROMPTS)}, got {prompt!r}")
    pool = list(shot_pool) if shots else []

    def render(index: int, row: dict) -> str:
        if prompt == "student":
            return student_prompt(kind, row["context"], row["question"])
        chosen = shots_for_row(pool, shots, seed, index, row["id"]) if shots else []
        return teacher_prompt(tokenizer, kind, row["context"], row["question"], chosen)

    answers = []
    for start in range(0, len(rows), batch_size):
        chunk = rows.select(range(start, min(start + batch_size, len(rows))))
        prompts = [render(start + offset, row) for offset, row in enumerate(chunk)]
        answers += greedy_first_lines(model, tokenizer, prompts, max_new_tokens=max_new_tokens, max_length=max_length,
                                      add_special_tokens=prompt == "student" or not tokenizer.chat_template)
    return answers
