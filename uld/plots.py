"""Plotting helpers shared by the notebooks (matplotlib, no state)."""

from __future__ import annotations

import numpy as np


def draw_plan(ax, x, a, y, b, plan, title: str = "", threshold: float = 1e-12) -> None:
    """Two measures on a line as bars (``a`` up at ``x``, ``b`` down at ``y``) and the plan as arrows.

    Arrow widths grow with the mass moved, ``plan[i, j]`` from ``x[i]`` to ``y[j]``.
    """
    x, a, y, b, plan = (np.asarray(v, dtype=float) for v in (x, a, y, b, plan))
    span = max(np.ptp(np.concatenate([x, y])), 1e-9)
    ax.bar(x, a, width=span / 60, color="tab:blue", label="α (source)")
    ax.bar(y, -b, width=span / 60, color="tab:orange", label="β (target, downwards)")
    scale = 12 / max(plan.max(), 1e-12)
    for i, j in zip(*np.nonzero(plan > threshold)):
        ax.annotate("", xy=(y[j], -b[j]), xytext=(x[i], a[i]),
                    arrowprops=dict(arrowstyle="->", lw=0.4 + scale * plan[i, j] / 4, alpha=0.55))
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_title(title)
    ax.set_xlabel("position on the line")
