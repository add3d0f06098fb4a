"""What the experiment notebooks (05-08) share: run a small grid, read it back, compare.

    runs = run_experiment({"task": "extractive_qa", "teacher": "teacher-extractive_qa"},
                          {"method": ["sft", "seqkd", "uld"], "seed": [0, 1]}, "runs/05")
    scores_table(runs)                     # mean and spread per method
    compare(runs, "uld", "seqkd")          # paired interval and verdict: above, below, inconclusive

`run_experiment` is `uld.replicate` on a grid given in code (finished cells are reused).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Run", "run_experiment", "scores_table", "compare", "compare_by_spread", "learning_curve", "side_by_side"]


@dataclass
class Run:
    """One finished cell: its config, its metrics.json, its folder."""

    name: str
    config: object  # uld.distill.DistillConfig
    metrics: dict
    folder: Path

    @property
    def score(self) -> float:
        return self.metrics["scores"][self.metrics["metric"]]

    @property
    def label(self) -> str:
        return self.name.rsplit("-seed", 1)[0]


def run_experiment(base: dict, axes: dict, out, echo=print) -> list[Run]:
    """Run the product of ``axes`` over ``base`` (see `uld.replicate`); every cell must succeed."""
    from uld.replicate import Grid, run_grid

    grid = Grid(dict(base), dict(axes))
    report = run_grid(grid, Path(out), echo=echo, progress=False)
    if report["failed"]:
        name, line = next(iter(report["failed"].items()))
        raise RuntimeError(f"{len(report['failed'])} cells failed, first {name}: {line}")
    return [Run(name, config, json.loads((Path(config.out) / "metrics.json").read_text()), Path(config.out))
            for name, config in grid.cells]


def scores_table(runs: list[Run], by=lambda run: run.label):
    """A DataFrame: per group (default: the cell name without its seed) mean, sd, seeds, metric."""
    import pandas as pd

    groups: dict = {}
    for run in runs:
        groups.setdefault(by(run), []).append(run.score)
    rows = [{"run": key, "mean": statistics.mean(values),
             "sd": statistics.stdev(values) if len(values) > 1 else 0.0, "seeds": len(values),
             "scores": ", ".join(f"{v:.1f}" for v in values)} for key, values in groups.items()]
    return pd.DataFrame(rows).set_index("run")


def compare(runs: list[Run], a: str, b: str, confidence: float = 0.95):
    """How label ``a`` stands against ``b``, paired over questions and seeds.

    Returns a `uld.comparison.Difference`: ``difference`` (points), ``low``/``high`` (the
    bootstrap interval), ``verdict`` ("above", "below" or "inconclusive") and ``describe()``.
    """
    from uld.comparison import compare_folders

    first = [r for r in runs if r.label == a]
    second = [r for r in runs if r.label == b]
    if not first or not second:
        raise ValueError(f"no runs labelled {a!r} or {b!r}; labels: {sorted({r.label for r in runs})}")
    return compare_folders([r.folder for r in first], [r.folder for r in second], first[0].metrics["metric"],
                           confidence)


def compare_by_spread(runs: list[Run], a: str, b: str) -> dict:
    """The rule the kit used before `compare`: the difference of mean scores against the
    larger standard deviation over seeds. Not a test: it calls a difference when every seed
    gives the same answers (spread 0). Kept only because notebook 06's committed outputs
    were computed with it; they are rerun with `compare` in the new regime (issue 10).
    """
    first = [r.score for r in runs if r.label == a]
    second = [r.score for r in runs if r.label == b]
    if not first or not second:
        raise ValueError(f"no runs labelled {a!r} or {b!r}; labels: {sorted({r.label for r in runs})}")
    spread = max(statistics.stdev(first) if len(first) > 1 else 0.0,
                 statistics.stdev(second) if len(second) > 1 else 0.0)
    difference = statistics.mean(first) - statistics.mean(second)
    return {"a": a, "b": b, "difference": difference, "spread": spread,
            "separated": abs(difference) > spread and len(first) > 1 and len(second) > 1}


def learning_curve(run: Run) -> tuple[list[int], list[float]]:
    """``(steps, scores)`` of the validation metric logged during training (``eval_steps``)."""
    key = f"eval_{run.metrics['metric']}"
    points = [(entry["step"], entry[key]) for entry in run.metrics["log_history"] if key in entry]
    return [p[0] for p in points], [p[1] for p in points]


def side_by_side(runs: list[Run], rows: int = 5):
    """A DataFrame of the first ``rows`` evaluation questions: gold answer and each run's prediction."""
    import pandas as pd

    table: dict = {}
    for run in runs:
        lines = (run.folder / "predictions.jsonl").read_text().splitlines()[:rows]
        records = [json.loads(line) for line in lines]
        table.setdefault("gold", [r["references"][0] for r in records])
        table[run.label] = [r["prediction"] for r in records]
    return pd.DataFrame(table)
