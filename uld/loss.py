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

Worked example: sorted, (0.6, 0.3, 0.1) faces (0.8, 0.2, 0), so the distance is
0.2 + 0.1 + 0.1, the last 0.1 being mass that only the longer vocabulary has:

>>> import torch
>>> uld_distance(torch.tensor([0.1, 0.6, 0.3]), torch.tensor([0.2, 0.8]))
tensor(0.4000)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor, nn

from uld.alignment import (ALIGNMENTS, Alignment, AnswerSpans, SharedVocabulary, hybrid_distance, offset_alignment,
                           positional_alignment)
from uld.sorting import sort_descending
from uld.tail_bound import refined_bound

if TYPE_CHECKING:
    from uld.teacher_cache import SortedTeacher

__all__ = ["uld_distance", "top_k_uld_distance", "ULDLoss", "ULDOutput", "TokenKLLoss"]

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
        alignment: ``"position"`` (the paper's: the answers position by position, cut to
            the shorter) or ``"offsets"`` (positions whose tokens start at the same
            character of the answer; `uld.alignment` states the rule).
        shared_vocabulary: the hybrid loss (`uld.alignment.shared_vocabulary` gives the id
            pairs): on each compared position, ``matched_weight`` times a generalized KL on
            the tokens both vocabularies share plus ``unmatched_weight`` times sorted ULD on
            the rest (`uld.alignment.hybrid_distance`); exact mode and a live teacher only.

    Call: ``loss_fn(student_logits [B, Ts, Vs], teacher_logits [B, Tt, Vt],
    student_labels [B, Ts], teacher_labels [B, Tt], student_is_encoder_decoder=False,
    teacher_is_encoder_decoder=False, student_offsets=None, teacher_offsets=None) ->
    ULDOutput``. With ``alignment="offsets"`` the offsets ``[B, T, 2]`` (integers, shaped
    like the labels) give, for every answer label, the ``(start, end)`` characters of the
    answer text its token covers (an EOS: the empty span at the answer's end).

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
        alignment: str = "position",
        shared_vocabulary: SharedVocabulary | None = None,
        matched_weight: float = 1.0,
        unmatched_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {', '.join(ALIGNMENTS)}, got {alignment!r}")
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
        for name, value in (("matched_weight", matched_weight), ("unmatched_weight", unmatched_weight)):
            if not 0 <= float(value) < float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if shared_vocabulary is not None and top_k is not None:
            raise ValueError("the hybrid loss (shared_vocabulary) is exact only: leave top_k at None")
        self.distillation_weight = float(distillation_weight)
        self.crossentropy_weight = float(crossentropy_weight)
        self.student_temperature = float(student_temperature)
        self.teacher_temperature = float(teacher_temperature)
        self.skip_student_eos = bool(skip_student_eos)
        self.skip_teacher_eos = bool(skip_teacher_eos)
        self.ignore_index = int(ignore_index)
        self.top_k = top_k
        self.alignment_rule = alignment
        self.shared_vocabulary = shared_vocabulary
        self.matched_weight, self.unmatched_weight = float(matched_weight), float(unmatched_weight)

    def extra_repr(self) -> str:
        return (
            f"distillation_weight={self.distillation_weight}, "
            f"crossentropy_weight={self.crossentropy_weight}, "
            f"student_temperature={self.student_temperature}, "
            f"teacher_temperature={self.teacher_temperature}, "
            f"skip_student_eos={self.skip_student_eos}, skip_teacher_eos={self.skip_teacher_eos}, "
            f"ignore_index={self.ignore_index}, top_k={self.top_k}, alignment={self.alignment_rule!r}"
        )

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        student_labels: Tensor,
        teacher_labels: Tensor,
        student_is_encoder_decoder: bool = False,
        teacher_is_encoder_decoder: bool = False,
        student_offsets: Tensor | None = None,
        teacher_offsets: Tensor | None = None,
    ) -> ULDOutput:
        _check_batch(student_logits, teacher_logits, student_labels, teacher_labels)
        student_labels = self.predicted_labels(student_labels, student_is_encoder_decoder)
        teacher_labels = self.predicted_labels(teacher_labels, teacher_is_encoder_decoder)
        aligned = self._alignment(student_labels, teacher_labels, student_is_encoder_decoder,
                                  teacher_is_encoder_decoder, student_offsets, teacher_offsets)
        return self._loss(student_logits, student_labels, teacher_logits, aligned, teacher_tail=None, top_k=self.top_k)

    def from_sorted_teacher(
        self, student_logits: Tensor, student_labels: Tensor, teacher: "SortedTeacher",
        student_is_encoder_decoder: bool = False,
    ) -> ULDOutput:
        """The loss against a teacher given only by its sorted probabilities (`uld.teacher_cache`).

        ``teacher.head [N, k]`` holds, for every teacher answer position in order (EOS
        included, ``teacher.sizes [B]`` of them per sample), its ``k`` largest
        probabilities sorted in decreasing order (teacher temperature already applied),
        and ``teacher.tail [N]`` the rest of its mass. The comparison is the top-k one
        with ``k = min(top_k, teacher k)``: exact when the head holds the whole teacher
        vocabulary; otherwise within the bound this loss reports, which also covers the
        head's storage rounding (``teacher.rounding [N]``). No gradient reaches the teacher.

        >>> from uld.teacher_cache import SortedTeacher
        >>> teacher = SortedTeacher(torch.tensor([[0.5, 0.5], [1.0, 0.0]]), torch.zeros(2), torch.tensor([2]))
        >>> student, labels = torch.zeros(1, 3, 4), torch.tensor([[-100, 1, 2]])
        >>> out = ULDLoss(crossentropy_weight=0).from_sorted_teacher(student, labels, teacher)
        >>> out.distillation, out.distillation_error_bound     # (1.0 + 1.5) / 2, exact: Q = 0
        (tensor(1.2500), tensor(0.))
        """
        if not isinstance(student_logits, Tensor) or student_logits.dim() != 3 or not student_logits.is_floating_point():
            raise ValueError(f"student_logits must be a float tensor [batch, time, vocab], got {_describe(student_logits)}")
        teacher.check(student_logits.shape[0])
        self._refuse_offsets_for_a_cache()
        if self.shared_vocabulary is not None:
            raise ValueError("the hybrid loss needs the live teacher's logits: a cache keeps sorted heads only")
        student_labels = self.predicted_labels(student_labels, student_is_encoder_decoder)
        spans = self._cached_teacher_spans(teacher, student_logits.device)
        aligned = positional_alignment(self.answer_spans(student_labels, self.skip_student_eos), spans)
        width = teacher.head.shape[-1]
        result = self._loss(student_logits, student_labels, teacher.head.to(student_logits.device), aligned,
                            teacher_tail=teacher.tail.to(student_logits.device),
                            top_k=min(self.top_k or width, width))
        if teacher.rounding is None or self.distillation_weight == 0:
            return result
        rounding = teacher.rounding.to(student_logits.device)[aligned.teacher_position].to(result.distillation.dtype)
        extra = abs(self.distillation_weight) * _mean_per_sample_then_batch(rounding, aligned.sample, aligned.per_sample)
        return result._replace(distillation_error_bound=result.distillation_error_bound + extra)

    def _loss(self, student_logits: Tensor, student_labels: Tensor, teacher_source: Tensor, aligned: Alignment,
              teacher_tail: Tensor | None, top_k: int | None) -> ULDOutput:
        """The loss from shifted student labels and the compared pairs.

        ``teacher_source`` is the teacher's logits ``[B, Tt, Vt]`` (``teacher_tail=None``)
        or its sorted heads ``[N, k]`` with their tail masses ``[N]``; ``aligned`` indexes
        it by (sample, teacher position), or for a head by its row.
        """
        if self.distillation_weight == 0:  # the term is zero: compare no rows (no sorts)
            empty = aligned.sample[:0]
            aligned = Alignment(empty, empty, empty, torch.zeros_like(aligned.per_sample))
        answer = student_labels != self.ignore_index
        ce_sample, ce_position = answer.nonzero(as_tuple=True)
        teacher_rows = (aligned.teacher_position if teacher_tail is not None
                        else _flat_rows(teacher_source, aligned.sample, aligned.teacher_position))
        plan = _RowPlan(
            student_rows=_flat_rows(student_logits, aligned.sample, aligned.student_position),
            teacher_rows=teacher_rows,
            crossentropy_rows=_flat_rows(student_logits, ce_sample, ce_position),
            crossentropy_targets=self._checked_targets(student_labels[answer], student_logits.shape[-1]),
            student_temperature=self.student_temperature,
            teacher_temperature=self.teacher_temperature,
            top_k=top_k,
            teacher_tail=teacher_tail,
        )
        sample, per_sample = aligned.sample, aligned.per_sample
        if self.shared_vocabulary is not None and teacher_tail is None and len(sample):
            return self._hybrid(student_logits, teacher_source, plan, aligned)
        crossentropy, distances, bounds = _ULDRows.apply(student_logits, teacher_source, plan)
        crossentropy = self.crossentropy_weight * crossentropy
        distillation = self.distillation_weight * _mean_per_sample_then_batch(distances, sample, per_sample)
        bound = abs(self.distillation_weight) * _mean_per_sample_then_batch(bounds, sample, per_sample)
        return ULDOutput(crossentropy + distillation, crossentropy, distillation, bound)

    def _hybrid(self, student_logits: Tensor, teacher_logits: Tensor, plan: _RowPlan, aligned: Alignment) -> ULDOutput:
        """The hybrid loss: cross-entropy from the kernel, the distillation rows by autograd."""
        shared = self.shared_vocabulary
        for side, ids, logits in (("student", shared.student, student_logits), ("teacher", shared.teacher, teacher_logits)):
            if len(ids) and int(ids.max()) >= logits.shape[-1]:
                raise ValueError(f"the shared vocabulary names {side} token id {int(ids.max())}, but the {side} has "
                                 f"{logits.shape[-1]} logits: it belongs to other tokenizers")
        empty = plan.student_rows[:0]
        crossentropy, _, _ = _ULDRows.apply(student_logits, teacher_logits,
                                            plan._replace(student_rows=empty, teacher_rows=empty))
        dtype = compute_dtype(student_logits, teacher_logits)
        p = torch.softmax(_flat(student_logits)[plan.student_rows].to(dtype) / self.student_temperature, -1)
        q = torch.softmax(_flat(teacher_logits)[plan.teacher_rows].to(dtype).detach() / self.teacher_temperature, -1)
        distances = hybrid_distance(p, q, shared, self.matched_weight, self.unmatched_weight)
        crossentropy = self.crossentropy_weight * crossentropy
        distillation = self.distillation_weight * _mean_per_sample_then_batch(distances, aligned.sample,
                                                                              aligned.per_sample)
        return ULDOutput(crossentropy + distillation, crossentropy, distillation, torch.zeros_like(distillation))

    def alignment(
        self,
        student_labels: Tensor,
        teacher_labels: Tensor,
        student_is_encoder_decoder: bool = False,
        teacher_is_encoder_decoder: bool = False,
        student_offsets: Tensor | None = None,
        teacher_offsets: Tensor | None = None,
    ) -> list[list[tuple[int, int]]]:
        """Per sample, the ``(student logit position, teacher logit position)`` pairs compared.

        The same alignment the loss uses, for reading and plotting.

        >>> ULDLoss(skip_student_eos=True).alignment(
        ...     torch.tensor([[-100, -100, 7, 8, 2]]), torch.tensor([[-100, 4, 5, 6, -100]]))
        [[(1, 0), (2, 1)]]
        """
        aligned = self._alignment(self.predicted_labels(student_labels, student_is_encoder_decoder),
                                  self.predicted_labels(teacher_labels, teacher_is_encoder_decoder),
                                  student_is_encoder_decoder, teacher_is_encoder_decoder, student_offsets,
                                  teacher_offsets)
        pairs: list[list[tuple[int, int]]] = [[] for _ in range(student_labels.shape[0])]
        for b, s, t in zip(aligned.sample.tolist(), aligned.student_position.tolist(), aligned.teacher_position.tolist()):
            pairs[b].append((s, t))
        return pairs

    def _cached_teacher_spans(self, teacher: "SortedTeacher", device) -> AnswerSpans:
        """Each sample's answer rows in a cached teacher's head (``teacher.sizes`` of them in
        order, the EOS row left out when ``skip_teacher_eos``)."""
        sizes = teacher.sizes.to(device=device, dtype=torch.long)
        return AnswerSpans(torch.cumsum(sizes, 0) - sizes, (sizes - int(self.skip_teacher_eos)).clamp_min(0))

    def _alignment(self, student_labels: Tensor, teacher_labels: Tensor, student_is_encoder_decoder: bool,
                   teacher_is_encoder_decoder: bool, student_offsets: Tensor | None,
                   teacher_offsets: Tensor | None) -> Alignment:
        """The compared pairs, from shifted labels (`predicted_labels`) and unshifted offsets,
        by this loss's rule."""
        student = self.answer_spans(student_labels, self.skip_student_eos)
        teacher = self.answer_spans(teacher_labels, self.skip_teacher_eos)
        if self.alignment_rule == "position":
            if student_offsets is not None or teacher_offsets is not None:
                raise ValueError("offsets are read only with alignment='offsets'; this loss aligns by position")
            return positional_alignment(student, teacher)
        spans = {}
        for side, offsets, labels, is_encoder_decoder in (
                ("student", student_offsets, student_labels, student_is_encoder_decoder),
                ("teacher", teacher_offsets, teacher_labels, teacher_is_encoder_decoder)):
            if not isinstance(offsets, Tensor) or offsets.shape != (*labels.shape, 2) or offsets.is_floating_point():
                raise ValueError(f"alignment='offsets' needs {side}_offsets, an integer tensor "
                                 f"{[*labels.shape, 2]} of (start, end) characters per label; got {_describe(offsets)}")
            spans[side] = [self.predicted_labels(offsets[..., i].long(), is_encoder_decoder) for i in (0, 1)]
        return offset_alignment(student, teacher, spans["student"][0], spans["teacher"][0], spans["student"][1],
                                spans["teacher"][1])

    def _refuse_offsets_for_a_cache(self) -> None:
        if self.alignment_rule != "position":
            raise ValueError("a cached teacher is aligned by position only: its cache keeps no character offsets "
                             "(use the live teacher for alignment='offsets')")

    def predicted_labels(self, labels: Tensor, is_encoder_decoder: bool) -> Tensor:
        """Labels ``[B, T]`` re-indexed by the logit position that predicts them.

        A decoder's logits at ``t`` predict label ``t + 1`` (causal shift); its last
        position predicts nothing and gets ``ignore_index``.

        >>> ULDLoss().predicted_labels(torch.tensor([[-100, 5, 6]]), is_encoder_decoder=False)
        tensor([[   5,    6, -100]])
        """
        if is_encoder_decoder:
            return labels
        return torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], self.ignore_index)], dim=1)

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

    def _checked_targets(self, targets: Tensor, vocab: int) -> Tensor:
        if targets.numel() and (targets.min() < 0 or targets.max() >= vocab):
            raise ValueError(
                f"student labels must be token ids in [0, {vocab}) or ignore_index "
                f"({self.ignore_index}); got values from {targets.min().item()} to "
                f"{targets.max().item()}"
            )
        return targets.long()


class TokenKLLoss(ULDLoss):
    """The shared-vocabulary baseline: cross-entropy plus lambda times token-level
    ``KL(teacher || student)``, on the very positions `ULDLoss` aligns.

    Only defined when both models share one vocabulary (same size, same token ids); a
    ``ValueError`` says so otherwise. Temperatures apply to both softmaxes; ``top_k`` is
    not used. Per sample the mean over aligned positions, then the mean over samples.

    >>> logits = torch.tensor([[[0.0, 1.0], [2.0, 0.0]]])
    >>> labels = torch.tensor([[-100, 1]])
    >>> TokenKLLoss(crossentropy_weight=0.0)(logits, logits, labels, labels).distillation
    tensor(0.)
    """

    def forward(self, student_logits, teacher_logits, student_labels, teacher_labels,
                student_is_encoder_decoder=False, teacher_is_encoder_decoder=False, student_offsets=None,
                teacher_offsets=None) -> ULDOutput:
        _check_batch(student_logits, teacher_logits, student_labels, teacher_labels)
        if student_logits.shape[-1] != teacher_logits.shape[-1]:
            raise ValueError(
                f"token KL needs one shared vocabulary, got {student_logits.shape[-1]} student and "
                f"{teacher_logits.shape[-1]} teacher logits per position; use ULDLoss across tokenizers"
            )
        crossentropy = ULDLoss(distillation_weight=0.0, crossentropy_weight=self.crossentropy_weight,
                               ignore_index=self.ignore_index)(
            student_logits, teacher_logits, student_labels, teacher_labels,
            student_is_encoder_decoder, teacher_is_encoder_decoder).crossentropy
        aligned = self._alignment(self.predicted_labels(student_labels, student_is_encoder_decoder),
                                  self.predicted_labels(teacher_labels, teacher_is_encoder_decoder),
                                  student_is_encoder_decoder, teacher_is_encoder_decoder, student_offsets,
                                  teacher_offsets)
        dtype = compute_dtype(student_logits, teacher_logits)
        student_rows = _flat(student_logits)[_flat_rows(student_logits, aligned.sample, aligned.student_position)]
        teacher_rows = _flat(teacher_logits)[_flat_rows(teacher_logits, aligned.sample, aligned.teacher_position)]
        log_p = torch.log_softmax(student_rows.to(dtype) / self.student_temperature, -1)
        log_q = torch.log_softmax(teacher_rows.to(dtype) / self.teacher_temperature, -1)
        q = log_q.exp()
        per_row = (torch.special.xlogy(q, q) - torch.where(q > 0, q * log_p, torch.zeros_like(log_p))).sum(-1)
        distillation = self.distillation_weight * _mean_per_sample_then_batch(per_row, aligned.sample,
                                                                              aligned.per_sample)
        zero = torch.zeros((), dtype=dtype, device=student_logits.device)
        return ULDOutput(crossentropy + distillation, crossentropy, distillation, zero)

    def from_sorted_teacher(self, student_logits: Tensor, student_labels: Tensor, teacher: "SortedTeacher",
                            student_is_encoder_decoder: bool = False) -> ULDOutput:
        """Token-level KL against a cached teacher (`uld.teacher_cache`, built with ``token_ids=True``).

        Per aligned position the teacher is its top-k head (probabilities ``q_j`` of tokens
        ``teacher.index``) and the rest of its mass ``Q`` as one outcome; the student's
        distribution is grouped the same way (``p_j`` on those tokens, ``P`` on all others):

            KL = sum_j q_j log(q_j / p_j) + Q log(Q / P)

        It equals the full KL when ``Q = 0`` (the head holds all the teacher's mass) and is
        never above it otherwise (grouping outcomes cannot raise a KL), so
        ``distillation_error_bound`` is 0 when every tail is empty and ``inf`` (no bound)
        otherwise. A token id outside the student's vocabulary raises ``ValueError``.

        >>> from uld.teacher_cache import SortedTeacher
        >>> teacher = SortedTeacher(torch.tensor([[1.0]]), torch.zeros(1), torch.tensor([1]), index=torch.tensor([[1]]))
        >>> student, labels = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]]), torch.tensor([[-100, 1]])
        >>> TokenKLLoss(crossentropy_weight=0, distillation_weight=1).from_sorted_teacher(student, labels, teacher).distillation
        tensor(0.6931)
        """
        if teacher.index is None:
            raise ValueError("token KL from a teacher cache needs its token ids: build the cache with token_ids=True")
        teacher.check(student_logits.shape[0])
        if teacher.index.numel() and int(teacher.index.max()) >= student_logits.shape[-1]:
            raise ValueError(f"token KL needs one shared vocabulary: the teacher cache holds token id "
                             f"{int(teacher.index.max())}, the student has {student_logits.shape[-1]} logits")
        crossentropy = ULDLoss(distillation_weight=0.0, crossentropy_weight=self.crossentropy_weight,
                               ignore_index=self.ignore_index).from_sorted_teacher(
            student_logits, student_labels, teacher, student_is_encoder_decoder).crossentropy
        self._refuse_offsets_for_a_cache()
        labels = self.predicted_labels(student_labels, student_is_encoder_decoder)
        aligned = positional_alignment(self.answer_spans(labels, self.skip_student_eos),
                                       self._cached_teacher_spans(teacher, student_logits.device))
        dtype = compute_dtype(student_logits, teacher.head)
        rows = aligned.teacher_position
        q = teacher.head.to(student_logits.device)[rows].to(dtype)
        rest = teacher.tail.to(student_logits.device)[rows].to(dtype)
        index = teacher.index.to(student_logits.device)[rows].long()
        student_rows = _flat(student_logits)[_flat_rows(student_logits, aligned.sample, aligned.student_position)]
        log_p = torch.log_softmax(student_rows.to(dtype) / self.student_temperature, -1)
        log_p_rest = torch.logsumexp(log_p.scatter(-1, index, float("-inf")), -1)
        head = (torch.special.xlogy(q, q) - torch.where(q > 0, q * log_p.gather(-1, index), torch.zeros_like(q))).sum(-1)
        tail = torch.where(rest > 0, rest * (torch.log(rest) - log_p_rest), torch.zeros_like(rest))
        distillation = self.distillation_weight * _mean_per_sample_then_batch(head + tail, aligned.sample,
                                                                              aligned.per_sample)
        exact = not bool((rest > 0).any()) or self.distillation_weight == 0
        bound = torch.tensor(0.0 if exact else float("inf"), dtype=dtype, device=student_logits.device)
        return ULDOutput(crossentropy + distillation, crossentropy, distillation, bound)


def top_k_uld_distance(p: Tensor, q: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k approximation of `uld_distance`, with a certified bound on its error.

    Args:
        p: ``[..., Vs]``, q: ``[..., Vt]`` probability vectors (rows summing to 1); k >= 1.

    Returns:
        ``(approximation [...], bound [...])`` with ``0 <= exact - approximation <= bound``.

    With ``p``, ``q`` sorted in decreasing order and zero-padded to a common size, split
    the exact distance at rank ``k``:

        exact  = sum_{i<k} |p_i - q_i| + sum_{i>=k} |p_i - q_i|
        approx = sum_{i<k} |p_i - q_i| + |P - Q|,  P = sum_{i>=k} p_i,  Q = sum_{i>=k} q_i.

    The heads agree, and for the tails the triangle inequality gives
    ``|P - Q| = |sum (p_i - q_i)| <= sum |p_i - q_i| <= sum (p_i + q_i) = P + Q``, so

        0 <= exact - approx <= P + Q - |P - Q| = 2 min(P, Q).

    ``2 min(P, Q)`` is zero when either side keeps all its mass in its top k (in particular
    when k covers its vocabulary) and small when either model is confident. Where it
    exceeds 1e-3, `uld.tail_bound` tightens it from a histogram of each tail (how the tail
    mass is spread, not only how much there is); the reported bound is the smaller of the
    two. Tail masses are summed from the probabilities outside the top k, not taken as
    ``1 - head``, so they keep their precision when tiny.

    >>> approx, bound = top_k_uld_distance(torch.full((4,), 0.25), torch.full((4,), 0.25), 1)
    >>> approx, bound        # exact is 0; 2 min(0.75, 0.75) = 1.5, the histogram says 3/32
    (tensor(0.), tensor(0.0938))
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    _check_probability_tensor("p", p)
    _check_probability_tensor("q", q)
    dtype = compute_dtype(p, q)
    rows = torch.broadcast_shapes(p.shape[:-1], q.shape[:-1])  # rows pair up as uld_distance's do
    p, q = p.to(dtype).expand(*rows, p.shape[-1]), q.to(dtype).expand(*rows, q.shape[-1])
    p_head, p_tail, p_index = _top_k_and_tail_mass(p, k)
    q_head, q_tail, q_index = _top_k_and_tail_mass(q, k)
    bound = refined_bound(*(x.reshape(-1, x.shape[-1]) for x in (p, q, p_head, q_head, p_index, q_index)),
                          p_tail.reshape(-1), q_tail.reshape(-1))
    return uld_distance(p_head, q_head) + (p_tail - q_tail).abs(), bound.reshape(rows)


class _RowPlan(NamedTuple):
    """Which rows of the flattened ``[B*T, V]`` logits the loss reads, and how."""

    student_rows: Tensor  # [N] aligned answer rows, paired one to one with teacher_rows
    teacher_rows: Tensor  # [N]
    crossentropy_rows: Tensor  # [M] student rows with a non-ignored label
    crossentropy_targets: Tensor  # [M]
    student_temperature: float
    teacher_temperature: float
    top_k: int | None
    teacher_tail: Tensor | None = None  # [rows of the teacher source]: it holds sorted heads, not logits


class _ULDRows(torch.autograd.Function):
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
    def forward(ctx, student_logits: Tensor, teacher_logits: Tensor, plan: _RowPlan):
        needs_student, needs_teacher = ctx.needs_input_grad[:2]
        dtype = compute_dtype(student_logits, teacher_logits)
        student = _flat(student_logits)
        teacher = _flat(teacher_logits)
        crossentropy = _crossentropy(student, plan.crossentropy_rows, plan.crossentropy_targets, dtype)
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
            flat_grad, student = _flat(student_grad), _flat(student_logits)
            _add_crossentropy_grad(flat_grad, student, plan, grad_crossentropy, dtype)
            _add_distance_grad(
                flat_grad, student, plan.student_rows, student_signs, plan.student_temperature, grad_distances, dtype
            )
        if teacher_signs is not None:
            teacher_grad = torch.zeros_like(teacher_logits, memory_format=torch.contiguous_format)
            _add_distance_grad(
                _flat(teacher_grad), _flat(teacher_logits), plan.teacher_rows, teacher_signs,
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
        p_sorted, p_tail, p_order = _top_k_and_tail_mass(p, top_k)
        if q_sorted_tail is None:
            q_sorted, q_tail, q_order = _top_k_and_tail_mass(q, top_k)
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


def _top_k_and_tail_mass(probs: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """``probs [..., V]`` -> (its ``min(k, V)`` largest values sorted, the mass of the rest, their indices)."""
    head, index = probs.topk(min(k, probs.shape[-1]), dim=-1, sorted=True)
    tail = probs.scatter(-1, index, 0.0).sum(-1)
    return head, tail, index


def _crossentropy(logits: Tensor, rows: Tensor, targets: Tensor, dtype: torch.dtype) -> Tensor:
    """Mean cross-entropy of ``logits[rows]`` against ``targets``; 0 without rows."""
    total = torch.zeros((), dtype=dtype, device=logits.device)
    for block in _blocks(rows.numel(), logits.shape[-1]):
        z = logits[rows[block]].to(dtype)
        total += (z.logsumexp(-1) - z.gather(-1, targets[block].unsqueeze(-1)).squeeze(-1)).sum()
    return total / max(rows.numel(), 1)


def _add_crossentropy_grad(grad: Tensor, logits: Tensor, plan: _RowPlan, scale: Tensor, dtype: torch.dtype) -> None:
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


def _flat(logits: Tensor) -> Tensor:
    """``[B, T, V]`` -> ``[B*T, V]`` (a view for contiguous logits)."""
    return logits.reshape(-1, logits.shape[-1])


def _flat_rows(logits: Tensor, sample: Tensor, position: Tensor) -> Tensor:
    """Row indices into ``_flat(logits)`` for (sample, position) pairs."""
    return sample * logits.shape[1] + position


def _mean_per_sample_then_batch(values: Tensor, sample: Tensor, aligned: Tensor) -> Tensor:
    """Mean of ``values [N]`` within each sample, then over samples with ``aligned > 0``."""
    if values.numel() == 0:
        return values.sum()  # zero, and still part of the graph
    per_sample = values.new_zeros(aligned.numel()).index_add(0, sample, values)
    present = aligned > 0
    return (per_sample[present] / aligned[present].to(values.dtype)).mean()


def _check_probability_tensor(name: str, tensor: Tensor) -> None:
    if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {_describe(tensor)}")
    if tensor.dim() == 0 or tensor.shape[-1] == 0:
        raise ValueError(f"{name} must have a non-empty last (vocabulary) dimension, got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinite values")


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


def _describe(value) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
