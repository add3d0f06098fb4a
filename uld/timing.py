"""Small timing helpers for notebooks and benchmarks (not for timed tests).

>>> seconds = best_time(lambda: sum(range(100)), repeats=3)
>>> seconds > 0
True
>>> round(loglog_slope([10, 100, 1000], [1e-3, 1e-1, 1e1]), 6)     # time ~ size^2
2.0
"""

from __future__ import annotations

import time

import numpy as np


def best_time(call, repeats: int = 3, min_seconds: float = 0.0) -> float:
    """Fastest of ``repeats`` timed calls of ``call()`` (each looped until ``min_seconds``)."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        runs, start = 0, time.perf_counter()
        while True:
            call()
            runs += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = min(best, elapsed / runs)
    return best


def loglog_slope(sizes, seconds) -> float:
    """Least-squares slope of log(seconds) against log(sizes): the empirical exponent."""
    return float(np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(seconds, float)), 1)[0])
