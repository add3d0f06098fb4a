"""Exact optimal-transport references for the ULD closed form, computed with POT.

The closed form `uld.uld_distance` is never trusted on its own: each function here
solves, exactly and slowly, a problem the closed form claims to equal (or, for the last
one, a problem it does *not* solve). All take 1-D probability vectors of any lengths,
pad the shorter with zeros to the common size ``V`` and compute in float64.

1. `emd_on_values`: ``V * W1(mu_p, mu_q)`` where ``mu_p`` puts mass ``1/V`` on each
   probability *value* of ``p`` (a point on the real line), cost ``|x - y|``, solved as
   a linear program by ``ot.emd2``. Equals ``uld_distance(p, q)``.
2. `min_over_bijections`: ``min_sigma sum_i |p_i - q_sigma(i)|`` over all ``V!``
   pairings of the two padded vocabularies, by brute force (``V <= 8``);
   `best_bijection_l1` solves the same assignment problem exactly at any size (SciPy's
   ``linear_sum_assignment``). Both equal ``uld_distance(p, q)``.
   `min_total_variation_over_bijections` (brute force) and
   `best_bijection_total_variation` (assignment, then ``ot.emd2`` with the 0/1 cost)
   find the smallest total variation reachable by relabelling one vocabulary another
   way: by maximising the overlap ``sum_i min(p_i, q_sigma(i))``, not by halving an L1
   sum. It equals ``uld_distance(p, q) / 2``.
3. `total_variation_identity`: the transport cost between ``p`` and ``q`` as measures on
   one shared vocabulary (token ``i`` of ``p`` is token ``i`` of ``q``) with the 0/1
   cost, by ``ot.emd2``: the total variation ``sum_i |p_i - q_i| / 2``. Without the sort
   this is what matching token ids would give; it is never below ``uld_distance / 2``.

>>> p, q = [0.7, 0.2, 0.1], [0.1, 0.9]
>>> round(emd_on_values(p, q), 12), round(min_over_bijections(p, q), 12)
(0.4, 0.4)
>>> round(total_variation_identity(p, q), 12)   # token 0 is likely for p, not for q
0.7
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import ot
from scipy.optimize import linear_sum_assignment

__all__ = [
    "random_probability_vector",
    "w1_from_cdfs",
    "plan_crosses",
    "pad_to_common_size",
    "emd_on_values",
    "min_over_bijections",
    "min_total_variation_over_bijections",
    "best_bijection_l1",
    "best_bijection_total_variation",
    "total_variation_identity",
    "MAX_BRUTE_FORCE_SIZE",
]

# 8! = 40,320 pairings: brute force stays under a second.
MAX_BRUTE_FORCE_SIZE = 8


def pad_to_common_size(p, q) -> tuple[np.ndarray, np.ndarray]:
    """Two 1-D vectors as float64 arrays, the shorter zero-padded to the longer's size.

    >>> pad_to_common_size([0.5, 0.5], [1.0])
    (array([0.5, 0.5]), array([1., 0.]))
    """
    p, q = _as_vector("p", p), _as_vector("q", q)
    size = max(p.size, q.size)
    return np.pad(p, (0, size - p.size)), np.pad(q, (0, size - q.size))


def emd_on_values(p, q) -> float:
    """``V`` times the exact W1 between the uniform measures on the values of ``p`` and ``q``.

    Solved by POT's network simplex on the full ``V x V`` cost matrix ``|p_i - q_j|``:
    ``O(V^3)``, so keep ``V`` to a few thousand.

    >>> round(emd_on_values([1.0, 0.0], [0.5, 0.5]), 12)
    1.0
    """
    p, q = pad_to_common_size(p, q)
    size = p.size
    weights = np.full(size, 1.0 / size)
    cost = np.abs(p[:, None] - q[None, :])
    return size * float(ot.emd2(weights, weights, cost, numItermax=max(100_000, 50 * size * size)))


def min_over_bijections(p, q) -> float:
    """``min over permutations sigma of sum_i |p_i - q_sigma(i)|`` by trying them all.

    Only for tiny vocabularies (padded size <= `MAX_BRUTE_FORCE_SIZE`).

    >>> round(min_over_bijections([0.1, 0.9], [0.8, 0.2]), 12)
    0.2
    """
    p, q = _padded_for_brute_force(p, q)
    return min(float(np.abs(p - q[list(sigma)]).sum()) for sigma in itertools.permutations(range(p.size)))


def min_total_variation_over_bijections(p, q) -> float:
    """Smallest total variation between ``p`` and ``q`` over all relabellings of ``q``.

    By brute force on the overlap, ``TV = 1 - max_sigma sum_i min(p_i, q_sigma(i))``
    (the mass that can stay put), not as half of `min_over_bijections`.

    >>> round(min_total_variation_over_bijections([0.1, 0.9], [0.8, 0.2]), 12)
    0.1
    """
    p, q = _padded_for_brute_force(p, q)
    overlap = max(float(np.minimum(p, q[list(sigma)]).sum()) for sigma in itertools.permutations(range(p.size)))
    return 1.0 - overlap


def best_bijection_l1(p, q) -> float:
    """``min over bijections sigma of sum_i |p_i - q_sigma(i)|``, exactly, at any size.

    The assignment problem on the ``V x V`` cost ``|p_i - q_j|``, solved by SciPy's
    ``linear_sum_assignment`` (a shortest-augmenting-path method, ``O(V^3)``): a
    combinatorial solver that knows nothing of sorting or of transport plans.

    >>> round(best_bijection_l1([0.1, 0.9], [0.8, 0.2]), 12)
    0.2
    """
    p, q = pad_to_common_size(p, q)
    rows, columns = linear_sum_assignment(np.abs(p[:, None] - q[None, :]))
    return float(np.abs(p[rows] - q[columns]).sum())


def best_bijection_total_variation(p, q) -> float:
    """Smallest total variation between ``p`` and ``q`` relabelled, exactly, at any size.

    The relabelling that keeps the most mass in place (maximum overlap
    ``sum_i min(p_i, q_sigma(i))``, an assignment problem), then the 0/1-cost transport
    between ``p`` and ``q`` so relabelled, by ``ot.emd2`` (`total_variation_identity`).

    >>> round(best_bijection_total_variation([0.1, 0.9], [0.8, 0.2]), 12)
    0.1
    """
    p, q = pad_to_common_size(p, q)
    rows, columns = linear_sum_assignment(np.minimum(p[:, None], q[None, :]), maximize=True)
    relabelled = np.empty_like(q)
    relabelled[rows] = q[columns]
    return total_variation_identity(p, relabelled)


def total_variation_identity(p, q) -> float:
    """Exact 0/1-cost transport between ``p`` and ``q`` on one shared vocabulary (``ot.emd2``).

    Moving mass between different tokens costs 1, keeping it on the same token costs 0,
    so the optimum is the total variation ``sum_i |p_i - q_i| / 2`` under the identity
    pairing of token ids.

    >>> round(total_variation_identity([1.0, 0.0], [0.0, 1.0]), 12)
    1.0
    """
    p, q = pad_to_common_size(p, q)
    for name, vector in (("p", p), ("q", q)):
        if (vector < 0).any():
            raise ValueError(f"{name} has negative entries: not a probability vector")
    if not math.isclose(p.sum(), q.sum(), rel_tol=1e-9, abs_tol=1e-12):
        raise ValueError(f"p and q must carry the same mass to be transported, got {p.sum()} and {q.sum()}")
    cost = 1.0 - np.eye(p.size)
    return float(ot.emd2(p, q, cost, numItermax=max(100_000, 50 * p.size * p.size)))


def w1_from_cdfs(x, a, y, b) -> float:
    """W1 between ``sum_i a_i delta(x_i)`` and ``sum_j b_j delta(y_j)`` on the real line.

    On the line, ``W1 = integral |F_a(t) - F_b(t)| dt``: the area between the two
    cumulative distribution functions, a sum over the merged breakpoints.

    >>> w1_from_cdfs([0.0], [1.0], [2.0], [1.0])
    2.0
    """
    x, a, y, b = (_as_vector(name, v) for name, v in (("x", x), ("a", a), ("y", y), ("b", b)))
    if x.size != a.size or y.size != b.size:
        raise ValueError("each support needs one weight per point")
    points = np.concatenate([x, y])
    weights = np.concatenate([a, -b])
    order = np.argsort(points, kind="stable")
    gaps = np.diff(points[order])
    cdf_difference = np.cumsum(weights[order])[:-1]
    return float(np.sum(np.abs(cdf_difference) * gaps))


def plan_crosses(plan, tolerance: float = 1e-15) -> bool:
    """Whether a plan between sorted points moves mass ``i -> j`` and ``i' -> j'`` with
    ``i < i'`` but ``j > j'`` (two arrows that cross).

    >>> plan_crosses(np.eye(2)), plan_crosses(np.eye(2)[::-1])
    (False, True)
    """
    highest_column_of_earlier_rows = -1
    for row in np.asarray(plan) > tolerance:
        columns = np.flatnonzero(row)
        if columns.size == 0:
            continue
        if columns[0] < highest_column_of_earlier_rows:
            return True
        highest_column_of_earlier_rows = max(highest_column_of_earlier_rows, columns[-1])
    return False


def random_probability_vector(rng: np.random.Generator, size: int, kind: str = "dirichlet") -> np.ndarray:
    """A seeded probability vector of one of four shapes, all summing to 1 in float64.

    ``dirichlet`` (spread, no zeros), ``peaked`` (log-normal weights: a few large values),
    ``ties`` (small integers: many equal values and zeros), ``sparse`` (mostly zeros).

    >>> random_probability_vector(np.random.default_rng(0), 3, "ties").sum()
    np.float64(1.0)
    """
    if kind == "dirichlet":
        values = rng.dirichlet(np.full(size, 0.3))
    elif kind == "peaked":
        values = np.exp(rng.normal(0, 4, size))
    elif kind == "ties":
        values = rng.integers(0, 4, size).astype(np.float64) + (np.arange(size) == 0)
    elif kind == "sparse":
        values = rng.random(size) * (rng.random(size) < 0.3) + (np.arange(size) == 0)
    else:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(VECTOR_KINDS)}")
    return values / values.sum()


VECTOR_KINDS = ("dirichlet", "peaked", "ties", "sparse")


def _padded_for_brute_force(p, q) -> tuple[np.ndarray, np.ndarray]:
    p, q = pad_to_common_size(p, q)
    if p.size > MAX_BRUTE_FORCE_SIZE:
        raise ValueError(
            f"brute force over {p.size}! = {math.factorial(p.size):,} bijections is too slow; "
            f"use at most {MAX_BRUTE_FORCE_SIZE} entries (best_bijection_l1 solves any size)"
        )
    return p, q


def _as_vector(name: str, values) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D vector, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has non-finite entries")
    return array
