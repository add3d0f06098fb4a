"""Random batches shaped like real ones: prompt, answer, EOS and padding at varied lengths."""

from __future__ import annotations

import torch

from uld.synthetic import lm_like_logits


def random_labels(generator, batch, length, vocab, *, is_encoder_decoder, ignore_index=-100, left_pad=False):
    """``[batch, length]`` labels: ``ignore_index`` on prompt and padding, token ids on answers.

    Answers have 0 to ``length - 1`` tokens (a decoder's prompt has at least one position);
    an encoder-decoder's labels start with the answer.
    """
    labels = torch.full((batch, length), ignore_index, dtype=torch.long)
    for b in range(batch):
        prompt = 0 if is_encoder_decoder else int(torch.randint(1, length, (1,), generator=generator))
        answer = int(torch.randint(0, length - prompt + 1, (1,), generator=generator))
        tokens = torch.randint(0, vocab, (answer,), generator=generator)
        if left_pad and not is_encoder_decoder:
            labels[b, length - answer :] = tokens
        else:
            labels[b, prompt : prompt + answer] = tokens
    return labels


def random_case(seed, *, dtype=torch.float64, max_vocab=40, max_batch=4):
    """A random loss call: logits, labels and options, as keyword arguments."""
    g = torch.Generator().manual_seed(seed)

    def draw(low, high):
        return int(torch.randint(low, high + 1, (1,), generator=g))

    batch = draw(1, max_batch)
    student_is_encoder_decoder = draw(0, 3) == 0
    teacher_is_encoder_decoder = draw(0, 5) == 0
    student_vocab, teacher_vocab = draw(2, max_vocab), draw(2, max_vocab)
    student_length, teacher_length = draw(2, 12), draw(2, 12)
    scale = [0.5, 2.0, 6.0][draw(0, 2)]
    student_logits = scale * torch.randn(batch, student_length, student_vocab, generator=g, dtype=dtype)
    teacher_logits = scale * torch.randn(batch, teacher_length, teacher_vocab, generator=g, dtype=dtype)
    left_pad = draw(0, 1) == 1
    student_labels = random_labels(
        g, batch, student_length, student_vocab, is_encoder_decoder=student_is_encoder_decoder, left_pad=left_pad
    )
    teacher_labels = random_labels(
        g, batch, teacher_length, teacher_vocab, is_encoder_decoder=teacher_is_encoder_decoder, left_pad=left_pad
    )
    options = dict(
        distillation_weight=[0.5, 1.0, 1.5][draw(0, 2)],
        crossentropy_weight=[0.0, 1.0, 0.5][draw(0, 2)],
        student_temperature=[0.5, 1.0, 2.0][draw(0, 2)],
        teacher_temperature=[0.7, 1.0, 3.0][draw(0, 2)],
        skip_student_eos=draw(0, 1) == 1,
        skip_teacher_eos=draw(0, 1) == 1,
    )
    inputs = dict(
        student_logits=student_logits,
        teacher_logits=teacher_logits,
        student_labels=student_labels,
        teacher_labels=teacher_labels,
        student_is_encoder_decoder=student_is_encoder_decoder,
        teacher_is_encoder_decoder=teacher_is_encoder_decoder,
    )
    return inputs, options


def zipf_logits(generator, rows, vocab, exponent=1.1, noise=1.0):
    """``[rows, vocab]`` LM-shaped logits with one Zipf exponent (see `uld.synthetic`)."""
    return lm_like_logits(rows, vocab, (exponent, exponent), noise, generator)
