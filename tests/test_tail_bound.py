"""The histogram bound on the top-k error: always above the actual error, never above the
simple 2 min(P, Q), and far tighter than it on heavy-tailed rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uld import ULDLoss, uld_distance
from uld.distance import top_k_uld_distance
from uld.ot import VECTOR_KINDS
from uld.ot import random_probability_vector as random_distribution
from uld.tail_bound import REFINE_ABOVE, compare_tails


def simple_bound(p, q, k):
    tail = [x.sort(-1, descending=True).values[..., k:].sum(-1) for x in (p, q)]
    return 2 * torch.minimum(*tail)


def zipf(rows, vocab, exponent, generator, noise=0.3):
    ranks = torch.arange(1, vocab + 1, dtype=torch.float64)
    logits = -exponent * ranks.log() + noise * torch.randn(rows, vocab, generator=generator, dtype=torch.float64)
    order = torch.rand(rows, vocab, generator=generator).argsort(-1)  # tokens in any order
    return logits.gather(-1, order).softmax(-1)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 300), st.integers(1, 300), st.sampled_from(VECTOR_KINDS),
       st.integers(1, 40))
def test_the_bound_covers_the_error_and_never_exceeds_the_simple_one(seed, size_p, size_q, kind, k):
    rng = np.random.default_rng(seed)
    p = torch.from_numpy(random_distribution(rng, size_p, kind))
    q = torch.from_numpy(random_distribution(rng, size_q, kind))
    approx, bound = top_k_uld_distance(p, q, k)
    error = uld_distance(p, q) - approx
    assert -1e-12 <= error <= bound + 1e-12
    assert bound <= simple_bound(p, q, k) + 1e-15


@pytest.mark.parametrize("seed", range(10))
def test_ties_zeros_and_duplicated_values_stay_covered(seed):
    g = torch.Generator().manual_seed(seed)
    values = torch.tensor([0.0, 1e-9, 1e-4, 1e-3, 1e-2]).double()
    p = values[torch.randint(0, 5, (4, 500), generator=g)] + 1e-12
    q = values[torch.randint(0, 5, (4, 700), generator=g)]
    q[:, 0] = 1.0  # rows with ties at the cut, zeros and repeated values
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    for k in (1, 3, 50, 499, 500, 800):
        approx, bound = top_k_uld_distance(p, q, k)
        assert ((uld_distance(p, q) - approx) <= bound + 1e-12).all()


@pytest.mark.parametrize("exponents", [(0.9, 1.0), (1.0, 1.2), (1.1, 1.1)])
def test_on_heavy_tailed_rows_it_is_ten_times_tighter_than_the_simple_bound(exponents):
    g = torch.Generator().manual_seed(0)
    p, q = zipf(8, 20_000, exponents[0], g), zipf(8, 12_000, exponents[1], g)
    approx, bound = top_k_uld_distance(p, q, 256)
    error = uld_distance(p, q) - approx
    simple = simple_bound(p, q, 256)
    assert (error <= bound + 1e-12).all()
    assert (bound * 10 <= simple).all()
    assert bound.mean() <= 6 * error.mean() + 1e-6  # a few times the actual error (the simple one: 40 to 1000)


def test_confident_rows_get_tail_masses_precise_to_float64_and_a_bound_no_looser():
    g = torch.Generator().manual_seed(1)
    p, q = zipf(4, 3_000, 4.0, g), zipf(4, 2_000, 4.0, g)  # confident: tails of about 1e-7
    (p_head, p_index), (q_head, q_index) = p.topk(64, -1), q.topk(64, -1)
    tails = compare_tails(p, q, p_head, q_head, p_index, q_index)
    for mass, x in ((tails.p_mass, p), (tails.q_mass, q)):
        torch.testing.assert_close(mass, x.sort(-1, descending=True).values[:, 64:].sum(-1), rtol=1e-12, atol=0)
    approx, bound = top_k_uld_distance(p, q, 64)
    assert ((uld_distance(p, q) - approx) <= bound + 1e-15).all()
    assert (bound <= simple_bound(p, q, 64) * (1 + 1e-9)).all()


def test_rows_whose_simple_bound_is_small_keep_it():
    g = torch.Generator().manual_seed(3)
    p = torch.cat([zipf(3, 3_000, 1.2, g), zipf(3, 3_000, 3.0, g)])  # heavy tails, then light ones
    q = torch.cat([zipf(3, 2_000, 1.3, g), zipf(3, 2_000, 3.0, g)])
    simple = simple_bound(p, q, 64)
    approx, bound = top_k_uld_distance(p, q, 64)
    small = simple <= REFINE_ABOVE
    assert small.any() and (~small).any()
    torch.testing.assert_close(bound[small], simple[small], rtol=1e-9, atol=1e-18)
    assert (bound[~small] < simple[~small]).all()


@pytest.mark.parametrize("seed", range(5))
def test_float32_rows_are_binned_by_their_bits_and_stay_covered(seed):
    g = torch.Generator().manual_seed(seed)
    p, q = zipf(6, 5_000, 1.0, g).float(), zipf(6, 4_000, 1.1, g).float()
    approx, bound = top_k_uld_distance(p, q, 32)
    assert approx.dtype == bound.dtype == torch.float32
    exact = uld_distance(p.double(), q.double())
    assert ((exact - approx.double()) <= bound.double() + 1e-6).all()
    assert (bound * 10 <= simple_bound(p.double(), q.double(), 32).float()).all()


def test_the_loss_reports_the_tightened_bound_live_and_it_still_covers_its_error():
    g = torch.Generator().manual_seed(2)
    student = torch.randn(2, 12, 3_000, generator=g, dtype=torch.float64)  # flat logits: heavy tails
    teacher = torch.randn(2, 10, 2_000, generator=g, dtype=torch.float64) * 1.5
    labels = torch.full((2, 12), -100)
    labels[:, 4:11] = 5
    teacher_labels = torch.full((2, 10), -100)
    teacher_labels[:, 2:9] = 7
    exact = ULDLoss(1.5)(student, teacher, labels, teacher_labels)
    approx = ULDLoss(1.5, top_k=32)(student, teacher, labels, teacher_labels)
    error = exact.distillation.item() - approx.distillation.item()
    p = student[:, 3:9].softmax(-1).reshape(-1, 3_000)
    q = teacher[:, 1:7].softmax(-1).reshape(-1, 2_000)
    simple = 1.5 * simple_bound(p, q, 32).mean().item()
    assert 0 <= error <= approx.distillation_error_bound.item() <= simple / 3


def test_rows_broadcast_as_in_uld_distance():
    g = torch.Generator().manual_seed(4)
    p, q = zipf(5, 400, 1.0, g), zipf(1, 300, 1.1, g)[0]  # five student rows against one teacher row
    approx, bound = top_k_uld_distance(p, q, 8)
    each = [top_k_uld_distance(row, q, 8) for row in p]
    torch.testing.assert_close(approx, torch.stack([a for a, _ in each]))
    torch.testing.assert_close(bound, torch.stack([b for _, b in each]))
    assert ((uld_distance(p, q) - approx) <= bound + 1e-12).all()
