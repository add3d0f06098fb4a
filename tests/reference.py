"""A plain loop implementation of the ULD loss semantics, written for the tests only.

It follows the authors' training code step by step (per sample: find the answer, softmax
its rows, cut to the shorter answer, sort, zero-pad the vocabulary, L1, mean) and leaves
every gradient to autograd, so `uld.ULDLoss` can be checked against it in values and in
gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def answer_probabilities(logits, labels, *, is_encoder_decoder, temperature, skip_eos, ignore_index):
    """Softmaxed logit rows that predict one sample's answer: ``[size, V]``."""
    predicted = [t for t, label in enumerate(labels.tolist()) if label != ignore_index]
    if not is_encoder_decoder:
        predicted = [t for t in predicted if t >= 1]  # a decoder never predicts label 0
    size = len(predicted) - (1 if skip_eos and predicted else 0)
    if size <= 0:
        return logits[:0].softmax(-1)
    first_logit = predicted[0] if is_encoder_decoder else predicted[0] - 1
    rows = logits[first_logit : first_logit + size].to(torch.promote_types(logits.dtype, torch.float32))
    return torch.softmax(rows / temperature, dim=-1)


def reference_loss(
    student_logits,
    teacher_logits,
    student_labels,
    teacher_labels,
    *,
    distillation_weight=1.0,
    crossentropy_weight=1.0,
    student_temperature=1.0,
    teacher_temperature=1.0,
    skip_student_eos=False,
    skip_teacher_eos=False,
    ignore_index=-100,
    student_is_encoder_decoder=False,
    teacher_is_encoder_decoder=False,
):
    """Returns ``(loss, crossentropy, distillation)``, weighted as `ULDLoss` weights them."""
    vocab = max(student_logits.shape[-1], teacher_logits.shape[-1])
    per_sample = []
    for b in range(student_logits.shape[0]):
        p = answer_probabilities(
            student_logits[b],
            student_labels[b],
            is_encoder_decoder=student_is_encoder_decoder,
            temperature=student_temperature,
            skip_eos=skip_student_eos,
            ignore_index=ignore_index,
        )
        q = answer_probabilities(
            teacher_logits[b],
            teacher_labels[b],
            is_encoder_decoder=teacher_is_encoder_decoder,
            temperature=teacher_temperature,
            skip_eos=skip_teacher_eos,
            ignore_index=ignore_index,
        )
        n = min(p.shape[0], q.shape[0])
        if n == 0:
            continue
        p_sorted = F.pad(p[:n].sort(-1, descending=True).values, (0, vocab - p.shape[-1]))
        q_sorted = F.pad(q[:n].sort(-1, descending=True).values, (0, vocab - q.shape[-1]))
        per_sample.append((p_sorted - q_sorted).abs().sum(-1).mean())
    if per_sample:
        distillation = torch.stack(per_sample).mean()
    else:
        distillation = student_logits.sum() * 0.0
    if student_is_encoder_decoder:
        logits, labels = student_logits, student_labels
    else:
        logits, labels = student_logits[:, :-1], student_labels[:, 1:]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    crossentropy = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1).long(), ignore_index=ignore_index
    )
    crossentropy = crossentropy_weight * crossentropy
    distillation = distillation_weight * distillation
    return crossentropy + distillation, crossentropy, distillation
