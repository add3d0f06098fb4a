"""What the experiment notebooks (06-09) share: run a small grid, read it back, compare.

    runs = run_experiment({"task": "extractive_qa", "teacher": "teacher-extractive_qa"},
                          {"method": ["sft", "seqkd", "uld"], "seed": [0, 1]}, "runs/06")
    scores_table(runs)                     # mean, spread and top answer share per method
    compare(runs, "uld", "seqkd")          # paired interval and verdict: above, below, inconclusive

`run_experiment` is `uld.replicate` on a grid given in code, `run_grid_file` on a grid file
such as ``configs/grids/cpu.yaml`` (finished cells are reused by both); `load_recipe` reads
the settings the CPU experiments share (``configs/recipes/cpu.yaml``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]  # where configs/ lives in a checkout

__all__ = ["Run", "run_experiment", "run_grid_file", "find_grid", "load_recipe", "scores_table", "select", "compare",
           "side_by_side"]


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

    @property
    def predictions(self) -> list[str]:
        """Its answers to the evaluation questions, in their order (``predictions.jsonl``)."""
        from uld.evaluation import read_predictions

        return [record["prediction"] for record in read_predictions(self.folder)]


def run_experiment(base: dict, axes: dict | list, out, echo=print) -> list[Run]:
    """Run the product of ``axes`` over ``base`` (see `uld.replicate`), or the union of the
    products of a list of ``axes`` (a cell two of them share runs once); every cell must succeed."""
    from uld.replicate import Grid

    return _finished(Grid(dict(base), [dict(a) for a in axes] if isinstance(axes, list) else dict(axes)), out, echo)


def run_grid_file(path, out, echo=print, preset: str | None = None) -> list[Run]:
    """Run the grid file ``path`` (as ``python -m uld replicate --grid path [--preset NAME] --out
    out`` does) and return its runs, in the file's order; every cell must succeed."""
    from uld.replicate import load_grid

    return _finished(load_grid(find_grid(path), preset), out, echo)


def find_grid(path) -> Path:
    """``path`` (a grid or a recipe) as given when it exists (or is absolute), else read from
    the project's root: a notebook finds ``configs/grids/cpu.yaml`` from ``notebooks``."""
    path = Path(path)
    return path if path.is_absolute() or path.exists() else PROJECT / path


def load_recipe(path) -> dict:
    """The settings of a recipe file such as ``configs/recipes/cpu.yaml`` (found as
    `find_grid` finds a grid), to start a notebook's ``base`` from:
    ``{**load_recipe("configs/recipes/cpu.yaml"), "epochs": 3}``."""
    from uld.replicate import read_recipe

    return read_recipe(find_grid(path))


def _finished(grid, out, echo) -> list[Run]:
    from uld.distill import finished_metrics
    from uld.replicate import run_grid

    report = run_grid(grid, Path(out), echo=echo, progress=False)
    if report["failed"]:
        name, line = next(iter(report["failed"].items()))
        raise RuntimeError(f"{len(report['failed'])} cells failed, first {name}: {line}")
    return [Run(name, config, finished_metrics(config.out), Path(config.out)) for name, config in grid.cells]


def scores_table(runs: list[Run], by=lambda run: run.label, names=("run",)):
    """A DataFrame, one row per group of runs (default: the cell name without its seed): the
    mean score, its spread over seeds (sd), the seeds, and "top answer", the largest share of
    the questions one seed gives a single answer (`uld.metrics.top_answer_share`: 100 % is a
    student that says the same thing to every question). ``by`` may return a tuple; then
    ``names`` names its parts (the index levels)."""
    import pandas as pd

    from uld.metrics import top_answer_share

    groups: dict = {}
    for run in runs:
        groups.setdefault(by(run), []).append(run)
    rows = [{"mean": statistics.mean(r.score for r in group),
             "sd": statistics.stdev(r.score for r in group) if len(group) > 1 else 0.0, "seeds": len(group),
             "top answer": max(top_answer_share(r.predictions)[1] for r in group)} for group in groups.values()]
    index = pd.MultiIndex.from_tuples(list(groups), names=names) if len(names) > 1 else \
        pd.Index(list(groups), name=names[0])
    return pd.DataFrame(rows, index=index)


def select(runs: list[Run], where) -> list[Run]:
    """The runs labelled ``where`` (a string), or whose config matches every setting of
    ``where`` (a mapping), e.g. ``select(runs, {"method": "uld", "train_limit": 100})``; a
    setting may also name a metric the run recorded (``n_train``). A setting the run's
    method never reads (`uld.methods.unread_settings`: seqkd and lambda) matches any value.
    A list of runs is returned as it is."""
    from uld.methods import unread_settings

    if isinstance(where, list):
        return where
    if isinstance(where, str):
        return [run for run in runs if run.label == where]
    missing = object()

    def matches(run: Run, key: str, value) -> bool:
        if key in unread_settings(run.config.method):
            return True
        found = getattr(run.config, key, missing)
        return (run.metrics.get(key, missing) if found is missing else found) == value

    return [run for run in runs if all(matches(run, key, value) for key, value in where.items())]


def compare(runs: list[Run], a, b, confidence: float = 0.95):
    """How the runs ``a`` stand against the runs ``b`` (each a label, a mapping of settings
    or a list of runs, see `select`), paired over questions and seeds.

    Returns a `uld.comparison.Difference`: ``difference`` (points), ``low``/``high`` (the
    bootstrap interval), ``verdict`` ("above", "below" or "inconclusive") and ``describe()``.
    """
    from uld.comparison import compare_folders

    first, second = select(runs, a), select(runs, b)
    if not first or not second:
        raise ValueError(f"no runs match {a!r} or {b!r}; labels: {sorted({r.label for r in runs})}")
    return compare_folders([r.folder for r in first], [r.folder for r in second], first[0].metrics["metric"],
                           confidence)


def side_by_side(runs: list[Run], rows: int = 5):
    """A DataFrame of the first ``rows`` evaluation questions: gold answer and each run's prediction."""
    import pandas as pd

    from uld.evaluation import read_predictions

    table: dict = {}
    for run in runs:
        records = read_predictions(run.folder)[:rows]
        table.setdefault("gold", [r["references"][0] for r in records])
        table[run.label] = [r["prediction"] for r in records]
    return pd.DataFrame(table)
