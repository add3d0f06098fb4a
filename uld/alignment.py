"""Which teacher answer position each student answer position is compared with, and which
tokens the two vocabularies share.

Two rules, both over the answer *positions* of each side (the logit positions that predict
an answer token, EOS included unless skipped):

``position`` (the paper's, the default): the ``i``-th student position faces the ``i``-th
teacher position, and the longer answer is cut to the shorter one.

``offsets`` (by characters): each answer token covers a span of characters of the answer
text. A student and a teacher position are compared when the tokens they predict **start
at the same character**: both models have then read the same text and predict what comes
next from the same point, whatever the two vocabularies make of the rest. A token of one
side that covers several of the other side's is compared once, at the position where both
start; the other side's positions inside it, and any position whose start the other side
never shares, are left out of the distillation term (the cross-entropy keeps them). An EOS
covers the empty span at the end of the answer, so two unskipped EOS positions face each
other. With one tokenizer on both sides every start is shared and the rule is exactly the
positional one.

>>> student = AnswerSpans(torch.tensor([0]), torch.tensor([3]))      # " viol", "inist", EOS
>>> teacher = AnswerSpans(torch.tensor([0]), torch.tensor([2]))      # " violinist", EOS
>>> starts = (torch.tensor([[0, 5, 10]]), torch.tensor([[0, 10]]))   # characters where each starts
>>> ends = (torch.tensor([[5, 10, 10]]), torch.tensor([[10, 10]]))
>>> aligned = offset_alignment(student, teacher, *starts, *ends)
>>> aligned.student_position.tolist(), aligned.teacher_position.tolist()
([0, 2], [0, 1])
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["ALIGNMENTS", "AnswerSpans", "Alignment", "shift_labels", "positional_alignment", "offset_alignment", "token_spans",
           "SharedVocabulary", "shared_vocabulary", "hybrid_distance"]

ALIGNMENTS = ("position", "offsets")


class AnswerSpans(NamedTuple):
    """Where each row's answer sits, in logit positions: ``[B]`` starts and sizes."""

    start: Tensor
    size: Tensor


class Alignment(NamedTuple):
    """The compared pairs, one entry each: ``sample``, ``student_position`` and
    ``teacher_position`` ``[N]``; ``per_sample`` ``[B]`` how many pairs each sample has."""

    sample: Tensor
    student_position: Tensor
    teacher_position: Tensor
    per_sample: Tensor


def shift_labels(labels: Tensor, is_encoder_decoder: bool, ignore_index: int = -100) -> Tensor:
    """Labels ``[B, T]`` re-indexed by the logit position that predicts them.

    A decoder's logits at ``t`` predict label ``t + 1`` (the causal shift): its last
    position predicts nothing and gets ``ignore_index``. An encoder-decoder's decoder
    position ``t`` predicts label ``t``: its labels come back as they are.

    >>> shift_labels(torch.tensor([[-100, 5, 6]]), is_encoder_decoder=False)
    tensor([[   5,    6, -100]])
    """
    if is_encoder_decoder:
        return labels
    return torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], ignore_index)], dim=1)


def positional_alignment(student: AnswerSpans, teacher: AnswerSpans) -> Alignment:
    """The paper's rule: position ``i`` faces position ``i``, cut to the shorter answer.

    >>> spans = AnswerSpans(torch.tensor([2, 0]), torch.tensor([2, 1]))
    >>> positional_alignment(spans, AnswerSpans(torch.tensor([1, 4]), torch.tensor([3, 0])))
    Alignment(sample=tensor([0, 0]), student_position=tensor([2, 3]), teacher_position=tensor([1, 2]), per_sample=tensor([2, 0]))
    """
    per_sample = torch.minimum(student.size, teacher.size)
    sample = torch.repeat_interleave(torch.arange(per_sample.numel(), device=per_sample.device), per_sample)
    first = torch.cumsum(per_sample, 0) - per_sample
    offset = torch.arange(sample.numel(), device=per_sample.device) - first[sample]
    return Alignment(sample, student.start[sample] + offset, teacher.start[sample] + offset, per_sample)


def offset_alignment(student: AnswerSpans, teacher: AnswerSpans, student_starts: Tensor, teacher_starts: Tensor,
                     student_ends: Tensor, teacher_ends: Tensor) -> Alignment:
    """Pairs of positions whose predicted tokens start at the same character of the answer.

    Args:
        student, teacher: each side's answer positions (`AnswerSpans`, EOS already left out
            where skipped).
        student_starts, student_ends: ``[B, Ts]`` the first and one-past-last character of
            the token each student logit position predicts (read only inside its answer);
            teacher_starts, teacher_ends: ``[B, Tt]`` the same for the teacher.

    Raises ``ValueError`` when a side's starts go backwards within an answer, or when the
    two answers of a sample do not cover the same characters (their last ends differ):
    offsets of different texts cannot be paired.
    """
    samples, student_positions, teacher_positions, counts = [], [], [], []
    for b in range(student.start.numel()):
        s_at = student.start[b] + torch.arange(int(student.size[b]), device=student.start.device)
        t_at = teacher.start[b] + torch.arange(int(teacher.size[b]), device=teacher.start.device)
        s_start, t_start = student_starts[b, s_at], teacher_starts[b, t_at]
        for side, starts in (("student", s_start), ("teacher", t_start)):
            if starts.numel() > 1 and bool((starts[1:] <= starts[:-1]).any()):
                raise ValueError(f"{side} offsets of sample {b} do not increase along its answer: {starts.tolist()}")
        s_end = int(student_ends[b, s_at].max()) if s_at.numel() else 0
        t_end = int(teacher_ends[b, t_at].max()) if t_at.numel() else 0
        if s_at.numel() and t_at.numel() and s_end != t_end:
            raise ValueError(f"the offsets of sample {b} do not cover the same text: the student's answer ends at "
                             f"character {s_end}, the teacher's at {t_end}")
        shared_s = torch.isin(s_start, t_start)
        shared_t = torch.isin(t_start, s_start)
        samples.append(torch.full((int(shared_s.sum()),), b, dtype=torch.long, device=student.start.device))
        student_positions.append(s_at[shared_s])
        teacher_positions.append(t_at[shared_t])  # starts increase on both sides: the two lists pair in order
        counts.append(int(shared_s.sum()))
    device = student.start.device

    def joined(parts: list[Tensor]) -> Tensor:
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=device)

    return Alignment(joined(samples), joined(student_positions), joined(teacher_positions),
                     torch.tensor(counts, dtype=torch.long, device=device))


def token_spans(tokenizer, ids: list[int]) -> list[tuple[int, int]]:
    """The ``(start, end)`` characters each of ``ids`` covers in the text they decode to,
    read from the tokens' own texts (`uld.tokenizers.token_texts`: a leading-space marker
    is the space it stands for), so two tokenizers' spans of the same text compare. A byte
    fragment of a multi-byte character counts as one replacement character, so text with such
    characters can get spans of different lengths on the two sides, which the loss refuses.

    >>> from uld.tokenizers import train_tokenizer
    >>> tok = train_tokenizer(["the cat sat on the mat"] * 50, kind="bpe", vocab_size=300)
    >>> token_spans(tok, tok(" the cat", add_special_tokens=False)["input_ids"])
    [(0, 4), (4, 8)]
    """
    from uld.tokenizers import token_texts

    spans, start = [], 0
    for piece in token_texts(tokenizer, ids):
        spans.append((start, start + len(piece)))
        start += len(piece)
    return spans


# ---------------------------------------------------------------- shared tokens, the hybrid loss

class SharedVocabulary(NamedTuple):
    """Token id pairs whose pieces are the same text: ``student[i]`` and ``teacher[i]`` ``[S]``."""

    student: Tensor
    teacher: Tensor


_SHARED: dict = {}


def shared_vocabulary(student_tokenizer, teacher_tokenizer) -> SharedVocabulary:
    """The id pairs of the two vocabularies whose tokens stand for the same text.

    Texts are compared as `uld.tokenizers.token_texts` writes them (a leading-space marker
    is a space, so GPT-2's ``Ġcat`` and SentencePiece's ``▁cat`` are one text). Special
    tokens, empty pieces and byte fragments (the replacement character) are left out; where
    one vocabulary writes a text with several ids, its lowest id is kept. Computed once per
    pair of tokenizers (by name and size) in a process.

    >>> from uld.tokenizers import train_tokenizer
    >>> tok = train_tokenizer(["the cat sat on the mat"] * 50, kind="bpe", vocab_size=300)
    >>> shared = shared_vocabulary(tok, tok)
    >>> bool((shared.student == shared.teacher).all()), len(shared.student) > 0
    (True, True)
    """
    from uld.tokenizers import token_surfaces

    key = tuple((t.name_or_path, len(t), type(t).__name__) for t in (student_tokenizer, teacher_tokenizer))
    if key in _SHARED and key[0][0] and key[1][0]:
        return _SHARED[key]

    def texts(tokenizer):
        special = set(tokenizer.all_special_ids)
        first: dict[str, int] = {}
        for token_id, text in token_surfaces(tokenizer).items():
            if token_id not in special and text and "\ufffd" not in text:
                first.setdefault(text, token_id)
        return first

    student, teacher = texts(student_tokenizer), texts(teacher_tokenizer)
    common = sorted(set(student) & set(teacher), key=lambda text: student[text])
    shared = SharedVocabulary(torch.tensor([student[t] for t in common], dtype=torch.long),
                              torch.tensor([teacher[t] for t in common], dtype=torch.long))
    _SHARED[key] = shared
    return shared


def hybrid_distance(p: Tensor, q: Tensor, shared: SharedVocabulary, matched_weight: float = 1.0,
                    unmatched_weight: float = 1.0) -> Tensor:
    """Identity-aware on the shared tokens, sorted on the rest: ``[N, Vs]``, ``[N, Vt]`` -> ``[N]``.

    With ``P = p[shared.student]``, ``Q = q[shared.teacher]`` (the shared tokens, same order)
    and ``p', q'`` the entries outside them:

        matched   = sum_j  Q_j log(Q_j / P_j) - Q_j + P_j        (generalized KL(Q || P))
        unmatched = sum_i | sort_desc(p')_i - sort_desc(q')_i |   (ULD on the rest, zero-padded)
        distance  = matched_weight * matched + unmatched_weight * unmatched

    Neither part is renormalised: together they cover each distribution's whole mass once,
    and each is zero exactly when the two sides agree there. The generalized KL stays
    non-negative on the partial masses; when every token is shared it is the token-level
    ``KL(q || p)``, and with ``unmatched_weight=0`` the distance is `uld.loss.TokenKLLoss`'s
    term. A row with no shared token is plain ULD (times ``unmatched_weight``).

    >>> p, q = torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([[0.6, 0.4]])
    >>> shared = SharedVocabulary(torch.tensor([0]), torch.tensor([0]))   # token 0 is one text on both sides
    >>> hybrid_distance(p, q, shared)   # 0.6 log(0.6/0.5) - 0.6 + 0.5 = 0.0094, then |0.3-0.4| + |0.2-0|
    tensor([0.3094])
    """
    from uld.distance import uld_distance

    dtype = torch.promote_types(torch.promote_types(p.dtype, q.dtype), torch.float32)
    p, q = p.to(dtype), q.to(dtype)
    s_ids, t_ids = shared.student.to(p.device), shared.teacher.to(q.device)
    big_p, big_q = p[:, s_ids], q[:, t_ids]
    matched = (torch.special.xlogy(big_q, big_q) - torch.special.xlogy(big_q, big_p) - big_q + big_p).sum(-1)
    rest_p = p.index_fill(-1, s_ids, 0.0) if len(s_ids) else p  # zeroed shared entries sort to the end: no effect
    rest_q = q.index_fill(-1, t_ids, 0.0) if len(t_ids) else q
    unmatched = uld_distance(rest_p, rest_q)
    return matched_weight * matched + unmatched_weight * unmatched
