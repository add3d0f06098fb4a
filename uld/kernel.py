"""The memory-lean autograd kernel behind `uld.ULDLoss`: cross-entropy and per-row ULD
distances straight from the full logits, a block of rows at a time.

The gradient of the sorted L1 with respect to each probability is a sign known in the
forward pass, so only those signs are kept (int8, in token order); the backward pass
recomputes each softmax block and writes ``d/dz = p (g - <g, p>) / T``. `RowPlan` says which
rows of the flattened ``[B*T, V]`` logits to read (`flat`, `flat_rows`); `ULDRows.apply`
returns ``(crossentropy [], distances [N], bounds [N])``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from uld.distance import compute_dtype, top_k_and_tail_mass
from uld.sorting import sort_descending
from uld.tail_bound import refined_bound

__all__ = ["RowPlan", "ULDRows", "flat", "flat_rows", "crossentropy_of"]

# Rows sorted at once in the exact mode; bounds the working memory to a few such blocks.
_CHUNK_ELEMENTS = 1 << 22


class RowPlan(NamedTuple):
    """Which rows of the flattened ``[B*T, V]`` logits the loss reads, and how."""

    student_rows: Tensor  # [N] aligned answer rows, paired one to one with teacher_rows
    teacher_rows: Tensor  # [N]
    crossentropy_rows: Tensor  # [M] student rows with a non-ignored label
    crossentropy_targets: Tensor  # [M]
    student_temperature: float
    teacher_temperature: float
    top_k: int | None
    teacher_tail: Tensor | None = None  # [rows of the teacher source]: it holds sorted heads, not logits


class ULDRows(torch.autograd.Function):
    """Cross-entropy and per-row ULD distances straight from the full logits.

    Forward, a block of rows at a time: gather, softmax, sort (or top-k), compare. The
    gradient of the L1 term with respect to each probability is a sign known right there,
    so only those signs are kept, as int8 in the original token order. Backward recomputes
    the softmax block by block and writes one gradient per side, ``d/dz = p (g - <g, p>) / T``
    for the sign vector ``g``: no sort indices, padding or per-row buffers survive the
    forward pass, and no intermediate full-size gradient is allocated.

    Returns ``(crossentropy [], distances [N], bounds [N])``; bounds carry no gradient.
    """

    @staticmethod
    def forward(ctx, student_logits: Tensor, teacher_logits: Tensor, plan: RowPlan):
        needs_student, needs_teacher = ctx.needs_input_grad[:2]
        dtype = compute_dtype(student_logits, teacher_logits)
        student = flat(student_logits)
        teacher = flat(teacher_logits)
        crossentropy = crossentropy_of(student, plan.crossentropy_rows, plan.crossentropy_targets, dtype)
        rows = plan.student_rows.numel()
        distances = torch.zeros(rows, dtype=dtype, device=student.device)
        bounds = torch.zeros_like(distances)
        student_signs = _sign_buffer(rows, student) if needs_student else None
        teacher_signs = _sign_buffer(rows, teacher) if needs_teacher else None
        for block in _blocks(rows, max(student.shape[-1], teacher.shape[-1])):
            p = _softmax_rows("student", student, plan.student_rows[block], plan.student_temperature, dtype)
            if plan.teacher_tail is None:
                q, q_tail = _softmax_rows("teacher", teacher, plan.teacher_rows[block], plan.teacher_temperature, dtype), None
            else:
                q, q_tail = teacher[plan.teacher_rows[block]].to(dtype), plan.teacher_tail[plan.teacher_rows[block]].to(dtype)
            distances[block], bounds[block], p_signs, q_signs = _compare(
                p, q, plan.top_k, needs_student, needs_teacher, q_tail
            )
            if needs_student:
                student_signs[block] = p_signs
            if needs_teacher:
                teacher_signs[block] = q_signs
        ctx.save_for_backward(student_logits, teacher_logits, student_signs, teacher_signs)
        ctx.plan, ctx.dtype = plan, dtype
        ctx.mark_non_differentiable(bounds)
        return crossentropy, distances, bounds

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_crossentropy, grad_distances, _grad_bounds):
        student_logits, teacher_logits, student_signs, teacher_signs = ctx.saved_tensors
        plan, dtype = ctx.plan, ctx.dtype
        student_grad = teacher_grad = None
        if student_signs is not None:
            student_grad = torch.zeros_like(student_logits, memory_format=torch.contiguous_format)
            flat_grad, student = flat(student_grad), flat(student_logits)
            _add_crossentropy_grad(flat_grad, student, plan, grad_crossentropy, dtype)
            _add_distance_grad(
                flat_grad, student, plan.student_rows, student_signs, plan.student_temperature, grad_distances, dtype
            )
        if teacher_signs is not None:
            teacher_grad = torch.zeros_like(teacher_logits, memory_format=torch.contiguous_format)
            _add_distance_grad(
                flat(teacher_grad), flat(teacher_logits), plan.teacher_rows, teacher_signs,
                plan.teacher_temperature, grad_distances, dtype,
            )
        return student_grad, teacher_grad, None


def _compare(p: Tensor, q: Tensor, top_k: int | None, needs_p_signs: bool, needs_q_signs: bool,
             q_sorted_tail: Tensor | None = None):
    """Distances, bounds and (int8, original token order) gradient signs for a block of rows.

    With ``q_sorted_tail`` given, ``q`` is already a sorted head with that tail mass
    beyond it (a cached teacher; it gets no signs).
    """
    if top_k is None:
        p_sorted, p_order = sort_descending(p, with_order=needs_p_signs)
        q_sorted, q_order = sort_descending(q, with_order=needs_q_signs)
        distances, p_sign, q_sign = _sorted_l1_with_signs(p_sorted, q_sorted)
        bounds = torch.zeros_like(distances)
        p_tail_sign = q_tail_sign = None
    else:
        p_sorted, p_tail, p_order = top_k_and_tail_mass(p, top_k)
        if q_sorted_tail is None:
            q_sorted, q_tail, q_order = top_k_and_tail_mass(q, top_k)
            bounds = refined_bound(p, q, p_sorted, q_sorted, p_order, q_order, p_tail, q_tail)
        else:  # a cached teacher's tail is only a mass: the simple bound
            q_sorted, q_tail = q[:, :top_k], q_sorted_tail + q[:, top_k:].sum(-1)
            bounds = 2 * torch.minimum(p_tail, q_tail)
        head, p_sign, q_sign = _sorted_l1_with_signs(p_sorted, q_sorted)
        distances = head + (p_tail - q_tail).abs()
        p_tail_sign = (p_tail - q_tail).sign()
        q_tail_sign = -p_tail_sign
    p_signs = _unsorted_signs(p, p_sign, p_order, p_tail_sign) if needs_p_signs else None
    q_signs = _unsorted_signs(q, q_sign, q_order, q_tail_sign) if needs_q_signs else None
    return distances, bounds, p_signs, q_signs


def _sorted_l1_with_signs(p: Tensor, q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sorted L1 of ``p [n, Vs]`` and ``q [n, Vt]`` (both sorted, >= 0) and its gradients.

    The gradient of ``|a - b|`` is ``sign(a - b)`` (0 at a tie, as autograd's ``abs``);
    on the part of the longer vector facing zero padding it is ``sign(value)``.
    """
    shared = min(p.shape[-1], q.shape[-1])
    difference = p[:, :shared] - q[:, :shared]
    distances = difference.abs().sum(-1) + p[:, shared:].sum(-1) + q[:, shared:].sum(-1)
    head_sign = difference.sign()
    p_sign = torch.cat([head_sign, p[:, shared:].sign()], dim=-1)
    q_sign = torch.cat([-head_sign, q[:, shared:].sign()], dim=-1)
    return distances, p_sign, q_sign


def _unsorted_signs(probs: Tensor, sorted_sign: Tensor, order: Tensor, tail_sign: Tensor | None) -> Tensor:
    """Signs put back in token order; tokens outside ``order`` (the top-k tail) get ``tail_sign``."""
    if tail_sign is None:
        signs = torch.empty(probs.shape, dtype=torch.int8, device=probs.device)
    else:
        signs = tail_sign.to(torch.int8).unsqueeze(-1).expand(probs.shape).contiguous()
    return signs.scatter_(-1, order, sorted_sign.to(torch.int8))


def crossentropy_of(logits: Tensor, rows: Tensor, targets: Tensor, dtype: torch.dtype) -> Tensor:
    """Mean cross-entropy of ``logits[rows]`` against ``targets``; 0 without rows."""
    total = torch.zeros((), dtype=dtype, device=logits.device)
    for block in _blocks(rows.numel(), logits.shape[-1]):
        z = logits[rows[block]].to(dtype)
        total += (z.logsumexp(-1) - z.gather(-1, targets[block].unsqueeze(-1)).squeeze(-1)).sum()
    return total / max(rows.numel(), 1)


def _add_crossentropy_grad(grad: Tensor, logits: Tensor, plan: RowPlan, scale: Tensor, dtype: torch.dtype) -> None:
    rows, targets = plan.crossentropy_rows, plan.crossentropy_targets
    scale = scale / max(rows.numel(), 1)
    for block in _blocks(rows.numel(), logits.shape[-1]):
        probs = torch.softmax(logits[rows[block]].to(dtype), -1)
        probs.scatter_add_(-1, targets[block].unsqueeze(-1), -torch.ones_like(probs[:, :1]))
        grad.index_add_(0, rows[block], (scale * probs).to(grad.dtype))


def _add_distance_grad(grad, logits, rows, signs, temperature, grad_distances, dtype) -> None:
    for block in _blocks(rows.numel(), logits.shape[-1]):
        probs = torch.softmax(logits[rows[block]].to(dtype) / temperature, -1)
        sign = signs[block].to(dtype)
        sign -= (sign * probs).sum(-1, keepdim=True)
        sign *= probs * (grad_distances[block].unsqueeze(-1) / temperature)
        grad.index_add_(0, rows[block], sign.to(grad.dtype))


def _softmax_rows(side: str, logits: Tensor, rows: Tensor, temperature: float, dtype: torch.dtype) -> Tensor:
    z = logits[rows].to(dtype)
    if torch.isnan(z).any() or torch.isposinf(z).any():
        raise ValueError(f"{side} logits contain NaN or +inf at answer positions")
    return torch.softmax(z / temperature, -1)


def _sign_buffer(rows: int, logits: Tensor) -> Tensor:
    return torch.empty((rows, logits.shape[-1]), dtype=torch.int8, device=logits.device)


def _blocks(rows: int, width: int):
    """Slices of at most ``_CHUNK_ELEMENTS`` elements over ``rows`` rows of ``width``."""
    step = max(1, _CHUNK_ELEMENTS // max(width, 1))
    return [slice(first, first + step) for first in range(0, rows, step)]


def flat(logits: Tensor) -> Tensor:
    """``[B, T, V]`` -> ``[B*T, V]`` (a view for contiguous logits)."""
    return logits.reshape(-1, logits.shape[-1])


def flat_rows(logits: Tensor, sample: Tensor, position: Tensor) -> Tensor:
    """Row indices into ``flat(logits)`` for (sample, position) pairs."""
    return sample * logits.shape[1] + position

