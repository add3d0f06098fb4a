"""`uld.alignment` and `ULDLoss(alignment="offsets")`: pairing answer positions by characters."""

from __future__ import annotations

import pytest
import torch

from uld import ULDLoss
from uld.alignment import AnswerSpans, offset_alignment, positional_alignment, token_spans
from uld.distance import uld_distance


def decoder_batch(answers: list[list[tuple[int, int]]], prompt: int = 2, vocab: int = 7, seed: int = 0):
    """Logits, labels and offsets for decoder answers given as token spans (EOS last, empty span)."""
    length = prompt + max(len(a) for a in answers) + 1
    labels = torch.full((len(answers), length), -100)
    offsets = torch.zeros(len(answers), length, 2, dtype=torch.long)
    for b, spans in enumerate(answers):
        labels[b, prompt:prompt + len(spans)] = torch.arange(1, len(spans) + 1) % vocab
        offsets[b, prompt:prompt + len(spans)] = torch.tensor(spans)
    logits = torch.randn(len(answers), length, vocab, generator=torch.Generator().manual_seed(seed))
    return logits, labels, offsets


VIOLINIST_STUDENT = [(0, 5), (5, 10), (10, 10)]  # " viol", "inist", EOS
VIOLINIST_TEACHER = [(0, 10), (10, 10)]          # " violinist", EOS


def test_one_tokenizer_on_both_sides_gives_exactly_the_positional_loss_and_gradient():
    answers = [[(0, 4), (4, 8), (8, 9), (9, 9)], [(0, 3), (3, 3)], [(0, 1), (1, 2), (2, 3), (3, 4), (4, 4)]]
    student, labels, offsets = decoder_batch(answers, vocab=9, seed=1)
    teacher = decoder_batch(answers, vocab=5, seed=2)[0]
    for skip in (False, True):
        settings = dict(distillation_weight=1.5, skip_student_eos=skip)
        by_position = student.clone().requires_grad_()
        expected = ULDLoss(**settings)(by_position, teacher, labels, labels)
        expected.loss.backward()
        by_offsets = student.clone().requires_grad_()
        got = ULDLoss(**settings, alignment="offsets")(by_offsets, teacher, labels, labels,
                                                         student_offsets=offsets, teacher_offsets=offsets)
        got.loss.backward()
        assert torch.equal(got.loss, expected.loss) and torch.equal(by_offsets.grad, by_position.grad)


def test_a_token_covering_two_of_the_other_sides_is_compared_once_where_both_start():
    student, s_labels, s_offsets = decoder_batch([VIOLINIST_STUDENT], vocab=6, seed=3)
    teacher, t_labels, t_offsets = decoder_batch([VIOLINIST_TEACHER], vocab=4, seed=4)
    loss = ULDLoss(distillation_weight=1.0, crossentropy_weight=0.0, alignment="offsets")
    pairs = loss.alignment(s_labels, t_labels, student_offsets=s_offsets, teacher_offsets=t_offsets)
    assert pairs == [[(1, 1), (3, 2)]]  # " viol" with " violinist"; the two EOS; "inist" left out
    p = torch.softmax(student[0, [1, 3]], -1)
    q = torch.softmax(teacher[0, [1, 2]], -1)
    value = loss(student, teacher, s_labels, t_labels, student_offsets=s_offsets, teacher_offsets=t_offsets)
    torch.testing.assert_close(value.distillation, uld_distance(p, q).mean())
    positional = ULDLoss(distillation_weight=1.0, crossentropy_weight=0.0).alignment(s_labels, t_labels)
    assert positional == [[(1, 1), (2, 2)]]  # by position, "inist" faces the teacher's EOS


def test_unpaired_samples_contribute_nothing_and_empty_answers_are_zero():
    # Sample 0 shares no start (the student's offsets skip the leading space), sample 1 shares two.
    student, s_labels, s_offsets = decoder_batch([[(1, 5), (5, 10)], VIOLINIST_STUDENT], vocab=6)
    teacher, t_labels, t_offsets = decoder_batch([[(0, 10)], VIOLINIST_TEACHER], vocab=4, seed=5)
    loss = ULDLoss(distillation_weight=1.0, crossentropy_weight=0.0, alignment="offsets")
    both = loss(student, teacher, s_labels, t_labels, student_offsets=s_offsets, teacher_offsets=t_offsets)
    second = loss(student[1:], teacher[1:], s_labels[1:], t_labels[1:], student_offsets=s_offsets[1:],
                  teacher_offsets=t_offsets[1:])
    torch.testing.assert_close(both.distillation, second.distillation)  # the mean over samples with pairs
    empty = torch.full_like(s_labels, -100)
    none = loss(student, teacher, empty, torch.full_like(t_labels, -100), student_offsets=s_offsets,
                teacher_offsets=t_offsets)
    assert none.distillation.item() == 0.0


@pytest.mark.parametrize("change, message", [
    (lambda o: o.fill_(0), "do not increase along its answer"),
    (lambda o: o.__setitem__((0, 3, 1), 12), "do not cover the same text: the student's answer ends at character 12"),
])
def test_offsets_that_cannot_be_paired_are_refused(change, message):
    student, s_labels, s_offsets = decoder_batch([VIOLINIST_STUDENT])
    teacher, t_labels, t_offsets = decoder_batch([VIOLINIST_TEACHER], seed=6)
    change(s_offsets)
    with pytest.raises(ValueError, match=message):
        ULDLoss(alignment="offsets")(student, teacher, s_labels, t_labels, student_offsets=s_offsets,
                                     teacher_offsets=t_offsets)


def test_offsets_are_asked_for_exactly_when_the_rule_reads_them():
    student, labels, offsets = decoder_batch([VIOLINIST_STUDENT])
    with pytest.raises(ValueError, match="alignment must be one of position, offsets, got 'chars'"):
        ULDLoss(alignment="chars")
    with pytest.raises(ValueError, match="needs teacher_offsets, an integer tensor"):
        ULDLoss(alignment="offsets")(student, student, labels, labels, student_offsets=offsets)
    with pytest.raises(ValueError, match="needs student_offsets"):
        ULDLoss(alignment="offsets")(student, student, labels, labels, student_offsets=offsets.float(),
                                     teacher_offsets=offsets)
    with pytest.raises(ValueError, match="offsets are read only with alignment='offsets'"):
        ULDLoss()(student, student, labels, labels, student_offsets=offsets, teacher_offsets=offsets)
    from uld.teacher_cache import sorted_answer_rows

    cached = sorted_answer_rows(student, labels, top_k=3)
    with pytest.raises(ValueError, match="a cached teacher is aligned by position only"):
        ULDLoss(alignment="offsets").from_sorted_teacher(student, labels, cached)


def test_real_tokenizers_pair_where_their_tokens_start_together(pair):
    """On real answers the offset rule compares exactly the positions whose tokens start at the
    same character: more pairs of the same text than the positional rule."""
    teacher_tok, student_tok = pair["teacher_tokenizer"], pair["student_tokenizer"]
    answers = [" " + row["answers"][0] for row in pair["rows"]]
    by_offsets = by_position = 0
    for answer in answers:
        spans = {name: token_spans(tok, tok(answer, add_special_tokens=False)["input_ids"])
                 for name, tok in (("student", student_tok), ("teacher", teacher_tok))}
        starts = {name: torch.tensor([[s for s, _ in side]]) for name, side in spans.items()}
        ends = {name: torch.tensor([[e for _, e in side]]) for name, side in spans.items()}
        answer_spans = {name: AnswerSpans(torch.tensor([0]), torch.tensor([len(side)])) for name, side in spans.items()}
        aligned = offset_alignment(answer_spans["student"], answer_spans["teacher"], starts["student"],
                                   starts["teacher"], ends["student"], ends["teacher"])
        shared = set(s for s, _ in spans["student"]) & set(s for s, _ in spans["teacher"])
        assert int(aligned.per_sample[0]) == len(shared)
        for s, t in zip(aligned.student_position.tolist(), aligned.teacher_position.tolist()):
            assert spans["student"][s][0] == spans["teacher"][t][0]
        positional = positional_alignment(answer_spans["student"], answer_spans["teacher"])
        by_offsets += sum(spans["student"][s] == spans["teacher"][t] for s, t in
                          zip(aligned.student_position.tolist(), aligned.teacher_position.tolist()))
        by_position += sum(spans["student"][s] == spans["teacher"][t] for s, t in
                           zip(positional.student_position.tolist(), positional.teacher_position.tolist()))
    assert by_offsets >= by_position


# ---------------------------------------------------------------- the hybrid loss

from uld import TokenKLLoss  # noqa: E402
from uld.alignment import SharedVocabulary, hybrid_distance, shared_vocabulary  # noqa: E402


def everything_shared(vocab: int) -> SharedVocabulary:
    return SharedVocabulary(torch.arange(vocab), torch.arange(vocab))


def test_with_every_token_shared_and_no_unmatched_weight_the_hybrid_term_is_token_kl():
    student, labels, _ = decoder_batch([[(0, 1), (1, 2), (2, 2)], [(0, 3), (3, 3)]], vocab=9, seed=7)
    teacher = decoder_batch([[(0, 1), (1, 2), (2, 2)], [(0, 3), (3, 3)]], vocab=9, seed=8)[0]
    settings = dict(distillation_weight=1.5, crossentropy_weight=1.0, skip_student_eos=True, student_temperature=2.0)
    hybrid = ULDLoss(**settings, shared_vocabulary=everything_shared(9), unmatched_weight=0.0)
    expected = TokenKLLoss(**settings)(student, teacher, labels, labels)
    got = hybrid(student, teacher, labels, labels)
    torch.testing.assert_close(got.distillation, expected.distillation, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.crossentropy, expected.crossentropy, atol=1e-6, rtol=0)


def test_with_no_shared_token_the_hybrid_term_is_uld_and_gradients_match():
    student, labels, _ = decoder_batch([VIOLINIST_STUDENT], vocab=6, seed=9)
    teacher = decoder_batch([VIOLINIST_STUDENT], vocab=4, seed=10)[0]
    none = SharedVocabulary(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    a, b = student.clone().requires_grad_(), student.clone().requires_grad_()
    got = ULDLoss(shared_vocabulary=none, unmatched_weight=2.0)(a, teacher, labels, labels)
    expected = ULDLoss(distillation_weight=2.0)(b, teacher, labels, labels)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-6, rtol=0)
    got.loss.backward(), expected.loss.backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=0)


def test_the_hybrid_parts_split_the_mass_and_see_identities():
    p = torch.tensor([[0.5, 0.3, 0.2]])
    q = torch.tensor([[0.2, 0.3, 0.5]])  # the same sorted profile: ULD sees nothing
    assert hybrid_distance(p, q, SharedVocabulary(torch.zeros(0, dtype=torch.long),
                                                  torch.zeros(0, dtype=torch.long))).item() == pytest.approx(0.0)
    shared = everything_shared(3)
    kl = (q * (q / p).log()).sum()
    assert hybrid_distance(p, q, shared, unmatched_weight=0.0).item() == pytest.approx(kl.item())
    assert hybrid_distance(p, p, shared).item() == pytest.approx(0.0, abs=1e-7)
    partial = SharedVocabulary(torch.tensor([0]), torch.tensor([2]))  # token 0 of one side is token 2 of the other
    assert hybrid_distance(p, q, partial).item() == pytest.approx(0.0, abs=1e-7)  # identical where shared and rest


def test_the_hybrid_loss_refuses_what_it_cannot_compute():
    student, labels, _ = decoder_batch([VIOLINIST_STUDENT], vocab=6)
    with pytest.raises(ValueError, match="exact only"):
        ULDLoss(shared_vocabulary=everything_shared(6), top_k=4)
    with pytest.raises(ValueError, match="unmatched_weight must be a finite number >= 0"):
        ULDLoss(unmatched_weight=-1.0)
    with pytest.raises(ValueError, match="names teacher token id 7, but the teacher has 6 logits"):
        ULDLoss(shared_vocabulary=SharedVocabulary(torch.tensor([0]), torch.tensor([7])))(
            student, student, labels, labels)
    from uld.teacher_cache import sorted_answer_rows

    with pytest.raises(ValueError, match="the hybrid loss needs the live teacher"):
        ULDLoss(shared_vocabulary=everything_shared(6)).from_sorted_teacher(
            student, labels, sorted_answer_rows(student, labels, top_k=3))


def test_the_shared_vocabulary_of_two_real_tokenizers_pairs_the_same_texts(pair):
    from uld.tokenizers import token_texts

    student_tok, teacher_tok = pair["student_tokenizer"], pair["teacher_tokenizer"]
    shared = shared_vocabulary(student_tok, teacher_tok)
    assert 0 < len(shared.student) < min(len(student_tok), len(teacher_tok))
    assert token_texts(student_tok, shared.student.tolist()) == token_texts(teacher_tok, shared.teacher.tolist())
    assert " the" in token_texts(student_tok, shared.student.tolist())
    assert not set(shared.student.tolist()) & set(student_tok.all_special_ids)
    assert shared_vocabulary(student_tok, teacher_tok) is shared  # computed once per pair
