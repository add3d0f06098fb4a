"""`ULDLoss` against the plain loop reference: values, gradients, edge cases, errors."""

from __future__ import annotations

import pytest
import torch

from batches import random_case, random_labels, zipf_logits
from reference import reference_loss
from uld import ULDLoss, ULDOutput, uld_distance
from uld.distance import top_k_uld_distance


def with_grad(inputs):
    inputs = dict(inputs)
    for side in ("student_logits", "teacher_logits"):
        inputs[side] = inputs[side].detach().clone().requires_grad_(True)
    return inputs


@pytest.mark.parametrize("seed", range(120))
def test_values_and_gradients_match_the_loop_reference(seed):
    inputs, options = random_case(seed)
    ours_in, ref_in = with_grad(inputs), with_grad(inputs)
    out = ULDLoss(**options)(**ours_in)
    expected = reference_loss(**ref_in, **options)
    if torch.isnan(expected[1]):  # no label at all: the reference's mean is 0/0, ours is 0
        assert out.crossentropy.item() == 0.0
        expected = (expected[2], torch.zeros(()), expected[2])
    for got, want in zip(out[:3], expected):
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-12, atol=1e-12)
    (out.loss * 1.7).backward()
    (expected[0] * 1.7).backward()
    for side in ("student_logits", "teacher_logits"):
        zeros = torch.zeros_like(inputs[side])  # a side outside the graph gets no gradient at all
        got, want = ours_in[side].grad, ref_in[side].grad
        torch.testing.assert_close(zeros if got is None else got, zeros if want is None else want, rtol=1e-10, atol=1e-12)
    assert out.distillation_error_bound.item() == 0.0


@pytest.mark.parametrize("top_k", [None, 3])
@pytest.mark.parametrize("seed", range(6))
def test_gradcheck_in_float64(seed, top_k):
    inputs, options = random_case(1000 + seed, max_vocab=7, max_batch=2)
    labels = {k: v for k, v in inputs.items() if k not in ("student_logits", "teacher_logits")}
    loss_fn = ULDLoss(**options, top_k=top_k)

    def total(student_logits, teacher_logits):
        return loss_fn(student_logits, teacher_logits, **labels).loss

    logits = (inputs["student_logits"].requires_grad_(), inputs["teacher_logits"].requires_grad_())
    assert torch.autograd.gradcheck(total, logits, eps=1e-6, atol=1e-6)


def test_worked_example_by_hand():
    student = torch.log(torch.tensor([[[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]]]))
    teacher = torch.log(torch.tensor([[[0.9, 0.1], [0.5, 0.5]]]))
    student_labels = torch.tensor([[-100, 2, 0]])  # decoder: rows 0 and 1 predict the answer
    teacher_labels = torch.tensor([[4, 7]])  # encoder-decoder: rows 0 and 1
    out = ULDLoss(distillation_weight=2.0)(
        student, teacher, student_labels, teacher_labels, teacher_is_encoder_decoder=True
    )
    row_0 = abs(0.5 - 0.9) + abs(0.3 - 0.1) + 0.2
    row_1 = abs(0.6 - 0.5) + abs(0.3 - 0.5) + 0.1
    assert out.distillation.item() == pytest.approx(2.0 * (row_0 + row_1) / 2, abs=1e-6)
    ce = -(torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.6))) / 2
    assert out.crossentropy.item() == pytest.approx(ce.item(), abs=1e-6)
    assert out.loss.item() == pytest.approx(out.crossentropy.item() + out.distillation.item())
    assert isinstance(out, ULDOutput)


def test_alignment_starts_at_the_first_answer_token_and_cuts_to_the_shorter_answer():
    g = torch.Generator().manual_seed(3)
    student = torch.randn(1, 9, 11, generator=g, dtype=torch.float64)
    teacher = torch.randn(1, 6, 5, generator=g, dtype=torch.float64)
    student_labels = torch.tensor([[-100] * 4 + [1, 2, 3, 4, -100]])  # answer rows 3..6
    teacher_labels = torch.tensor([[-100, 1, 2, -100, -100, -100]])  # answer rows 0..1
    out = ULDLoss(crossentropy_weight=0.0)(student, teacher, student_labels, teacher_labels)
    rows = uld_distance(student[0, 3:5].softmax(-1), teacher[0, 0:2].softmax(-1))
    assert out.distillation.item() == pytest.approx(rows.mean().item(), abs=1e-14)


def test_eos_skipping_drops_the_last_answer_position_from_distillation_only():
    g = torch.Generator().manual_seed(4)
    student = torch.randn(1, 6, 8, generator=g, dtype=torch.float64)
    teacher = torch.randn(1, 6, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([[-100, -100, 5, 6, 7, 1]])  # answer rows 1..4, EOS predicted by row 4
    kept = ULDLoss()(student, teacher, labels, labels)
    skipped = ULDLoss(skip_student_eos=True)(student, teacher, labels, labels)
    per_row = uld_distance(student[0, 1:5].softmax(-1), teacher[0, 1:5].softmax(-1))
    assert kept.distillation.item() == pytest.approx(per_row.mean().item(), abs=1e-14)
    assert skipped.distillation.item() == pytest.approx(per_row[:3].mean().item(), abs=1e-14)
    assert skipped.crossentropy.item() == kept.crossentropy.item()


def test_samples_without_aligned_positions_contribute_nothing():
    g = torch.Generator().manual_seed(8)
    student = torch.randn(3, 6, 10, generator=g, dtype=torch.float64)
    teacher = torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    student_labels = torch.tensor([[-100, -100, 4, 5, 6, 1]] * 3)
    teacher_labels = torch.tensor([[3, 2, 1, -100, -100], [-100] * 5, [6, 1, -100, -100, -100]])
    loss_fn = ULDLoss(crossentropy_weight=0.0)
    full = loss_fn(student, teacher, student_labels, teacher_labels, teacher_is_encoder_decoder=True)
    keep = torch.tensor([0, 2])
    rest = loss_fn(student[keep], teacher[keep], student_labels[keep], teacher_labels[keep], teacher_is_encoder_decoder=True)
    assert full.distillation.item() > 0
    assert full.distillation.item() == pytest.approx(rest.distillation.item(), abs=1e-14)


def test_a_batch_without_answers_gives_a_zero_that_back_propagates():
    student = torch.randn(2, 5, 7, requires_grad=True)
    teacher = torch.randn(2, 4, 9)
    labels_s = torch.full((2, 5), -100)
    labels_t = torch.tensor([[-100, 3, 4, -100], [-100, -100, -100, -100]])
    for top_k in (None, 3):
        out = ULDLoss(top_k=top_k)(student, teacher, labels_s, labels_t)
        assert out.loss.item() == 0.0 and out.distillation.item() == 0.0 and out.crossentropy.item() == 0.0
        out.loss.backward()
        assert student.grad is not None and torch.equal(student.grad, torch.zeros_like(student))
        student.grad = None


def test_half_precision_inputs_compute_in_float32():
    inputs, options = random_case(11, dtype=torch.float32)
    for dtype in (torch.bfloat16, torch.float16):
        low = {k: (v.to(dtype) if k.endswith("logits") else v) for k, v in inputs.items()}
        as_float = {k: (v.float() if k.endswith("logits") else v) for k, v in low.items()}
        low["student_logits"].requires_grad_(True)
        out = ULDLoss(**options)(**low)
        expected = ULDLoss(**options)(**as_float)
        assert out.loss.dtype == torch.float32
        torch.testing.assert_close(out.loss, expected.loss)
        out.loss.backward()
        assert low["student_logits"].grad.dtype == dtype
        assert torch.isfinite(low["student_logits"].grad.float()).all()


@pytest.mark.parametrize("top_k", [None, 4])
def test_extreme_logits_give_finite_losses_and_gradients(top_k):
    g = torch.Generator().manual_seed(5)
    student = (1e4 * torch.randn(3, 8, 30, generator=g)).requires_grad_(True)
    teacher = 1e4 * torch.randn(3, 6, 20, generator=g)
    teacher[0, :, 3] = -float("inf")  # masked tokens are legal
    labels_s = random_labels(g, 3, 8, 30, is_encoder_decoder=False)
    labels_s[:, -1] = 2
    labels_t = random_labels(g, 3, 6, 20, is_encoder_decoder=True)
    labels_t[:, 0] = 1
    out = ULDLoss(top_k=top_k, distillation_weight=1.5)(student, teacher, labels_s, labels_t, teacher_is_encoder_decoder=True)
    assert all(torch.isfinite(value) for value in out)
    out.loss.backward()
    assert torch.isfinite(student.grad).all()


def test_teacher_gradient_flows_only_when_asked():
    inputs, options = random_case(21)
    inputs = dict(inputs)
    inputs["student_logits"] = inputs["student_logits"].requires_grad_(True)
    out = ULDLoss(**options)(**inputs)
    out.loss.backward()
    assert inputs["teacher_logits"].grad is None


def test_exact_mode_matches_the_composed_closed_form_in_float32_at_scale():
    g = torch.Generator().manual_seed(6)
    student = zipf_logits(g, 5, 5000).unsqueeze(0)
    teacher = zipf_logits(g, 5, 3200, exponent=0.9).unsqueeze(0)
    labels = torch.zeros(1, 5, dtype=torch.long)  # encoder-decoder: every position is an answer
    out = ULDLoss(teacher_temperature=2.0)(student, teacher, labels, labels, True, True)
    composed = uld_distance(student[0].softmax(-1), (teacher[0] / 2.0).softmax(-1)).mean()
    torch.testing.assert_close(out.distillation, composed, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(40))
def test_top_k_bound_holds_and_approximation_is_a_lower_bound(seed):
    g = torch.Generator().manual_seed(seed)
    rows = 6
    student_vocab = int(torch.randint(2, 400, (1,), generator=g))
    teacher_vocab = int(torch.randint(2, 400, (1,), generator=g))
    noise = float(torch.rand(1, generator=g)) * 3
    student = zipf_logits(g, rows, student_vocab, noise=noise).double()
    teacher = zipf_logits(g, rows, teacher_vocab, exponent=0.7, noise=noise).double()
    k = int(torch.randint(1, 64, (1,), generator=g))
    approx, bound = top_k_uld_distance(student.softmax(-1), teacher.softmax(-1), k)
    exact = uld_distance(student.softmax(-1), teacher.softmax(-1))
    assert (approx <= exact + 1e-12).all()
    assert (exact - approx <= bound + 1e-12).all()
    if k >= max(student_vocab, teacher_vocab):
        torch.testing.assert_close(approx, exact, rtol=1e-12, atol=1e-12)
        assert bound.max().item() == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("seed", range(20))
def test_top_k_loss_reports_a_bound_that_covers_its_error(seed):
    inputs, options = random_case(500 + seed, max_vocab=60)
    exact = ULDLoss(**options)(**inputs)
    approx = ULDLoss(**options, top_k=3)(**inputs)
    assert abs(approx.distillation.item() - exact.distillation.item()) <= approx.distillation_error_bound.item() + 1e-12
    assert approx.crossentropy.item() == exact.crossentropy.item()
    wide = ULDLoss(**options, top_k=60)(**inputs)
    torch.testing.assert_close(wide.distillation, exact.distillation, rtol=1e-12, atol=1e-12)
    assert wide.distillation_error_bound.item() == 0.0


def test_top_k_gradients_are_finite_and_reach_the_student():
    inputs, options = random_case(31, max_vocab=60)
    inputs = with_grad(inputs)
    options["distillation_weight"], options["crossentropy_weight"] = 1.0, 0.0
    out = ULDLoss(**options, top_k=5)(**inputs)
    out.loss.backward()
    assert torch.isfinite(inputs["student_logits"].grad).all()


def call_with(**changes):
    inputs = dict(
        student_logits=torch.zeros(2, 4, 5),
        teacher_logits=torch.zeros(2, 3, 6),
        student_labels=torch.full((2, 4), -100),
        teacher_labels=torch.full((2, 3), -100),
    )
    inputs.update(changes)
    return ULDLoss()(**inputs)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(teacher_logits=torch.zeros(3, 3, 6), teacher_labels=torch.full((3, 3), -100)), "batch sizes differ"),
        (dict(student_labels=torch.full((2, 5), -100)), r"student_labels shape \(2, 5\) does not match"),
        (dict(teacher_labels=torch.full((1, 3), -100)), "teacher_labels shape"),
        (dict(student_logits=torch.zeros(2, 4)), r"student_logits must be a float tensor \[batch, time, vocab\]"),
        (dict(teacher_logits=torch.zeros(2, 3, 6, dtype=torch.long)), "teacher_logits must be a float tensor"),
        (dict(student_labels=torch.zeros(2, 4)), "student_labels must be an integer tensor"),
        (dict(student_labels=torch.full((2, 4), 5)), r"token ids in \[0, 5\)"),
        (dict(student_logits=torch.full((2, 4, 5), float("nan")), student_labels=torch.ones(2, 4, dtype=torch.long),
              teacher_labels=torch.ones(2, 3, dtype=torch.long)), "student logits contain NaN"),
    ],
)
def test_bad_calls_raise_value_errors_naming_the_problem(changes, message):
    with pytest.raises(ValueError, match=message):
        call_with(**changes)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(student_temperature=0.0), "student_temperature must be a positive"),
        (dict(teacher_temperature=-1.0), "teacher_temperature must be a positive"),
        (dict(teacher_temperature=float("nan")), "teacher_temperature must be a positive"),
        (dict(top_k=0), "top_k must be None or an integer >= 1"),
        (dict(top_k=2.5), "top_k must be None or an integer >= 1"),
        (dict(distillation_weight=float("inf")), "distillation_weight must be a finite"),
    ],
)
def test_bad_options_raise_value_errors(options, message):
    with pytest.raises(ValueError, match=message):
        ULDLoss(**options)


@pytest.mark.parametrize("seed", range(30))
def test_alignment_lists_the_pairs_the_reference_compares(seed):
    inputs, options = random_case(seed)
    loss_fn = ULDLoss(**options)
    pairs = loss_fn.alignment(inputs["student_labels"], inputs["teacher_labels"],
                              inputs["student_is_encoder_decoder"], inputs["teacher_is_encoder_decoder"])
    for b, sample_pairs in enumerate(pairs):
        first = {}
        sizes = {}
        for side in ("student", "teacher"):
            labels = inputs[f"{side}_labels"][b].tolist()
            enc_dec = inputs[f"{side}_is_encoder_decoder"]
            predicted = [t for t, label in enumerate(labels) if label != -100 and (enc_dec or t >= 1)]
            sizes[side] = max(0, len(predicted) - (1 if options[f"skip_{side}_eos"] and predicted else 0))
            first[side] = (predicted[0] if enc_dec else predicted[0] - 1) if predicted else None
        assert len(sample_pairs) == min(sizes.values())
        for j, (s, t) in enumerate(sample_pairs):
            assert (s, t) == (first["student"] + j, first["teacher"] + j)


def reference_token_kl(inputs, options):
    """Loop reference for TokenKLLoss's distillation term (per-sample mean, then batch mean)."""
    per_sample = []
    for b in range(inputs["student_logits"].shape[0]):
        rows = {}
        for side in ("student", "teacher"):
            labels = inputs[f"{side}_labels"][b].tolist()
            enc_dec = inputs[f"{side}_is_encoder_decoder"]
            predicted = [t for t, label in enumerate(labels) if label != -100 and (enc_dec or t >= 1)]
            size = max(0, len(predicted) - (1 if options[f"skip_{side}_eos"] and predicted else 0))
            first = (predicted[0] if enc_dec else predicted[0] - 1) if predicted else 0
            rows[side] = inputs[f"{side}_logits"][b, first:first + size] / options[f"{side}_temperature"]
        n = min(len(rows["student"]), len(rows["teacher"]))
        if n:
            kl = torch.nn.functional.kl_div(rows["student"][:n].log_softmax(-1), rows["teacher"][:n].log_softmax(-1),
                                            log_target=True, reduction="none").sum(-1)
            per_sample.append(kl.mean())
    return options["distillation_weight"] * torch.stack(per_sample).mean() if per_sample else torch.zeros(())


@pytest.mark.parametrize("seed", range(30))
def test_token_kl_matches_its_loop_reference_and_shares_the_alignment(seed):
    from uld import TokenKLLoss

    inputs, options = random_case(2000 + seed)
    vocab = inputs["student_logits"].shape[-1]
    g = torch.Generator().manual_seed(seed)
    inputs["teacher_logits"] = torch.randn(*inputs["teacher_logits"].shape[:2], vocab, generator=g, dtype=torch.float64)
    inputs["teacher_labels"] = inputs["teacher_labels"].clamp(max=vocab - 1).masked_fill(inputs["teacher_labels"] == -100, -100)
    out = TokenKLLoss(**options)(**inputs)
    torch.testing.assert_close(out.distillation, reference_token_kl(inputs, options).to(out.distillation.dtype),
                               rtol=1e-10, atol=1e-12)
    assert out.crossentropy.item() == pytest.approx(ULDLoss(**options)(**inputs).crossentropy.item(), abs=1e-12)
    assert out.distillation_error_bound.item() == 0.0


def test_token_kl_is_zero_on_identical_distributions_and_refuses_two_vocabularies():
    from uld import TokenKLLoss

    logits = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[-100, 3, 4, 1, -100], [-100, -100, 2, 2, 1]])
    out = TokenKLLoss(crossentropy_weight=0.0)(logits, logits.detach(), labels, labels)
    assert abs(out.distillation.item()) < 1e-12
    out.loss.backward()
    assert logits.grad.abs().max().item() < 1e-12
    with pytest.raises(ValueError, match="one shared vocabulary"):
        TokenKLLoss()(torch.zeros(1, 3, 5), torch.zeros(1, 3, 6), labels[:1, :3], labels[:1, :3])


@pytest.mark.parametrize("seed", range(10))
def test_a_zero_distillation_weight_matches_the_reference_too(seed):
    inputs, options = random_case(3000 + seed)
    options["distillation_weight"] = 0.0
    ours_in, ref_in = with_grad(inputs), with_grad(inputs)
    out = ULDLoss(**options)(**ours_in)
    expected = reference_loss(**ref_in, **options)
    assert out.distillation.item() == 0.0 and out.distillation_error_bound.item() == 0.0
    out.loss.backward()
    if torch.isnan(expected[1]):  # no label at all: the reference's mean is 0/0, ours is a zero loss
        assert out.loss.item() == 0.0 and not ours_in["student_logits"].grad.any()
        return
    expected[0].backward()
    torch.testing.assert_close(out.loss, expected[0].detach().to(out.loss.dtype), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours_in["student_logits"].grad, ref_in["student_logits"].grad, rtol=1e-10, atol=1e-12)
