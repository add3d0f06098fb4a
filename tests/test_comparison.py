"""Paired comparisons on constructed cases: what must be found, and what must not be called."""

from __future__ import annotations

import numpy as np
import pytest

from uld.comparison import paired_difference


def _scores(seeds=3, questions=300, seed=0):
    return np.random.default_rng(seed).choice([0.0, 50.0, 100.0], size=(seeds, questions))


def test_identical_seeds_never_give_a_verdict_even_with_a_shift():
    b = np.tile(_scores(1), (3, 1))
    a = b.copy()
    a[:, :12] = np.where(b[:, :12] < 100, 100.0, b[:, :12])  # a wins a few questions, identically on every seed
    found = paired_difference(a, b)
    assert found.difference > 0 and found.low > 0  # the interval alone would call it
    assert found.verdict == "inconclusive" and "same scores" in found.reason


@pytest.mark.parametrize("shift, verdict", [(8.0, "above"), (-8.0, "below")])
def test_a_known_shift_is_found_with_its_sign(shift, verdict):
    b = _scores()
    noise = np.random.default_rng(1).normal(0, 20, size=b.shape)
    a = b + shift + noise
    found = paired_difference(a, b)
    assert found.verdict == verdict
    assert found.low < shift < found.high


def test_no_shift_under_noise_is_inconclusive():
    b = _scores()
    a = _scores(seed=5)  # same distribution, other draws
    found = paired_difference(a, b)
    assert found.verdict == "inconclusive" and found.low < 0 < found.high


def test_a_deterministic_baseline_pairs_with_every_seed():
    raw = _scores(1)
    trained = raw + 10 + np.random.default_rng(2).normal(0, 5, size=(3, raw.shape[1]))
    found = paired_difference(trained, raw)
    assert found.verdict == "above" and found.seeds == (3, 1)


def test_the_interval_is_resampled_over_questions():
    b = np.zeros((2, 100))
    a = np.zeros((2, 100))
    a[0, :5], a[1, :5] = 100.0, 60.0  # five questions carry the whole difference
    found = paired_difference(a, b)
    assert found.difference == pytest.approx(4.0)
    assert found.high - found.low > 4  # wide: it rests on five questions


def test_describe_states_the_verdict_and_interval():
    b = _scores()
    text = paired_difference(b + 8 + np.random.default_rng(1).normal(0, 20, b.shape), b).describe("uld", "seqkd")
    assert text.startswith("uld is above seqkd: +") and "95% interval [" in text


@pytest.mark.parametrize("a, b, message", [
    (np.zeros((2, 10)), np.zeros((2, 11)), "same questions"),
    (np.full((2, 10), np.nan), np.zeros((2, 10)), "not a finite number"),
    (np.zeros((2, 0)), np.zeros((2, 0)), r"\[seeds, questions\]"),
])
def test_bad_input_is_refused(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_difference(a, b)
