"""Greedy answers: the first line of what a model writes after each prompt.

Shared by the teacher (answering training questions) and the student (answering
evaluation questions), decoder or encoder-decoder alike.
"""

from __future__ import annotations

import torch

from uld.prompts import first_line

__all__ = ["greedy_first_lines"]


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
