"""The ULD closed form and its top-k approximation, side by side.

Two next-token distributions over *different* vocabularies cannot be compared token by
token, so ULD compares their shapes: sort each in decreasing order, pad the shorter one
with zeros, and take the L1 distance,

    uld_distance(p, q) = sum_i | sort_desc(p)_i - sort_desc(q)_i |.

It equals |V| times the exact Wasserstein-1 distance between the uniform measures on the
two vectors' probability values (|V| the padded size), and the L1 distance under the best
bijection of the two vocabularies; `uld.ot` checks both against exact solvers.
`top_k_uld_distance` compares each side's k largest probabilities exactly and the rest
through their masses, with a certified bound on its error (`uld.tail_bound`).

Worked example: sorted, (0.6, 0.3, 0.1) faces (0.8, 0.2, 0), so the distance is
0.2 + 0.1 + 0.1, the last 0.1 being mass that only the longer vocabulary has:

>>> import torch
>>> uld_distance(torch.tensor([0.1, 0.6, 0.3]), torch.tensor([0.2, 0.8]))
tensor(0.4000)
"""

from __future__ import annotations

import torch
from torch import Tensor

from uld.tail_bound import refined_bound

__all__ = ["uld_distance", "top_k_uld_distance", "top_k_and_tail_mass", "compute_dtype", "describe"]


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
    p_head, p_tail, p_index = top_k_and_tail_mass(p, k)
    q_head, q_tail, q_index = top_k_and_tail_mass(q, k)
    bound = refined_bound(*(x.reshape(-1, x.shape[-1]) for x in (p, q, p_head, q_head, p_index, q_index)),
                          p_tail.reshape(-1), q_tail.reshape(-1))
    return uld_distance(p_head, q_head) + (p_tail - q_tail).abs(), bound.reshape(rows)


def top_k_and_tail_mass(probs: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """``probs [..., V]`` -> (its ``min(k, V)`` largest values sorted, the mass of the rest, their indices).

    The tail is summed from the values outside the top k, not taken as ``1 - head``, so it
    keeps its precision when tiny.

    >>> top_k_and_tail_mass(torch.tensor([0.1, 0.6, 0.3]), 2)
    (tensor([0.6000, 0.3000]), tensor(0.1000), tensor([1, 2]))
    """
    head, index = probs.topk(min(k, probs.shape[-1]), dim=-1, sorted=True)
    tail = probs.scatter(-1, index, 0.0).sum(-1)
    return head, tail, index


def _check_probability_tensor(name: str, tensor: Tensor) -> None:
    if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {describe(tensor)}")
    if tensor.dim() == 0 or tensor.shape[-1] == 0:
        raise ValueError(f"{name} must have a non-empty last (vocabulary) dimension, got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def describe(value) -> str:
    """A value as an error message names it: a tensor's dtype and shape, else its type."""
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__

