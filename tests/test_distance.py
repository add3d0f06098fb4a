"""The closed form against POT's exact solvers, and the properties a distance must have."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uld import uld_distance
from uld.distance import top_k_uld_distance
from uld.ot import (
    VECTOR_KINDS,
    emd_on_values,
    min_over_bijections,
    min_total_variation_over_bijections,
    best_bijection_l1,
    best_bijection_total_variation,
    pad_to_common_size,
    total_variation_identity,
    w1_from_cdfs,
)
from uld.ot import random_probability_vector as random_distribution


distribution_pairs = st.tuples(
    st.integers(0, 2**32 - 1),
    st.integers(1, 60),
    st.integers(1, 60),
    st.sampled_from(VECTOR_KINDS),
)


def as_tensor(array):
    return torch.from_numpy(np.asarray(array, dtype=np.float64))


@settings(max_examples=300, deadline=None)
@given(distribution_pairs)
def test_closed_form_equals_exact_w1_on_values(case):
    seed, size_p, size_q, kind = case
    rng = np.random.default_rng(seed)
    p, q = random_distribution(rng, size_p, kind), random_distribution(rng, size_q, kind)
    closed = uld_distance(as_tensor(p), as_tensor(q))
    assert closed.dtype == torch.float64
    assert abs(closed.item() - emd_on_values(p, q)) <= 1e-9


def test_closed_form_equals_exact_w1_on_a_thousand_seeded_pairs():
    rng = np.random.default_rng(2024)
    worst = 0.0
    for i in range(1000):
        size_p, size_q = rng.integers(1, 200, 2)
        kind = VECTOR_KINDS[i % 4]
        p, q = random_distribution(rng, size_p, kind), random_distribution(rng, size_q, kind)
        worst = max(worst, abs(uld_distance(as_tensor(p), as_tensor(q)).item() - emd_on_values(p, q)))
    assert worst <= 1e-9, worst


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 7), st.integers(1, 7))
def test_closed_form_equals_best_bijection_by_brute_force(seed, size_p, size_q):
    rng = np.random.default_rng(seed)
    p, q = random_distribution(rng, size_p, "dirichlet"), random_distribution(rng, size_q, "peaked")
    closed = uld_distance(as_tensor(p), as_tensor(q)).item()
    assert abs(closed - min_over_bijections(p, q)) <= 1e-12
    assert abs(closed / 2 - min_total_variation_over_bijections(p, q)) <= 1e-12


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 7), st.integers(1, 7), st.sampled_from(VECTOR_KINDS))
def test_assignment_solvers_agree_with_brute_force(seed, size_p, size_q, kind):
    rng = np.random.default_rng(seed)
    p, q = random_distribution(rng, size_p, kind), random_distribution(rng, size_q, "dirichlet")
    assert abs(best_bijection_l1(p, q) - min_over_bijections(p, q)) <= 1e-12
    assert abs(best_bijection_total_variation(p, q) - min_total_variation_over_bijections(p, q)) <= 1e-12


@pytest.mark.parametrize("kind", VECTOR_KINDS)
def test_closed_form_equals_the_best_bijection_at_real_sizes(kind):
    rng = np.random.default_rng(7)
    p, q = random_distribution(rng, 600, kind), random_distribution(rng, 550, "peaked")
    closed = uld_distance(as_tensor(p), as_tensor(q)).item()
    assert abs(closed - best_bijection_l1(p, q)) <= 1e-12
    assert abs(closed / 2 - best_bijection_total_variation(p, q)) <= 1e-12
    assert best_bijection_total_variation(p, q) <= total_variation_identity(p, q) + 1e-12


@settings(max_examples=200, deadline=None)
@given(distribution_pairs)
def test_identity_pairing_never_beats_the_sort(case):
    seed, size_p, size_q, kind = case
    rng = np.random.default_rng(seed)
    p, q = random_distribution(rng, size_p, kind), random_distribution(rng, size_q, kind)
    tv = total_variation_identity(p, q)
    padded_p, padded_q = pad_to_common_size(p, q)
    assert abs(tv - np.abs(padded_p - padded_q).sum() / 2) <= 1e-12
    assert uld_distance(as_tensor(p), as_tensor(q)).item() / 2 <= tv + 1e-12


def test_sort_makes_distributions_on_different_tokens_identical():
    p = torch.tensor([0.7, 0.2, 0.1, 0.0], dtype=torch.float64)
    q = torch.tensor([0.0, 0.1, 0.2, 0.7], dtype=torch.float64)
    assert uld_distance(p, q).item() == 0.0
    assert total_variation_identity(p, q) == pytest.approx(0.8, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(distribution_pairs, st.integers(1, 60))
def test_metric_properties(case, size_r):
    seed, size_p, size_q, kind = case
    rng = np.random.default_rng(seed)
    p, q, r = (as_tensor(random_distribution(rng, n, kind)) for n in (size_p, size_q, size_r))
    assert uld_distance(p, p).item() == 0.0
    assert uld_distance(p, q).item() >= 0.0
    assert uld_distance(p, q).item() == uld_distance(q, p).item()
    assert uld_distance(p, r).item() <= uld_distance(p, q).item() + uld_distance(q, r).item() + 1e-12


@settings(max_examples=200, deadline=None)
@given(distribution_pairs, st.integers(0, 30))
def test_invariant_to_permutations_and_zero_padding(case, extra_zeros):
    seed, size_p, size_q, kind = case
    rng = np.random.default_rng(seed)
    p, q = as_tensor(random_distribution(rng, size_p, kind)), as_tensor(random_distribution(rng, size_q, kind))
    base = uld_distance(p, q).item()
    assert uld_distance(p[torch.from_numpy(rng.permutation(size_p))], q).item() == base
    assert uld_distance(p, q[torch.from_numpy(rng.permutation(size_q))]).item() == base
    padded = torch.cat([p, torch.zeros(extra_zeros, dtype=p.dtype)])
    assert uld_distance(padded, q).item() == pytest.approx(base, abs=1e-15)


def test_batched_rows_broadcast_and_match_row_by_row():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(3, 5, 17, generator=g).softmax(-1)
    q = torch.rand(5, 9, generator=g).softmax(-1)
    batched = uld_distance(p, q)
    assert batched.shape == (3, 5)
    for i in range(3):
        for j in range(5):
            assert batched[i, j].item() == pytest.approx(uld_distance(p[i, j], q[j]).item(), abs=1e-6)


def test_dtypes_float64_stays_float64_half_precision_computes_in_float32():
    p = torch.tensor([0.25, 0.75])
    q = torch.tensor([0.5, 0.5])
    assert uld_distance(p.double(), q.double()).dtype == torch.float64
    for dtype in (torch.bfloat16, torch.float16):
        result = uld_distance(p.to(dtype), q.to(dtype))
        assert result.dtype == torch.float32
        assert result.item() == pytest.approx(0.5)


def test_gradient_is_the_sign_of_the_sorted_difference():
    p = torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([0.2, 0.8], dtype=torch.float64)
    uld_distance(p, q).backward()
    # sorted p = (0.6, 0.3, 0.1) faces (0.8, 0.2, 0): signs -1, +1, +1
    assert p.grad.tolist() == [1.0, -1.0, 1.0]


@pytest.mark.parametrize(
    "p, q, message",
    [
        (torch.tensor([1, 0]), torch.tensor([0.5, 0.5]), "floating-point"),
        ([0.5, 0.5], torch.tensor([0.5, 0.5]), "floating-point"),
        (torch.zeros(3, 0), torch.ones(3, 2), "non-empty last"),
        (torch.tensor(1.0), torch.ones(2), "non-empty last"),
        (torch.tensor([0.5, float("nan")]), torch.ones(2), "p contains NaN or infinite values"),
        (torch.ones(2), torch.tensor([float("inf"), 0.0]), "q contains NaN or infinite values"),
    ],
)
def test_bad_input_is_a_value_error(p, q, message):
    with pytest.raises(ValueError, match=message):
        uld_distance(p, q)
    with pytest.raises(ValueError, match=message):
        top_k_uld_distance(p, q, k=1)


def test_references_reject_bad_input():
    with pytest.raises(ValueError, match="bijections is too slow"):
        min_over_bijections(np.full(9, 1 / 9), np.full(9, 1 / 9))
    with pytest.raises(ValueError, match="bijections is too slow"):
        min_total_variation_over_bijections(np.full(9, 1 / 9), np.full(9, 1 / 9))
    with pytest.raises(ValueError, match="same mass"):
        best_bijection_total_variation([0.5, 0.5], [0.5, 0.2])
    with pytest.raises(ValueError, match="non-finite"):
        best_bijection_l1([np.nan, 1.0], [1.0])
    with pytest.raises(ValueError, match="same mass"):
        total_variation_identity([0.5, 0.5], [0.5, 0.2])
    with pytest.raises(ValueError, match="negative"):
        total_variation_identity([1.5, -0.5], [0.5, 0.5])
    with pytest.raises(ValueError, match="1-D"):
        emd_on_values(np.ones((2, 2)), [1.0])
    with pytest.raises(ValueError, match="non-finite"):
        emd_on_values([np.nan, 1.0], [1.0])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 30), st.integers(1, 30))
def test_w1_from_cdfs_matches_pot(seed, n, m):
    import ot

    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=n), rng.normal(1, 2, size=m)
    a, b = random_distribution(rng, n, "dirichlet"), random_distribution(rng, m, "peaked")
    expected = ot.emd2(a, b, np.abs(x[:, None] - y[None, :]))
    assert abs(w1_from_cdfs(x, a, y, b) - expected) <= 1e-9
    assert abs(ot.wasserstein_1d(x, y, a, b, p=1) - expected) <= 1e-9


def test_random_vectors_reject_unknown_kinds():
    with pytest.raises(ValueError, match="unknown kind"):
        random_distribution(np.random.default_rng(0), 3, "flat")
