"""The Universal Logit Distillation loss: the closed form and the sequence loss.

Two next-token distributions over *different* vocabularies cannot be compared token by
token, so ULD compares their shapes: sort each in decreasing order, pad the shorter one
with zeros, and take the L1 distance,

    uld_distance(p, q) = sum_i | sort_desc(p)_i - sort_desc(q)_i |.

Under the paper's assumptions (uniform support, uniform cost, zero padding) this is the
exact Wasserstein-1 distance the paper starts from; `uld.ot` checks that claim against
POT's exact solver.

`ULDLoss` applies it along answers, with the alignment of the authors' training code:
each side's answer starts at its first non-ignored label, the two answers are compared
position by position from there and cut to the shorter one.

Worked example (the head differs by 0.3 in two places; the tail adds the 0.1 that only
the longer vocabulary has):

>>> import torch
>>> uld_distance(torch.tensor([0.1, 0.6, 0.3]), torch.tensor([0.2, 0.8]))
tensor(0.4000)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["uld_distance", "ULDLoss", "ULDOutput"]

# Rows sorted at once in the exact mode; bounds the working memory to a few such blocks.
_CHUNK_ELEMENTS = 1 << 22


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype the loss computes in: at least float32, float64 when any input is.

    >>> compute_dtype(torch.zeros(1, dtype=torch.bfloat16))
    torch.float32
    """
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def uld_distance(p: Tensor, q: Tensor) -> Tensor:
    """Sorted L1 distance between probability vectors over vocabularies of any sizes.

    Args:
        p: ``[..., Vs]`` probabilities (rows need not be normalised; any float dtype).
        q: ``[..., Vt]`` probabilities; leading dimensions broadcast against ``p``'s.

    Returns:
        ``[...]``: ``sum_i |sort_desc(p)_i - sort_desc(q)_i|``, the shorter vector
        treated as zero-padded to the longer one's size. Computed in float32 at least
        (float64 stays float64); differentiable in both arguments.

    The padding is never built: past the shorter vocabulary the sum is the absolute mass
    left in the longer vector.

    >>> uld_distance(torch.tensor([[1.0, 0.0], [0.5, 0.5]]), torch.tensor([0.5, 0.25, 0.25]))
    tensor([1.0000, 0.5000])
    """
    _check_probability_tensor("p", p)
    _check_probability_tensor("q", q)
    dtype = compute_dtype(p, q)
    p_sorted = p.to(dtype).sort(dim=-1, descending=True).values
    q_sorted = q.to(dtype).sort(dim=-1, descending=True).values
    shared = min(p.shape[-1], q.shape[-1])
    head = (p_sorted[..., :shared] - q_sorted[..., :shared]).abs().sum(-1)
    tail = p_sorted[..., shared:].abs().sum(-1) + q_sorted[..., shared:].abs().sum(-1)
    return head + tail


class ULDOutput(NamedTuple):
    """What `ULDLoss` returns; every field is a scalar tensor, already weighted.

    ``loss = crossentropy + distillation``. ``distillation_error_bound`` is a certified
    bound on ``|distillation - exact distillation|`` (zero in the exact mode).
    """

    loss: Tensor
    crossentropy: Tensor
    distillation: Tensor
    distillation_error_bound: Tensor


class AnswerSpans(NamedTuple):
    """Where each row's answer sits, in logit positions: ``[B]`` starts and sizes."""

    start: Tensor
    size: Tensor


class ULDLoss(nn.Module):
    """Cross-entropy on the student plus lambda times ULD against the teacher.

    Args:
        distillation_weight: lambda, the weight of the ULD term (the paper uses 1.5).
        crossentropy_weight: weight of the student's cross-entropy.
        student_temperature, teacher_temperature: softmax temperatures (> 0).
        skip_student_eos, skip_teacher_eos: leave that side's last answer token (its EOS)
            out of the distillation term; the cross-entropy keeps it.
        ignore_index: the label of prompt and padding positions.
        top_k: ``None`` for the exact loss; ``k >= 1`` compares only each side's ``k``
            largest probabilities exactly and the rest through their total mass, which is
            fast on large vocabularies and reports a certified error bound.

    Call: ``loss_fn(student_logits [B, Ts, Vs], teacher_logits [B, Tt, Vt],
    student_labels [B, Ts], teacher_labels [B, Tt], student_is_encoder_decoder=False,
    teacher_is_encoder_decoder=False) -> ULDOutput``.

    Labels are input ids with the prompt and padding at ``ignore_index``. A decoder's
    logits at position ``t`` predict label ``t + 1`` (causal shift; its label 0 is never
    predicted); an encoder-decoder's decoder position ``t`` predicts label ``t``. A side's
    answer starts at its first predicted non-ignored label and has as many positions as
    non-ignored predicted labels, one fewer when its EOS is skipped.

    Distillation, per sample: the two answers are aligned at their first token and cut to
    the shorter one; the mean of `uld_distance` over the aligned positions; then the mean
    over samples with at least one aligned position (zero, still back-propagating, when
    none has). Cross-entropy: the student's mean over all its predicted non-ignored
    labels, EOS included.

    >>> loss_fn = ULDLoss(distillation_weight=1.5)
    >>> student = torch.zeros(1, 4, 3)            # uniform over 3 tokens
    >>> teacher = torch.zeros(1, 3, 2)            # uniform over 2 tokens
    >>> out = loss_fn(student, teacher, torch.tensor([[-100, -100, 1, 2]]),
    ...               torch.tensor([[-100, 0, 1]]))
    >>> round(out.distillation.item(), 4)         # 1.5 * (|1/3-1/2| * 2 + 1/3)
    1.0
    """

    def __init__(
        self,
        distillation_weight: float = 1.0,
        crossentropy_weight: float = 1.0,
        student_temperature: float = 1.0,
        teacher_temperature: float = 1.0,
        skip_student_eos: bool = False,
        skip_teacher_eos: bool = False,
        ignore_index: int = -100,
        top_k: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("student_temperature", student_temperature),
            ("teacher_temperature", teacher_temperature),
        ):
            if not float(value) > 0 or value == float("inf"):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        for name, value in (
            ("distillation_weight", distillation_weight),
            ("crossentropy_weight", crossentropy_weight),
        ):
            if not abs(float(value)) < float("inf"):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be None or an integer >= 1, got {top_k!r}")
        self.distillation_weight = float(distillation_weight)
        self.crossentropy_weight = float(crossentropy_weight)
        self.student_temperature = float(student_temperature)
        self.teacher_temperature = float(teacher_temperature)
        self.skip_student_eos = bool(skip_student_eos)
        self.skip_teacher_eos = bool(skip_teacher_eos)
        self.ignore_index = int(ignore_index)
        self.top_k = top_k

    def extra_repr(self) -> str:
        return (
            f"distillation_weight={self.distillation_weight}, "
            f"crossentropy_weight={self.crossentropy_weight}, "
            f"student_temperature={self.student_temperature}, "
            f"teacher_temperature={self.teacher_temperature}, "
            f"skip_student_eos={self.skip_student_eos}, skip_teacher_eos={self.skip_teacher_eos}, "
            f"ignore_index={self.ignore_index}, top_k={self.top_k}"
        )

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        student_labels: Tensor,
        teacher_labels: Tensor,
        student_is_encoder_decoder: bool = False,
        teacher_is_encoder_decoder: bool = False,
    ) -> ULDOutput:
        _check_batch(student_logits, teacher_logits, student_labels, teacher_labels)
        student_logits, student_labels = _predicted_view(
            student_logits, student_labels, student_is_encoder_decoder
        )
        teacher_logits, teacher_labels = _predicted_view(
            teacher_logits, teacher_labels, teacher_is_encoder_decoder
        )
        crossentropy = self.crossentropy_weight * self._crossentropy(student_logits, student_labels)
        distillation, bound = self._distillation(
            student_logits, teacher_logits, student_labels, teacher_labels
        )
        distillation = self.distillation_weight * distillation
        bound = abs(self.distillation_weight) * bound
        return ULDOutput(crossentropy + distillation, crossentropy, distillation, bound)

    def answer_spans(self, labels: Tensor, skip_eos: bool) -> AnswerSpans:
        """Answer start and size per row of already shifted ``labels [B, T]``.

        >>> ULDLoss().answer_spans(torch.tensor([[-100, 5, 6, 2, -100]]), skip_eos=True)
        AnswerSpans(start=tensor([1]), size=tensor([2]))
        """
        answer = labels != self.ignore_index
        size = answer.sum(dim=1)
        start = answer.to(torch.uint8).argmax(dim=1)  # first answer token; 0 when none
        if skip_eos:
            size = (size - 1).clamp_min(0)
        return AnswerSpans(start, size)

    def _crossentropy(self, logits: Tensor, labels: Tensor) -> Tensor:
        answer = labels != self.ignore_index
        targets = labels[answer]
        vocab = logits.shape[-1]
        if targets.numel() and (targets.min() < 0 or targets.max() >= vocab):
            raise ValueError(
                f"student labels must be token ids in [0, {vocab}) or ignore_index "
                f"({self.ignore_index}); got values from {targets.min().item()} to "
                f"{targets.max().item()}"
            )
        rows = logits[answer]
        if rows.shape[0] == 0:
            return rows.sum().to(compute_dtype(rows))
        rows = rows.to(compute_dtype(rows))
        return F.cross_entropy(rows, targets.long(), reduction="sum") / rows.shape[0]

    def _distillation(
        self, student_logits: Tensor, teacher_logits: Tensor, student_labels: Tensor, teacher_labels: Tensor
    ) -> tuple[Tensor, Tensor]:
        student = self.answer_spans(student_labels, self.skip_student_eos)
        teacher = self.answer_spans(teacher_labels, self.skip_teacher_eos)
        aligned = torch.minimum(student.size, teacher.size)
        sample, offset = _aligned_positions(aligned)
        student_rows = student_logits[sample, student.start[sample] + offset]
        teacher_rows = teacher_logits[sample, teacher.start[sample] + offset]
        dtype = compute_dtype(student_rows, teacher_rows)
        student_rows, teacher_rows = student_rows.to(dtype), teacher_rows.to(dtype)
        _check_no_nan("student", student_rows)
        _check_no_nan("teacher", teacher_rows)
        if self.top_k is None:
            distances = sorted_softmax_l1(
                student_rows, teacher_rows, self.student_temperature, self.teacher_temperature
            )
            bounds = torch.zeros_like(distances)
        else:
            distances, bounds = top_k_sorted_softmax_l1(
                student_rows,
                teacher_rows,
                self.student_temperature,
                self.teacher_temperature,
                self.top_k,
            )
        return _mean_per_sample_then_batch(distances, sample, aligned), _mean_per_sample_then_batch(
            bounds.detach(), sample, aligned
        )


def sorted_softmax_l1(
    student_logits: Tensor,
    teacher_logits: Tensor,
    student_temperature: float = 1.0,
    teacher_temperature: float = 1.0,
) -> Tensor:
    """Exact ULD distance per row between softmaxed logit rows, memory-lean.

    Args:
        student_logits: ``[N, Vs]``; teacher_logits: ``[N, Vt]`` (same dtype).

    Returns:
        ``[N]``: ``uld_distance(softmax(s / Ts), softmax(t / Tt))`` row by row.

    Same values as composing `uld_distance` with softmax, but the gradient of the L1 term
    is known in the forward pass (``sign`` of the sorted difference), so it is pushed
    through the softmax and un-sorted there, a block of rows at a time: the backward pass
    keeps one ``[N, V]`` gradient per side that needs one, no sort indices, no padding.

    >>> sorted_softmax_l1(torch.zeros(1, 2), torch.tensor([[0.0, -float("inf")]]))
    tensor([1.])
    """
    return _SortedSoftmaxL1.apply(student_logits, teacher_logits, student_temperature, teacher_temperature)


class _SortedSoftmaxL1(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student_logits, teacher_logits, student_temperature, teacher_temperature):
        needs_student, needs_teacher = ctx.needs_input_grad[:2]
        rows = student_logits.shape[0]
        distances = student_logits.new_empty(rows)
        student_grad = torch.empty_like(student_logits) if needs_student else None
        teacher_grad = torch.empty_like(teacher_logits) if needs_teacher else None
        width = max(student_logits.shape[-1], teacher_logits.shape[-1])
        step = max(1, _CHUNK_ELEMENTS // width)
        for first in range(0, rows, step):
            block = slice(first, first + step)
            p, p_order = torch.softmax(student_logits[block] / student_temperature, -1).sort(-1, descending=True)
            q, q_order = torch.softmax(teacher_logits[block] / teacher_temperature, -1).sort(-1, descending=True)
            distances[block], sign_p, sign_q = _sorted_l1_with_signs(p, q)
            if needs_student:
                _unsort_softmax_grad(student_grad[block], sign_p, p, p_order, student_temperature)
            if needs_teacher:
                _unsort_softmax_grad(teacher_grad[block], sign_q, q, q_order, teacher_temperature)
        ctx.save_for_backward(student_grad, teacher_grad)
        return distances

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_distances):
        student_grad, teacher_grad = ctx.saved_tensors
        scale = grad_distances.unsqueeze(-1)
        return (
            None if student_grad is None else scale * student_grad,
            None if teacher_grad is None else scale * teacher_grad,
            None,
            None,
        )


def _sorted_l1_with_signs(p: Tensor, q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sorted L1 of ``p [n, Vs]`` and ``q [n, Vt]`` (both sorted, >= 0) and its gradients.

    The gradient of ``|a - b|`` is ``sign(a - b)`` (0 at a tie, as autograd's ``abs``);
    on the part of the longer vector facing zero padding it is ``sign(value)``.
    """
    shared = min(p.shape[-1], q.shape[-1])
    difference = p[:, :shared] - q[:, :shared]
    distances = difference.abs().sum(-1) + p[:, shared:].sum(-1) + q[:, shared:].sum(-1)
    head_sign = difference.sign()
    sign_p = torch.cat([head_sign, p[:, shared:].sign()], dim=-1)
    sign_q = torch.cat([-head_sign, q[:, shared:].sign()], dim=-1)
    return distances, sign_p, sign_q


def _unsort_softmax_grad(out: Tensor, grad_probs: Tensor, probs: Tensor, order: Tensor, temperature: float) -> None:
    """Write into ``out`` the gradient w.r.t. the logits, given it w.r.t. sorted probs."""
    grad_logits = probs * (grad_probs - (grad_probs * probs).sum(-1, keepdim=True)) / temperature
    out.scatter_(-1, order, grad_logits)


def top_k_sorted_softmax_l1(
    student_logits: Tensor,
    teacher_logits: Tensor,
    student_temperature: float,
    teacher_temperature: float,
    k: int,
) -> tuple[Tensor, Tensor]:
    """Top-k approximation of the ULD distance per row, with a certified error bound.

    Args:
        student_logits: ``[N, Vs]``; teacher_logits: ``[N, Vt]``; k >= 1.

    Returns:
        ``(approximation [N], bound [N])`` with ``0 <= exact - approximation <= bound``.

    With ``p``, ``q`` sorted in decreasing order and zero-padded to a common size, split
    the exact distance at rank ``k``:

        exact  = sum_{i<k} |p_i - q_i| + sum_{i>=k} |p_i - q_i|
        approx = sum_{i<k} |p_i - q_i| + |P - Q|,  P = sum_{i>=k} p_i,  Q = sum_{i>=k} q_i.

    The heads agree, and for the tails the triangle inequality gives
    ``|P - Q| = |sum (p_i - q_i)| <= sum |p_i - q_i| <= sum (p_i + q_i) = P + Q``, so

        0 <= exact - approx <= P + Q - |P - Q| = 2 min(P, Q).

    The bound is therefore ``2 * min(P, Q)``: zero when either side keeps all its mass in
    its top k (in particular when k covers a vocabulary), and small whenever one model is
    confident. Tail masses are summed from the probabilities outside the top k, not as
    ``1 - head``, so they keep their precision.

    >>> approx, bound = top_k_sorted_softmax_l1(torch.zeros(1, 4), torch.zeros(1, 4), 1.0, 1.0, 1)
    >>> approx, bound                   # exact is 0; the bound 2 * min(0.75, 0.75) covers it
    (tensor([0.]), tensor([1.5000]))
    """
    p = torch.softmax(student_logits / student_temperature, -1)
    q = torch.softmax(teacher_logits / teacher_temperature, -1)
    p_head, p_tail = _top_k_and_tail_mass(p, k)
    q_head, q_tail = _top_k_and_tail_mass(q, k)
    head = uld_distance(p_head, q_head)
    return head + (p_tail - q_tail).abs(), 2 * torch.minimum(p_tail, q_tail)


def _top_k_and_tail_mass(probs: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``probs [N, V]`` -> (its ``min(k, V)`` largest values sorted, ``[N]`` mass of the rest)."""
    head, index = probs.topk(min(k, probs.shape[-1]), dim=-1, sorted=True)
    tail = probs.scatter(-1, index, 0.0).sum(-1)
    return head, tail


def _predicted_view(logits: Tensor, labels: Tensor, is_encoder_decoder: bool) -> tuple[Tensor, Tensor]:
    """Pair each logit position with the label it predicts (the causal shift for decoders)."""
    if is_encoder_decoder:
        return logits, labels
    return logits[:, :-1], labels[:, 1:]


def _aligned_positions(aligned: Tensor) -> tuple[Tensor, Tensor]:
    """``aligned [B]`` sizes -> ``(sample [N], offset [N])`` for every aligned position.

    >>> _aligned_positions(torch.tensor([2, 0, 3]))
    (tensor([0, 0, 2, 2, 2]), tensor([0, 1, 0, 1, 2]))
    """
    sample = torch.repeat_interleave(torch.arange(aligned.numel(), device=aligned.device), aligned)
    first = torch.cumsum(aligned, 0) - aligned
    offset = torch.arange(sample.numel(), device=aligned.device) - first[sample]
    return sample, offset


def _mean_per_sample_then_batch(values: Tensor, sample: Tensor, aligned: Tensor) -> Tensor:
    """Mean of ``values [N]`` within each sample, then over samples with ``aligned > 0``."""
    if values.numel() == 0:
        return values.sum()  # zero, and still part of the graph
    per_sample = values.new_zeros(aligned.numel()).index_add(0, sample, values)
    present = aligned > 0
    return (per_sample[present] / aligned[present].to(values.dtype)).mean()


def _check_probability_tensor(name: str, tensor: Tensor) -> None:
    if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {type(tensor).__name__}"
                         + (f" of dtype {tensor.dtype}" if isinstance(tensor, Tensor) else ""))
    if tensor.dim() == 0 or tensor.shape[-1] == 0:
        raise ValueError(f"{name} must have a non-empty last (vocabulary) dimension, got shape {tuple(tensor.shape)}")


def _check_batch(student_logits: Tensor, teacher_logits: Tensor, student_labels: Tensor, teacher_labels: Tensor) -> None:
    for side, logits, labels in (
        ("student", student_logits, student_labels),
        ("teacher", teacher_logits, teacher_labels),
    ):
        if not isinstance(logits, Tensor) or logits.dim() != 3 or not logits.is_floating_point():
            raise ValueError(f"{side}_logits must be a float tensor [batch, time, vocab], got {_describe(logits)}")
        if logits.shape[-1] == 0:
            raise ValueError(f"{side}_logits has an empty vocabulary dimension: {tuple(logits.shape)}")
        if not isinstance(labels, Tensor) or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"{side}_labels must be an integer tensor [batch, time], got {_describe(labels)}")
        if tuple(labels.shape) != tuple(logits.shape[:2]):
            raise ValueError(
                f"{side}_labels shape {tuple(labels.shape)} does not match {side}_logits "
                f"[batch, time] = {tuple(logits.shape[:2])}"
            )
    if student_logits.shape[0] != teacher_logits.shape[0]:
        raise ValueError(
            f"batch sizes differ: student has {student_logits.shape[0]} rows, teacher has {teacher_logits.shape[0]}"
        )


def _check_no_nan(side: str, rows: Tensor) -> None:
    if torch.isnan(rows).any() or torch.isposinf(rows).any():
        raise ValueError(f"{side} logits contain NaN or +inf at answer positions")


def _describe(value) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
