"""Batch replication: a grid of distillation runs, resumable, aggregated beside the paper.

    python -m uld replicate --grid configs/grids/cpu.yaml --out runs/cpu

A grid file holds ``base`` (`uld.distill.DistillConfig` fields shared by every cell) and
``grid`` (fields with a list of values each; the cells are their product)::

    base: {teacher: "teacher-{task}", epochs: 3}       # a text value may name other settings
    grid: {task: [extractive_qa], method: [raw, sft, seqkd, uld], seed: [0, 1, 2]}
    runner: distill          # or: notebook (papermill executes notebooks/09_paper_replication)

``grid`` may also be a list of such mappings: the cells are the union of their products
(e.g. ``kl`` only for the student that shares the teacher's tokenizer).

``recipe`` names a file of settings that ``base`` starts from (its path relative to the grid
file, e.g. ``recipe: ../recipes/cpu.yaml``; ``base`` wins where both set a key): one
recipe shared by several grids and notebooks, written once.

A grid file may also offer ``presets``, named sizes of the same grid (``--preset ci``, ``cpu``,
``gpu`` in ``configs/grids/real.yaml``): each a mapping of settings that replace an axis's
values or join ``base``; see `load_grid`.

Cells that a setting cannot change are run once: ``raw`` ignores lambda, the data fraction
and the seed (greedy decoding of an untrained student), ``sft`` and ``seqkd`` ignore lambda.
Runs on the same teacher answers share them (and the teacher cache) in
``<out>/teacher/<key>``, so the teacher answers each question once per grid.

Each cell runs in ``<out>/cells/<name>``; a cell with ``metrics.json`` is finished and
skipped on a rerun, an interrupted one resumes (teacher answers and Trainer checkpoints).
A failing cell is recorded with its first error line and the batch goes on. After every
cell ``results.csv`` (one row per cell) and ``results.md`` (mean and spread over seeds,
beside the paper's number where it has one) are rewritten whole; ``results.png`` at the end.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import statistics
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from uld.storage import write_atomically
from uld.distill import DistillConfig, finished_metrics
from uld.locks import one_writer
from uld.methods import PAPER_DISTILLATION_WEIGHT, needs_teacher_answers, unread_settings

__all__ = ["Grid", "load_grid", "read_recipe", "run_grid", "summarise", "paper_number", "paper_dataset", "paper_rows", "PAPER_STAND_INS",
           "RESULT_COLUMNS"]

ROOT = Path(__file__).resolve().parents[1]
RUNNERS = ("distill", "notebook")
RESULT_COLUMNS = ["cell", "status", "task", "teacher", "student", "method", "distillation_weight", "train_fraction",
                  "seed", "metric", "score", "em", "n_train", "steps", "seconds", "top_answer_share", "error"]
_SHORT = {"distillation_weight": "lambda", "train_fraction": "fraction", "student_temperature": "ts",
          "teacher_temperature": "tt"}


@dataclass
class Grid:
    """A parsed grid: the shared settings, the axes, the runner."""

    base: dict
    axes: dict | list  # one mapping of axes, or a list of them (the cells: the union of their products)
    runner: str = "distill"
    name: str = "grid"
    cells: list = field(default_factory=list)  # [(name, DistillConfig)], filled by expand()

    @property
    def products(self) -> list[dict]:
        return self.axes if isinstance(self.axes, list) else [self.axes]

    def settings(self):
        """Each cell's settings, before normalisation, product after product."""
        for axes in self.products:
            for values in itertools.product(*axes.values()):
                yield _filled({**self.base, **dict(zip(axes, values))})

    def expand(self, out: Path) -> list[tuple[str, DistillConfig]]:
        """Every distinct cell as ``(name, config)``, configs pointing into ``out``."""
        seen, cells = set(), []
        keys = list(dict.fromkeys(key for axes in self.products for key in axes))
        for filled in self.settings():
            settings = _normalised(filled)
            config = DistillConfig(**{**settings, "out": "."})
            name = _cell_name(config, keys)
            if name in seen:
                continue
            seen.add(name)
            config.out = str(out / "cells" / name)
            if needs_teacher_answers(config.method):
                config.teacher_outputs = str(out / "teacher" / _teacher_key(config))
            cells.append((name, config))
        self.cells = cells
        return cells


def load_grid(path, preset: str | None = None) -> Grid:
    """Read and check a grid file; a bad one raises ``ValueError`` naming the problem.

    A grid file may offer ``presets``: named sizes of the same grid, each a mapping of
    settings; a setting the grid varies replaces that axis's values, any other goes into
    ``base``. ``preset`` chooses one (a file with presets needs one)::

        presets:
          ci: {train_limit: 8, seed: [0]}
          gpu: {train_limit: null, seed: [0, 1, 2]}
    """
    from uld.yaml_files import read_mapping

    data = read_mapping(path, "base and grid")
    unknown = set(data) - {"base", "grid", "runner", "description", "presets", "recipe"}
    if unknown:
        raise ValueError(f"{path}: unknown grid keys: {', '.join(sorted(unknown))}")
    base, axes = data.get("base") or {}, data.get("grid") or {}
    if data.get("recipe") is not None:
        if not isinstance(base, dict):
            raise ValueError(f"{path}: base must be a mapping")
        base = {**read_recipe(Path(path).parent / str(data["recipe"])), **base}
    base, axes = _with_preset(path, data.get("presets"), preset, base, axes)
    runner = data.get("runner", "distill")
    if runner not in RUNNERS:
        raise ValueError(f"{path}: runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
    names = {f.name for f in fields(DistillConfig)} - {"out", "teacher_outputs"}
    products = axes if isinstance(axes, list) else [axes]
    for section, keys in (("base", base), *(("grid", product) for product in products)):
        if not isinstance(keys, dict):
            raise ValueError(f"{path}: {section} must be a mapping (grid: a mapping or a list of mappings)")
        bad = set(keys) - names
        if bad:
            raise ValueError(f"{path}: unknown config keys in {section}: {', '.join(sorted(bad))}")
    if not products or not all(products):
        raise ValueError(f"{path}: grid must vary at least one setting, e.g. grid: {{seed: [0, 1, 2]}}")
    for product in products:
        for key, values in product.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"{path}: grid.{key} must be a non-empty list of values")
    grid = Grid(base, axes, runner, Path(path).stem)
    for settings in grid.settings():  # every cell must be a valid config
        try:
            DistillConfig(**_normalised(settings))
        except ValueError as problem:
            raise ValueError(f"{path}: {problem}") from None
    return grid


def _with_preset(path, presets, chosen: str | None, base, axes):
    """``(base, axes)`` with the chosen preset's settings applied (unchanged without presets)."""
    if presets is None:
        if chosen is not None:
            raise ValueError(f"{path} has no presets; run it without --preset")
        return base, axes
    if not isinstance(presets, dict) or not all(isinstance(v, dict) for v in presets.values()):
        raise ValueError(f"{path}: presets must map each preset's name to a mapping of settings")
    if chosen not in presets:
        asked = "needs --preset" if chosen is None else f"has no preset {chosen!r}"
        raise ValueError(f"{path} {asked}; choose from {', '.join(presets)}")
    products = axes if isinstance(axes, list) else [axes]
    if not isinstance(base, dict) or not all(isinstance(product, dict) for product in products):
        return base, axes  # the checks that follow name the malformed section
    settings = presets[chosen]
    varied = {key for product in products for key in product}
    products = [{key: settings.get(key, values) for key, values in product.items()} for product in products]
    base = {**base, **{key: value for key, value in settings.items() if key not in varied}}
    return base, products if isinstance(axes, list) else products[0]


def _filled(settings: dict) -> dict:
    """Text values may name other settings: ``teacher: teacher-{task}``."""
    try:
        return {k: v.format(**settings) if isinstance(v, str) and "{" in v else v for k, v in settings.items()}
    except (KeyError, IndexError) as missing:
        raise ValueError(f"a grid value names an unknown setting: {missing}") from None


def read_recipe(path) -> dict:
    """The settings of a recipe file (`uld.distill.DistillConfig` fields), checked by name.

    >>> sorted(read_recipe(ROOT / "configs" / "recipes" / "cpu.yaml"))[:3]
    ['batch_size', 'learning_rate', 'max_length']
    """
    from uld.yaml_files import read_mapping

    settings = read_mapping(path, "DistillConfig settings")
    unknown = set(settings) - ({f.name for f in fields(DistillConfig)} - {"out", "teacher_outputs"})
    if unknown:
        raise ValueError(f"{path}: unknown config keys: {', '.join(sorted(unknown))}")
    return settings


def run_grid(grid: Grid, out, echo=print, progress: bool = True) -> dict:
    """Run every unfinished cell of ``grid`` into ``out``; returns ``{"done", "skipped", "failed"}``."""
    out = Path(out)
    with one_writer(out):
        return _run_cells(grid, out, echo, progress)


def _run_cells(grid: Grid, out: Path, echo, progress: bool) -> dict:
    cells = grid.expand(out)
    write_atomically(out / "grid.json", json.dumps({"runner": grid.runner, "base": grid.base, "axes": grid.axes,
                                                    "cells": [name for name, _ in cells]}, indent=1))
    report = {"done": [], "skipped": [], "failed": {}}
    started = time.monotonic()
    for number, (name, config) in enumerate(cells, 1):
        if finished_metrics(config.out, echo) is not None:
            report["skipped"].append(name)
            continue
        echo(f"[{number}/{len(cells)}] {name}{_job_progress(report, len(cells), time.monotonic() - started)}")
        try:
            _run_cell(grid.runner, config, echo, progress)
            report["done"].append(name)
            (Path(config.out) / "error.txt").unlink(missing_ok=True)
        except KeyboardInterrupt:
            raise
        except Exception as failure:  # noqa: BLE001 - a failing cell must not stop the batch
            line = _first_line(failure)
            report["failed"][name] = line
            Path(config.out).mkdir(parents=True, exist_ok=True)
            write_atomically(Path(config.out) / "error.txt", traceback.format_exc())
            echo(f"  failed: {line}")
        write_results(out, cells)
    _score_teachers(cells, echo)
    write_results(out, cells)
    _figure(out, cells)
    return report


def _teacher_scores(cells) -> dict:
    """``{config: folder}`` for each distinct teacher evaluation the grid's distilling cells imply:
    the teacher on the students' evaluation questions, with its own prompt and shots."""
    wanted = {}
    for _, config in cells:
        if needs_teacher_answers(config.method):
            settings = [config.teacher, config.task, config.teacher_shots, config.eval_limit, config.max_new_tokens,
                        config.max_length, config.task_source]
            digest = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:10]
            folder = Path(config.out).parents[1] / "teacher" / f"{_slug(config.teacher)}-{config.task}-eval-{digest}"
            wanted.setdefault(folder, config)
    return wanted


def _score_teachers(cells, echo) -> None:
    """Score each teacher the grid distils from on the evaluation questions (once; kept in
    ``<out>/teacher/<teacher>-<task>-eval-<digest>``), so the table and the figure show what the
    students are taught towards. A teacher that cannot be scored is reported, not fatal."""
    from uld.evaluation import evaluate_model

    for folder, config in _teacher_scores(cells).items():
        if finished_metrics(folder, echo) is not None:
            continue
        echo(f"scoring the teacher {config.teacher} on {config.task}")
        try:
            evaluate_model(config.teacher, config.task, folder, split="eval", prompt="teacher", shots=config.teacher_shots,
                           limit=config.eval_limit, max_new_tokens=config.max_new_tokens,
                           max_length=config.max_length, source=config.task_source, echo=lambda line: None)
        except KeyboardInterrupt:
            raise
        except Exception as failure:  # noqa: BLE001 - the students' results stand without the teacher's
            echo(f"  the teacher could not be scored: {_first_line(failure)}")


def _teacher_rows(cells) -> list[dict]:
    """The finished teacher scores: ``task, teacher, metric, score, n_eval``."""
    rows = []
    for folder in _teacher_scores(cells):
        metrics = finished_metrics(folder, echo=lambda line: None)
        if metrics is not None:
            rows.append({"task": metrics["task"], "teacher": metrics["model"], "metric": metrics["metric"],
                         "score": metrics["scores"][metrics["metric"]], "n_eval": metrics["n_eval"]})
    return rows


def _job_progress(report: dict, total: int, elapsed: float) -> str:
    """The whole job at the start of a cell: finished cells, time so far, time left at the pace
    of the cells this invocation ran.

    >>> _job_progress({"done": ["a", "b"], "skipped": ["c"], "failed": {}}, 7, 250.0)
    '  (3 of 7 finished, 1 already before; 4 min 10 s so far, about 8 min 20 s left)'
    """
    ran = len(report["done"]) + len(report["failed"])
    finished = ran + len(report["skipped"])
    text = f"  ({finished} of {total} finished" + (f", {len(report['skipped'])} already before" if report["skipped"]
                                                   else "")
    if not ran:
        return text + ")"
    return text + f"; {_duration(elapsed)} so far, about {_duration(elapsed / ran * (total - finished))} left)"


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def _run_cell(runner: str, config: DistillConfig, echo, progress: bool) -> None:
    if runner == "distill":
        from uld.distill import run_distillation

        run_distillation(config, echo=lambda line: echo(f"  {line}"), overwrite=False, progress=progress)
        return
    import papermill

    folder = Path(config.out)
    folder.mkdir(parents=True, exist_ok=True)
    parameters = {**asdict(config), "out": str(folder.resolve())}
    papermill.execute_notebook(str(ROOT / "notebooks" / "09_paper_replication.ipynb"),
                               str(folder / "09_paper_replication.ipynb"),
                               parameters={"config": parameters, "output_dir": parameters["out"]},
                               progress_bar=progress, cwd=str(ROOT / "notebooks"))
    if finished_metrics(folder) is None:
        raise RuntimeError(f"the notebook finished without writing a readable {folder / 'metrics.json'}")


def results_rows(cells) -> list[dict]:
    """One row per cell: its settings, status and scores."""
    rows = []
    for name, config in cells:
        folder = Path(config.out)
        row = {"cell": name, "folder": str(folder), "task": config.task,
               "teacher": config.teacher if needs_teacher_answers(config.method) else "",
               "student": config.student, "method": config.method, "distillation_weight": config.distillation_weight,
               "train_fraction": config.train_fraction, "seed": config.seed, "status": "pending"}
        metrics = finished_metrics(folder, echo=lambda line: None)
        if metrics is not None:
            row.update(status="done", metric=metrics["metric"], score=metrics["scores"][metrics["metric"]],
                       em=metrics["scores"].get("em", ""), n_train=metrics["n_train"], steps=metrics["steps"],
                       seconds=metrics["seconds"], top_answer_share=_top_answer_share(folder))
        elif (folder / "error.txt").exists():
            row.update(status="failed", error=(folder / "error.txt").read_text().strip().splitlines()[-1][:300])
        rows.append(row)
    return rows


def _top_answer_share(folder: Path) -> float | str:
    """The share of the run's answers taken by its most common one ("" without predictions)."""
    from uld.evaluation import read_predictions
    from uld.metrics import top_answer_share

    if not (folder / "predictions.jsonl").exists():
        return ""
    predictions = [record["prediction"] for record in read_predictions(folder)]
    return round(top_answer_share(predictions)[1], 4) if predictions else ""


def write_results(out: Path, cells) -> None:
    rows = results_rows(cells)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(out / "results.csv", buffer.getvalue())
    teachers = [f"The teacher {t['teacher']} on the same {t['n_eval']} {t['task']} questions: {t['metric']} "
                f"{t['score']:.2f}." for t in _teacher_rows(cells)]
    write_atomically(out / "results.md", summarise(rows) + "".join(f"\n{line}\n" for line in teachers)
                     + "\n".join(comparison_lines(cells, rows)))


def summarise(rows: list[dict]) -> str:
    """A markdown table: one line per setting (training examples included), mean and spread
    over seeds, the largest share one answer takes in a seed's predictions, the paper's number,
    and the cells it averages (settings the other columns do not show, e.g. a temperature,
    are in their names)."""
    groups: dict = {}
    for row in rows:
        if row["status"] != "done":
            continue
        # the cell's name without its seed holds every setting the grid varies (temperatures too)
        key = tuple(row.get(k, "") for k in ("task", "teacher", "student", "method", "distillation_weight",
                                             "train_fraction", "n_train")) + (row["cell"].rsplit("-seed", 1)[0],)
        groups.setdefault(key, []).append(row)
    lines = ["| task | teacher | student | method | lambda | fraction | examples | metric | score (mean ± sd) | seeds "
             "| top answer | paper | cells |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, members in groups.items():
        task, teacher, student, method, weight, fraction, examples, cells = key
        scores = [float(m["score"]) for m in members]
        spread = f" ± {statistics.stdev(scores):.2f}" if len(scores) > 1 else ""
        paper = paper_number(task, teacher, student, method, weight, fraction)
        lines.append(f"| {task} | {teacher or '-'} | {student} | {method} | {weight if method == 'uld' else '-'} | "
                     f"{fraction} | {examples} | {members[0]['metric']} | {statistics.mean(scores):.2f}{spread} | "
                     f"{len(scores)} | {_largest_share(members)} | "
                     f"{'-' if paper is None else f'{paper:.2f}'} | {cells}-seed* |")
    failed = [row for row in rows if row["status"] == "failed"]
    if failed:
        lines += ["", "Failed cells:", *(f"- {row['cell']}: {row.get('error', '')}" for row in failed)]
    return "\n".join(lines) + "\n"


# Which method each one is measured against: the distillation losses against the paper's
# baseline (seqkd), seqkd against training on the gold answers, sft against the raw student.
BASELINES = {"uld": "seqkd", "kl": "seqkd", "seqkd": "sft", "sft": "raw"}


def comparison_lines(cells, rows: list[dict]) -> list[str]:
    """Markdown lines: each finished method against its baseline (`BASELINES`): the cells
    whose settings differ only in the method (and what the methods ignore) and the seed,
    paired over questions and seeds (`uld.comparison`)."""
    from uld.comparison import compare_folders

    done = [(config, row) for (_, config), row in zip(cells, rows) if row["status"] == "done"]
    groups: dict = {}
    for config, row in done:
        groups.setdefault(_setting_key(config, config.method), []).append(row)
    lines, compared = [], set()
    for config, row in done:
        key, baseline = _setting_key(config, config.method), BASELINES.get(config.method)
        base = groups.get(_setting_key(config, baseline)) if baseline else None
        if key in compared or not base:
            continue
        compared.add(key)
        found = compare_folders([m["folder"] for m in groups[key]], [m["folder"] for m in base], row["metric"])
        lines.append(f"| {row['task']} | {row['student']} | {row['n_train']} | {_label(row)} − {baseline} | "
                     f"{found.difference:+.2f} | "
                     f"[{found.low:+.2f}, {found.high:+.2f}] | {found.verdict} | "
                     f"{found.seeds[0]} x {found.seeds[1]} seeds, {found.questions} questions |")
    if not lines:
        return []
    return ["", "Paired comparisons (95% bootstrap interval over questions, each question's score averaged over "
            "seeds; inconclusive when the interval holds zero or no seed changed any answer):", "",
            "| task | student | examples | comparison | difference | 95% interval | verdict | runs |",
            "|---|---|---|---|---|---|---|---|", *lines, ""]


def _setting_key(config: DistillConfig, method: str) -> str:
    """What a run of ``method`` with ``config``'s other settings depends on, except the seed."""
    settings = _normalised({**asdict(config), "method": method})
    normalised = asdict(DistillConfig(**{**settings, "out": "."}))
    return json.dumps({k: v for k, v in normalised.items() if k not in ("seed", "out", "teacher_outputs")},
                      sort_keys=True)


_PAPER_DATASETS = {"squad": "squad", "qed": "qed", "fairytaleqa": "FairytaleQA", "pubmedqa": "pubmed_qa",
                   "dialogsum": "dialogsum"}
_PAPER_METRICS = {"f1": "f1", "rougeLsum": "rougeLsum", "bertscore": "f1_bert"}


# The paper's dataset each embedded task stands in for, where notebooks set the two side by side.
PAPER_STAND_INS = {"extractive_qa": "squad", "generative_qa": "fairytaleqa", "dialogue_summary": "dialogsum"}


def paper_dataset(task: str) -> str:
    """The paper's dataset for ``task``: itself, or the one an embedded task stands in for.

    >>> paper_dataset("extractive_qa"), paper_dataset("squad")
    ('squad', 'squad')
    """
    return PAPER_STAND_INS.get(task, task)


def paper_rows(task: str) -> list[dict]:
    """The paper's distillation results on ``task``'s dataset (an embedded task: the paper
    dataset it stands in for, `PAPER_STAND_INS`), one row per student, teacher and run.

    Each row: ``student``, ``teacher``, ``method`` (seqkd for lambda 0, uld for 1.5),
    ``fraction`` of the training data, and ``score`` in the dataset's metric (the paper's
    F1 for SQuAD, for instance); raw few-shot rows are left out.

    >>> rows = paper_rows("extractive_qa")
    >>> next(r for r in rows if r["student"] == "pythia-410m-deduped" and r["fraction"] == 0.25
    ...      and r["method"] == "uld")["score"]
    69.47
    """
    from uld.data import TASKS

    dataset = paper_dataset(task)
    if dataset not in _PAPER_DATASETS:
        raise ValueError(f"the paper has no results for task {task!r}; it has {sorted(_PAPER_DATASETS)} "
                         f"and the embedded tasks that stand in for them, {sorted(PAPER_STAND_INS)}")
    metric = _PAPER_METRICS[TASKS[dataset].metric]
    rows = []
    with open(ROOT / "data" / "paper_results.csv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            weight, _, fraction = row["run"].removeprefix("d").partition("_")
            if row["dataset"] != _PAPER_DATASETS[dataset] or not row["run"].startswith("d") or not row[metric]:
                continue
            method = {0.0: "seqkd", PAPER_DISTILLATION_WEIGHT: "uld"}.get(float(weight))
            if method is not None:
                rows.append({"student": row["student"], "teacher": row["teacher_or_setting"], "method": method,
                             "fraction": float(fraction or 1.0), "score": float(row[metric])})
    return rows


def paper_number(task: str, teacher: str, student: str, method: str, weight: float, fraction: float) -> float | None:
    """The paper's score for this setting (`data/paper_results.csv`), or None when it has none.

    >>> paper_number("squad", "meta-llama/Llama-2-7b-chat-hf", "EleutherAI/pythia-410m-deduped", "uld", 1.5, 1.0)
    74.14
    """
    if task not in _PAPER_DATASETS or method not in ("seqkd", "uld") or (method == "uld" and weight != PAPER_DISTILLATION_WEIGHT):
        return None
    wanted = (student.split("/")[-1], teacher.split("/")[-1], method, fraction)
    return next((row["score"] for row in paper_rows(task)
                 if (row["student"], row["teacher"], row["method"], row["fraction"]) == wanted), None)


def _figure(out: Path, cells) -> None:
    """``results.png``: one panel per task, a bar per student and method at its mean score
    over seeds, with its 95% bootstrap interval over questions (`uld.comparison.score_interval`)
    and each seed's score as a dot; the students' bars in separate groups; the teacher's
    score on the same questions as a dashed line; a legend says which is which."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's) stays as it is
    from matplotlib.lines import Line2D

    from uld.comparison import score_interval
    from uld.metrics import IN_WORDS

    rows = [row for row in results_rows(cells) if row["status"] == "done"]
    tasks = list(dict.fromkeys(row["task"] for row in rows))
    if not tasks:
        return
    bars = max(len({(r["student"], _label(r), r["n_train"]) for r in rows if r["task"] == t}) for t in tasks)
    teachers = _teacher_rows(cells)
    figure = Figure(figsize=(max(5.5, 1.5 + 0.6 * bars) * len(tasks), 5.0))
    axes = figure.subplots(1, len(tasks), squeeze=False)
    colours = {"raw": "#bbb", "sft": "#89a", "seqkd": "#6a8fc0", "uld": "#d84", "kl": "#5a5"}
    for axis, task in zip(axes[0], tasks):
        members = [row for row in rows if row["task"] == task]
        students = list(dict.fromkeys(row["student"] for row in members))
        x, ticks, names = 0.0, [], []
        sizes = {row["n_train"] for row in members if row["method"] != "raw"}
        for student in students:
            first = x
            settings = dict.fromkeys((_label(row), row["n_train"]) for row in members if row["student"] == student)
            for number, (label, examples) in enumerate(settings):
                runs = [row for row in members if row["student"] == student and (_label(row), row["n_train"]) == (
                    label, examples)]
                try:
                    mean, low, high = score_interval([row["folder"] for row in runs], runs[0]["metric"])
                except (OSError, ValueError):  # runs without per-question answers (e.g. a notebook's): no interval
                    mean = low = high = statistics.mean(float(row["score"]) for row in runs)
                axis.bar(x, mean, color=colours.get(runs[0]["method"], "#9ab"), alpha=0.85)
                if high > low:
                    axis.errorbar(x, mean, yerr=[[mean - low], [high - mean]], color="black", capsize=4, lw=1.2)
                axis.scatter([x] * len(runs), [float(row["score"]) for row in runs], color="black", s=9, zorder=3)
                ticks.append(x)
                name = f"{label}, {examples} ex." if len(sizes) > 1 and runs[0]["method"] != "raw" else label
                names.append(name)
                x += 1
            axis.text((first + x - 1) / 2, -0.2, student, transform=axis.get_xaxis_transform(), ha="center",
                      va="top", fontsize=9, fontweight="bold")
            x += 0.6  # a gap between students
        key = [Line2D([], [], color="#999", lw=8, label="mean over seeds"),
               Line2D([], [], color="black", lw=1.2, label="95% interval over questions"),
               Line2D([], [], color="black", marker="o", ls="", ms=3, label="one seed")]
        for teacher in (t for t in teachers if t["task"] == task and t["metric"] == members[0]["metric"]):
            axis.axhline(teacher["score"], color="black", ls="--", lw=1)
            key.append(Line2D([], [], color="black", ls="--", lw=1,
                              label=f"teacher {teacher['teacher']}: {teacher['score']:.1f}"))
        axis.set_xticks(ticks, names, rotation=30, ha="right", fontsize=9)
        axis.set_title(task, fontsize=11, pad=44)
        axis.set_ylim(0, max(axis.get_ylim()[1], 1))
        axis.set_ylabel(IN_WORDS.get(members[0]["metric"], members[0]["metric"]), fontsize=9)
        axis.legend(handles=key, fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
    figure.tight_layout()
    figure.savefig(out / "results.png", dpi=110)


def _largest_share(members: list[dict]) -> str:
    """The largest share any seed's most common answer takes, e.g. ``12%``."""
    shares = [float(m["top_answer_share"]) for m in members if m.get("top_answer_share") not in ("", None)]
    return f"{max(shares):.0%}" if shares else "-"


def _label(row: dict) -> str:
    label = row["method"]
    if row["method"] == "uld" and float(row["distillation_weight"]) != PAPER_DISTILLATION_WEIGHT:
        label += f" λ={row['distillation_weight']}"
    if float(row["train_fraction"]) != 1.0:
        label += f" {float(row['train_fraction']):.0%}"
    return label


def _normalised(settings: dict) -> dict:
    """``settings`` without those its method does not read (they take their defaults)."""
    ignored = unread_settings(settings.get("method", DistillConfig.method))
    return {k: v for k, v in settings.items() if k not in ignored}


def _cell_name(config: DistillConfig, axes: list[str]) -> str:
    """``method`` then each varied setting, e.g. ``uld-extractive_qa-lambda1.5-seed0``: text
    values as they are (a hub id's last part), numbers after a short name; safe as a folder name."""
    parts = [config.method]
    for key in axes:
        value = getattr(config, key)
        if key != "method":
            parts.append(_slug(value) if isinstance(value, str) else f"{_SHORT.get(key, key)}{_slug(value)}")
    return "-".join(parts)


def _slug(value) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in str(value).split("/")[-1])


def _teacher_key(config: DistillConfig) -> str:
    """What the teacher's answers depend on, as a short readable folder name."""
    settings = [config.teacher, config.task, config.teacher_shots, config.max_new_tokens, config.teacher_dtype,
                config.train_limit, config.seed if config.teacher_shots else 0]
    digest = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:10]
    return f"{_slug(config.teacher)}-{config.task}-{digest}"


def _first_line(failure: Exception) -> str:
    text = str(failure).strip().splitlines()
    return f"{type(failure).__name__}: {text[0] if text else ''}"
