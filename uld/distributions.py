"""Real next-token distributions at the answer positions, as ULD pairs them.

`compared_distributions` runs a student and a teacher over the same answers (each on its
own prompt and tokenizer, as `uld.trainer.build_pairs` writes them) and returns the
probability rows that `uld.loss.ULDLoss` compares, pair by pair under its positional
alignment, with the answer token each row predicts on either side. `mass_profile` says
how a row's mass is spread: entropy, top-1 mass, and the mass beyond the top k, the part a
top-k teacher cache keeps only as a sum.

    rows = compared_distributions(student, teacher, pairs, student_tokenizer, teacher_tokenizer)
    uld_distance(rows.student, rows.teacher)        # [N] one distance per compared pair
    mass_profile(rows.teacher, ks=(16, 256))        # {"entropy": [N], "top-1": [N], ...}
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from uld.loss import ULDLoss
from uld.teacher_cache import answer_logits
from uld.tokenizers import token_texts

__all__ = ["ComparedRows", "compared_distributions", "mass_profile"]


class ComparedRows(NamedTuple):
    """The ``N`` position pairs ULD compares over a set of answers.

    ``student`` ``[N, Vs]`` and ``teacher`` ``[N, Vt]`` are probabilities (float32);
    ``example`` ``[N]`` the pair each row belongs to, ``position`` ``[N]`` its rank in that
    answer; ``student_target`` / ``teacher_target`` ``[N]`` the id of the answer token each
    row predicts, ``student_token`` / ``teacher_token`` its text (a leading space shown as a
    space).
    """

    student: Tensor
    teacher: Tensor
    example: Tensor
    position: Tensor
    student_target: Tensor
    teacher_target: Tensor
    student_token: list[str]
    teacher_token: list[str]


@torch.no_grad()
def compared_distributions(student, teacher, pairs, student_tokenizer, teacher_tokenizer, *,
                           loss: ULDLoss | None = None) -> ComparedRows:
    """The probability rows ``loss`` (default: the paper's `ULDLoss`) compares on ``pairs``.

    Args:
        student, teacher: decoder language models (frozen here).
        pairs: rows with ``student_input_ids``, ``student_labels``, ``teacher_input_ids``,
            ``teacher_labels`` (`uld.trainer.build_pairs` with ``method="uld"``); one row at
            a time, so a 262,144-token teacher vocabulary costs memory only at the answers.
        loss: whose alignment and temperatures to use.

    Example (notebook 05): SmolLM2-135M-Instruct and Gemma 3 270M on 24 gold answers give
    ``rows.student`` ``[72, 49152]`` and ``rows.teacher`` ``[72, 262144]``.
    """
    if any(getattr(model.config, "is_encoder_decoder", False) for model in (student, teacher)):
        raise ValueError("compared_distributions reads decoder models; an encoder-decoder's answers sit elsewhere")
    loss = loss or ULDLoss()
    students, teachers, examples, positions, student_targets, teacher_targets = [], [], [], [], [], []
    for number, pair in enumerate(pairs):
        s_ids, s_labels = (torch.tensor([pair[f"student_{key}"]], device=student.device) for key in ("input_ids", "labels"))
        t_ids, t_labels = (torch.tensor([pair[f"teacher_{key}"]], device=teacher.device) for key in ("input_ids", "labels"))
        s_logits, s_labels = answer_logits(student, s_ids, torch.ones_like(s_ids), s_labels)
        t_logits, t_labels = answer_logits(teacher, t_ids, torch.ones_like(t_ids), t_labels)
        s_logits, s_labels, t_logits, t_labels = (t.cpu() for t in (s_logits, s_labels, t_logits, t_labels))
        aligned = loss.alignment(s_labels, t_labels)[0]
        if not aligned:
            continue
        s_at, t_at = (torch.tensor(side) for side in zip(*aligned))
        students.append(torch.softmax(s_logits[0, s_at].float() / loss.student_temperature, -1))
        teachers.append(torch.softmax(t_logits[0, t_at].float() / loss.teacher_temperature, -1))
        examples.append(torch.full((len(aligned),), number))
        positions.append(torch.arange(len(aligned)))
        student_targets.append(s_labels[0, s_at + 1])  # a decoder's position t predicts label t + 1
        teacher_targets.append(t_labels[0, t_at + 1])
    if not students:
        raise ValueError("no answer position is compared in these pairs (empty answers?)")
    student_target, teacher_target = torch.cat(student_targets), torch.cat(teacher_targets)
    return ComparedRows(torch.cat(students), torch.cat(teachers), torch.cat(examples), torch.cat(positions),
                        student_target, teacher_target, token_texts(student_tokenizer, student_target.tolist()),
                        token_texts(teacher_tokenizer, teacher_target.tolist()))


def mass_profile(probs: Tensor, ks=(16, 256, 4096)) -> dict[str, Tensor]:
    """How each row's mass is spread: ``entropy`` (nats), ``top-1`` mass and, for each k,
    ``beyond top k``: the mass outside the k largest probabilities. Rows ``[N, V]`` -> ``[N]``.

    >>> profile = mass_profile(torch.tensor([[0.5, 0.25, 0.125, 0.125]]), ks=(1, 2))
    >>> {name: round(float(value), 4) for name, value in profile.items()}
    {'entropy': 1.213, 'top-1': 0.5, 'beyond top 1': 0.5, 'beyond top 2': 0.25}
    """
    ordered = probs.double().sort(dim=-1, descending=True).values
    profile = {"entropy": -(ordered * ordered.clamp_min(1e-300).log()).sum(-1), "top-1": ordered[:, 0]}
    for k in ks:
        profile[f"beyond top {k}"] = ordered[:, k:].sum(-1)  # summed, not 1 - head: tiny tails stay precise
    return profile
