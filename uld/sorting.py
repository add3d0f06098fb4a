"""Row-wise descending sorts, the cost centre of the exact ULD loss.

On the CPU, NumPy's vectorised sorts, with the rows split over ``torch.get_num_threads()``
threads, beat ``torch.sort``: measured on 2 cores for 384 rows of 50,304 probabilities,
0.28 s against 0.78 s for the values alone, 0.72 s against 0.78 s with the order.
Elsewhere ``torch.sort`` is used. Results are the same up to the order of equal
values, which does not change any sorted value.

>>> sort_descending(torch.tensor([[0.2, 0.5, 0.3]]))
(tensor([[0.5000, 0.3000, 0.2000]]), None)
>>> sort_descending(torch.tensor([[0.2, 0.5, 0.3]]), with_order=True)[1]
tensor([[1, 2, 0]])
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

_NUMPY_DTYPES = (torch.float32, torch.float64)


def sort_descending(values: Tensor, with_order: bool = False) -> tuple[Tensor, Tensor | None]:
    """Sort ``values [n, V]`` along the last dimension, largest first.

    Returns ``(sorted [n, V], order [n, V] or None)`` with ``sorted = values.gather(-1, order)``.
    No autograd: callers that need gradients derive them from ``order``.
    """
    if values.device.type != "cpu" or values.dtype not in _NUMPY_DTYPES or values.dim() != 2:
        result = torch.sort(values.detach(), dim=-1, descending=True)
        return result.values, (result.indices if with_order else None)
    negated = np.negative(values.detach().numpy())
    if with_order:
        order = torch.from_numpy(_by_row_blocks(np.argsort, negated))
        return values.detach().gather(-1, order), order
    return torch.from_numpy(np.negative(_by_row_blocks(np.sort, negated))), None


def _by_row_blocks(sort, array: np.ndarray) -> np.ndarray:
    """Apply a row-wise NumPy ``sort`` to blocks of rows in parallel threads."""
    threads = min(torch.get_num_threads(), array.shape[0])
    if threads <= 1:
        return sort(array, axis=-1)
    bounds = np.linspace(0, array.shape[0], threads + 1).astype(int)
    blocks = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    parts = list(_pool(threads).map(lambda block: sort(array[block], axis=-1), blocks))
    return np.concatenate(parts, axis=0)


@lru_cache(maxsize=None)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="uld-sort")
