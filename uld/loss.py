"""The Universal Logit Distillation loss along answers: `ULDLoss`, and `TokenKLLoss`, the
shared-vocabulary baseline on the same aligned positions.

`ULDLoss` applies `uld.distance.uld_distance` (or its top-k approximation) along answers,
with the alignment of the authors' training code: each side's answer starts at its first
non-ignored label, the two answers are compared position by position from there and cut
to the shorter one (`uld.alignment` holds that rule and the character-offset one). The
computation itself is `uld.kernel`'s.

>>> import torch
>>> out = ULDLoss(distillation_weight=1.5)(torch.zeros(1, 4, 3), torch.zeros(1, 3, 2),
...                                        torch.tensor([[-100, -100, 1, 2]]), torch.tensor([[-100, 0, 1]]))
>>> round(out.distillation.item(), 4)     # 1.5 * (|1/3-1/2| * 2 + 1/3)
1.0
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from uld.alignment import (ALIGNMENTS, Alignment, AnswerSpans, SharedVocabulary, hybrid_distance, offset_alignment,
                           positional_alignment, shift_labels)
from uld.distance import compute_dtype, describe
from uld.kernel import RowPlan, ULDRows, flat, flat_rows

__all__ = ["ULDLoss", "ULDOutput", "TokenKLLoss", "SortedTeacher"]


class SortedTeacher(NamedTuple):
    """A batch of teacher answers as sorted probabilities: what `ULDLoss.from_sorted_teacher`
    reads (`uld.teacher_cache` stores and batches them).

    ``head [N, k]``: the ``k`` largest probabilities of each answer position, decreasing;
    ``tail [N]``: the mass outside them; ``sizes [B]``: answer positions per sample (rows
    of ``head`` in sample order, EOS included when the teacher's answer has one);
    ``rounding [N]`` (optional): a bound on the L1 change the head and tail took when
    stored, added to the loss's error bound; ``index [N, k]`` (optional): the token id of
    each head probability, which token-level KL on a shared vocabulary needs (ULD does not).
    """

    head: Tensor
    tail: Tensor
    sizes: Tensor
    rounding: Tensor | None = None
    index: Tensor | None = None

    def check(self, batch: int) -> None:
        """Raise ``ValueError`` unless this describes ``batch`` samples consistently."""
        if self.head.dim() != 2 or not self.head.is_floating_point():
            raise ValueError(f"teacher head must be a float tensor [rows, k], got shape {tuple(self.head.shape)}")
        if tuple(self.tail.shape) != (self.head.shape[0],):
            raise ValueError(f"teacher tail must have one value per head row ({self.head.shape[0]}), "
                             f"got shape {tuple(self.tail.shape)}")
        if tuple(self.sizes.shape) != (batch,):
            raise ValueError(f"teacher sizes must have one entry per sample ({batch}), got shape {tuple(self.sizes.shape)}")
        if int(self.sizes.sum()) != self.head.shape[0] or bool((self.sizes < 0).any()):
            raise ValueError(f"teacher sizes sum to {int(self.sizes.sum())} but the head has {self.head.shape[0]} rows")
        if self.index is not None and tuple(self.index.shape) != tuple(self.head.shape):
            raise ValueError(f"teacher index must have the head's shape {tuple(self.head.shape)}, "
                             f"got {tuple(self.index.shape)}")


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
        distillation_weight: lambda, the weight of the ULD term. The loss defaults to 1.0, the
            neutral weight of a building block; the paper trains with 1.5
            (`uld.methods.PAPER_DISTILLATION_WEIGHT`), which is what `uld.distill.DistillConfig`
            and the command line default to.
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
        self, student_logits: Tensor, student_labels: Tensor, teacher: SortedTeacher,
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

        >>> from uld.loss import SortedTeacher
        >>> teacher = SortedTeacher(torch.tensor([[0.5, 0.5], [1.0, 0.0]]), torch.zeros(2), torch.tensor([2]))
        >>> student, labels = torch.zeros(1, 3, 4), torch.tensor([[-100, 1, 2]])
        >>> out = ULDLoss(crossentropy_weight=0).from_sorted_teacher(student, labels, teacher)
        >>> out.distillation, out.distillation_error_bound     # (1.0 + 1.5) / 2, exact: Q = 0
        (tensor(1.2500), tensor(0.))
        """
        if not isinstance(student_logits, Tensor) or student_logits.dim() != 3 or not student_logits.is_floating_point():
            raise ValueError(f"student_logits must be a float tensor [batch, time, vocab], got {describe(student_logits)}")
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
                        else flat_rows(teacher_source, aligned.sample, aligned.teacher_position))
        plan = RowPlan(
            student_rows=flat_rows(student_logits, aligned.sample, aligned.student_position),
            teacher_rows=teacher_rows,
            crossentropy_rows=flat_rows(student_logits, ce_sample, ce_position),
            crossentropy_targets=self._checked_targets(student_labels[answer], student_logits.shape[-1]),
            student_temperature=self.student_temperature,
            teacher_temperature=self.teacher_temperature,
            top_k=top_k,
            teacher_tail=teacher_tail,
        )
        sample, per_sample = aligned.sample, aligned.per_sample
        if self.shared_vocabulary is not None and teacher_tail is None and len(sample):
            return self._hybrid(student_logits, teacher_source, plan, aligned)
        crossentropy, distances, bounds = ULDRows.apply(student_logits, teacher_source, plan)
        crossentropy = self.crossentropy_weight * crossentropy
        distillation = self.distillation_weight * _mean_per_sample_then_batch(distances, sample, per_sample)
        bound = abs(self.distillation_weight) * _mean_per_sample_then_batch(bounds, sample, per_sample)
        return ULDOutput(crossentropy + distillation, crossentropy, distillation, bound)

    def _hybrid(self, student_logits: Tensor, teacher_logits: Tensor, plan: RowPlan, aligned: Alignment) -> ULDOutput:
        """The hybrid loss: cross-entropy from the kernel, the distillation rows by autograd."""
        shared = self.shared_vocabulary
        for side, ids, logits in (("student", shared.student, student_logits), ("teacher", shared.teacher, teacher_logits)):
            if len(ids) and int(ids.max()) >= logits.shape[-1]:
                raise ValueError(f"the shared vocabulary names {side} token id {int(ids.max())}, but the {side} has "
                                 f"{logits.shape[-1]} logits: it belongs to other tokenizers")
        empty = plan.student_rows[:0]
        crossentropy, _, _ = ULDRows.apply(student_logits, teacher_logits,
                                            plan._replace(student_rows=empty, teacher_rows=empty))
        dtype = compute_dtype(student_logits, teacher_logits)
        p = torch.softmax(flat(student_logits)[plan.student_rows].to(dtype) / self.student_temperature, -1)
        q = torch.softmax(flat(teacher_logits)[plan.teacher_rows].to(dtype).detach() / self.teacher_temperature, -1)
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

    def _cached_teacher_spans(self, teacher: SortedTeacher, device) -> AnswerSpans:
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
                                 f"{[*labels.shape, 2]} of (start, end) characters per label; got {describe(offsets)}")
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
        return shift_labels(labels, is_encoder_decoder, self.ignore_index)

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

    def _crossentropy(self, student_logits: Tensor, student_labels: Tensor, is_encoder_decoder: bool,
                      teacher_source: Tensor) -> Tensor:
        """The weighted cross-entropy term alone (unshifted ``student_labels``): `_loss` with no
        compared pair, so its value and gradient are those of the full loss's term."""
        labels = self.predicted_labels(student_labels, is_encoder_decoder)
        none = labels.new_zeros(0)
        no_pairs = Alignment(none, none, none, labels.new_zeros(labels.shape[0]))
        return self._loss(student_logits, labels, teacher_source, no_pairs, teacher_tail=None, top_k=None).crossentropy

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
        crossentropy = self._crossentropy(student_logits, student_labels, student_is_encoder_decoder, teacher_logits)
        aligned = self._alignment(self.predicted_labels(student_labels, student_is_encoder_decoder),
                                  self.predicted_labels(teacher_labels, teacher_is_encoder_decoder),
                                  student_is_encoder_decoder, teacher_is_encoder_decoder, student_offsets,
                                  teacher_offsets)
        dtype = compute_dtype(student_logits, teacher_logits)
        student_rows = flat(student_logits)[flat_rows(student_logits, aligned.sample, aligned.student_position)]
        teacher_rows = flat(teacher_logits)[flat_rows(teacher_logits, aligned.sample, aligned.teacher_position)]
        log_p = torch.log_softmax(student_rows.to(dtype) / self.student_temperature, -1)
        log_q = torch.log_softmax(teacher_rows.to(dtype) / self.teacher_temperature, -1)
        q = log_q.exp()
        per_row = (torch.special.xlogy(q, q) - torch.where(q > 0, q * log_p, torch.zeros_like(log_p))).sum(-1)
        distillation = self.distillation_weight * _mean_per_sample_then_batch(per_row, aligned.sample,
                                                                              aligned.per_sample)
        zero = torch.zeros((), dtype=dtype, device=student_logits.device)
        return ULDOutput(crossentropy + distillation, crossentropy, distillation, zero)

    def from_sorted_teacher(self, student_logits: Tensor, student_labels: Tensor, teacher: SortedTeacher,
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

        >>> from uld.loss import SortedTeacher
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
        crossentropy = self._crossentropy(student_logits, student_labels, student_is_encoder_decoder, teacher.head)
        self._refuse_offsets_for_a_cache()
        labels = self.predicted_labels(student_labels, student_is_encoder_decoder)
        aligned = positional_alignment(self.answer_spans(labels, self.skip_student_eos),
                                       self._cached_teacher_spans(teacher, student_logits.device))
        dtype = compute_dtype(student_logits, teacher.head)
        rows = aligned.teacher_position
        q = teacher.head.to(student_logits.device)[rows].to(dtype)
        rest = teacher.tail.to(student_logits.device)[rows].to(dtype)
        index = teacher.index.to(student_logits.device)[rows].long()
        student_rows = flat(student_logits)[flat_rows(student_logits, aligned.sample, aligned.student_position)]
        log_p = torch.log_softmax(student_rows.to(dtype) / self.student_temperature, -1)
        log_p_rest = torch.logsumexp(log_p.scatter(-1, index, float("-inf")), -1)
        head = (torch.special.xlogy(q, q) - torch.where(q > 0, q * log_p.gather(-1, index), torch.zeros_like(q))).sum(-1)
        tail = torch.where(rest > 0, rest * (torch.log(rest) - log_p_rest), torch.zeros_like(rest))
        distillation = self.distillation_weight * _mean_per_sample_then_batch(head + tail, aligned.sample,
                                                                              aligned.per_sample)
        exact = not bool((rest > 0).any()) or self.distillation_weight == 0
        bound = torch.tensor(0.0 if exact else float("inf"), dtype=dtype, device=student_logits.device)
        return ULDOutput(crossentropy + distillation, crossentropy, distillation, bound)


def _mean_per_sample_then_batch(values: Tensor, sample: Tensor, aligned: Tensor) -> Tensor:
    """Mean of ``values [N]`` within each sample, then over samples with ``aligned > 0``."""
    if values.numel() == 0:
        return values.sum()  # zero, and still part of the graph
    per_sample = values.new_zeros(aligned.numel()).index_add(0, sample, values)
    present = aligned > 0
    return (per_sample[present] / aligned[present].to(values.dtype)).mean()


def _check_batch(student_logits: Tensor, teacher_logits: Tensor, student_labels: Tensor, teacher_labels: Tensor) -> None:
    for side, logits, labels in (
        ("student", student_logits, student_labels),
        ("teacher", teacher_logits, teacher_labels),
    ):
        if not isinstance(logits, Tensor) or logits.dim() != 3 or not logits.is_floating_point():
            raise ValueError(f"{side}_logits must be a float tensor [batch, time, vocab], got {describe(logits)}")
        if logits.shape[-1] == 0:
            raise ValueError(f"{side}_logits has an empty vocabulary dimension: {tuple(logits.shape)}")
        if not isinstance(labels, Tensor) or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"{side}_labels must be an integer tensor [batch, time], got {describe(labels)}")
        if tuple(labels.shape) != tuple(logits.shape[:2]):
            raise ValueError(
                f"{side}_labels shape {tuple(labels.shape)} does not match {side}_logits "
                f"[batch, time] = {tuple(logits.shape[:2])}"
            )
    if student_logits.shape[0] != teacher_logits.shape[0]:
        raise ValueError(
            f"batch sizes differ: student has {student_logits.shape[0]} rows, teacher has {teacher_logits.shape[0]}"
        )

