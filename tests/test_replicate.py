"""`python -m uld replicate`: grid files, cell expansion, resumable batches, the results table."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from uld.replicate import load_grid, paper_number, paper_rows, read_recipe, run_grid, summarise

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(task="extractive_qa", teacher="default-teacher", teacher_shots=0, train_limit=8, eval_limit=4, epochs=1,
            batch_size=8, max_new_tokens=4, logging_steps=1)


def grid_file(tmp_path, grid, base=None, **extra):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"base": {**TINY, **(base or {})}, "grid": grid, **extra}, sort_keys=False))
    return path


def test_cells_a_method_cannot_tell_apart_run_once(tmp_path):
    grid = load_grid(grid_file(tmp_path, {"method": ["raw", "sft", "uld"], "distillation_weight": [0.5, 1.5],
                                          "seed": [0, 1]}))
    names = [name for name, _ in grid.expand(tmp_path / "out")]
    assert names == ["raw-lambda1.5-seed0", "sft-lambda1.5-seed0", "sft-lambda1.5-seed1",
                     "uld-lambda0.5-seed0", "uld-lambda0.5-seed1", "uld-lambda1.5-seed0", "uld-lambda1.5-seed1"]
    configs = dict(grid.cells)
    assert configs["uld-lambda0.5-seed1"].distillation_weight == 0.5 and configs["uld-lambda0.5-seed1"].seed == 1
    assert configs["uld-lambda0.5-seed1"].out == str(tmp_path / "out" / "cells" / "uld-lambda0.5-seed1")
    # The teacher answers are shared by every run that would produce the same ones.
    assert len({c.teacher_outputs for n, c in grid.cells if c.method == "uld"}) == 1
    assert all(c.teacher_outputs is None for n, c in grid.cells if c.method in ("raw", "sft"))


def test_text_values_may_name_other_settings(tmp_path):
    grid = load_grid(grid_file(tmp_path, {"task": ["extractive_qa", "dialogue_summary"], "method": ["seqkd"]},
                               base={"teacher": "teacher-{task}"}))
    assert [c.teacher for _, c in grid.expand(tmp_path)] == ["teacher-extractive_qa", "teacher-dialogue_summary"]


def test_a_list_of_grids_runs_the_union_of_their_products(tmp_path):
    grid = load_grid(grid_file(tmp_path, [{"student": ["default-student", "default-student-shared"],
                                           "method": ["seqkd"]},
                                          {"student": ["default-student-shared"], "method": ["kl"], "seed": [0, 1]}]))
    names = [name for name, _ in grid.expand(tmp_path / "out")]
    assert names == ["seqkd-default-student-seed0", "seqkd-default-student-shared-seed0",
                     "kl-default-student-shared-seed0", "kl-default-student-shared-seed1"]


@pytest.mark.parametrize("content, message", [
    ({"grid": {"method": "uld"}}, "grid.method must be a non-empty list"),
    ({"grid": [{"method": ["uld"]}, ["seed"]]}, "grid must be a mapping"),
    ({"grid": {"lambda": [1]}}, "unknown config keys in grid: lambda"),
    ({"base": {"epoch": 1}}, "unknown config keys in base: epoch"),
    ({"grid": {"method": ["uld", "magic"]}}, "unknown method 'magic'"),
    ({"runner": "slurm"}, "runner must be one of distill, notebook"),
    ({"cells": []}, "unknown grid keys: cells"),
    ({"base": {"teacher": "teacher-{size}"}, "grid": {"seed": [0]}}, "names an unknown setting: 'size'"),
    ({"base": {"method": "raw"}}, "grid must vary at least one setting"),
    ({"base": {"method": "raw"}, "grid": {}}, "grid must vary at least one setting"),
    ({"grid": [{"seed": [0]}, {}]}, "grid must vary at least one setting"),
    ({"grid": {"distillation_weight": [1.5, -1.5]}}, "distillation_weight must be >= 0, got -1.5"),
    ({"grid": {"top_k": [0]}}, "top_k must be positive"),
])
def test_bad_grids_are_value_errors(tmp_path, content, message):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(ValueError, match=message):
        load_grid(path)


def test_a_batch_resumes_records_failures_and_aggregates(tmp_path):
    out = tmp_path / "out"
    path = grid_file(tmp_path, {"student": ["default-student", "/no/such/student"], "method": ["sft", "uld"],
                                "seed": [0, 1]})
    report = run_grid(load_grid(path), out, echo=lambda line: None)
    assert sorted(report["done"]) == ["sft-default-student-seed0", "sft-default-student-seed1",
                                      "uld-default-student-seed0", "uld-default-student-seed1"]
    assert sorted(report["failed"]) == ["sft-student-seed0", "sft-student-seed1", "uld-student-seed0",
                                        "uld-student-seed1"]
    assert all(line.startswith("ModelUnavailable: ") and "/no/such/student" in line
               for line in report["failed"].values())
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["status"] for r in rows].count("done") == 4 and [r["status"] for r in rows].count("failed") == 4
    assert all(0 <= float(r["score"]) <= 100 for r in rows if r["status"] == "done")
    table = (out / "results.md").read_text()
    assert "| extractive_qa | default-teacher | default-student | uld | 1.5 | 1.0 | 8 | f1 |" in table
    assert re.search(r"\| 2 \| \d+% \| - \|", table) and "Failed cells:" in table  # seeds, top answer, paper
    assert "| uld − seqkd |" not in table  # no seqkd in this grid: uld has no baseline to be measured against
    assert (out / "results.png").stat().st_size > 0
    # A rerun skips finished cells and redoes an interrupted one (no metrics.json yet).
    interrupted = out / "cells" / "uld-default-student-seed1"
    (interrupted / "metrics.json").unlink()
    again = run_grid(load_grid(path), out, echo=lambda line: None)
    assert again["done"] == ["uld-default-student-seed1"] and len(again["skipped"]) == 3
    # A truncated metrics.json marks an unfinished cell: named, redone, not a crash.
    truncated = out / "cells" / "sft-default-student-seed0" / "metrics.json"
    finished = json.loads(truncated.read_text())
    truncated.write_text(truncated.read_text()[:40])
    lines = []
    third = run_grid(load_grid(path), out, echo=lines.append)
    assert third["done"] == ["sft-default-student-seed0"] and len(third["skipped"]) == 3
    assert f"{truncated} is unreadable (JSONDecodeError): the run counts as unfinished" in lines
    assert json.loads(truncated.read_text())["scores"] == finished["scores"]


def test_summary_gives_mean_and_spread_over_seeds():
    rows = [dict(status="done", task="squad", teacher="meta-llama/Llama-2-7b-chat-hf",
                 student="EleutherAI/pythia-410m-deduped", method="uld", distillation_weight=1.5, train_fraction=1.0,
                 metric="f1", score=score, cell=f"uld-squad-seed{seed}") for seed, score in enumerate((70.0, 72.0, 74.0))]
    line = summarise(rows).splitlines()[2]
    assert "| 72.00 ± 2.00 | 3 | - | 74.14 | uld-squad-seed* |" in line


def test_summary_keeps_apart_settings_its_columns_do_not_show():
    rows = [dict(status="done", task="extractive_qa", teacher="t", student="s", method="kl", distillation_weight=1.5,
                 train_fraction=1.0, n_train=100, metric="f1", score=score, cell=f"kl-ts{t}-tt{t}-seed{seed}")
            for t, score in ((2.0, 10.0), (4.0, 20.0)) for seed in (0, 1)]
    lines = summarise(rows).splitlines()[2:]
    assert len(lines) == 2 and "| 10.00 ± 0.00 | 2 |" in lines[0] and "kl-ts4.0-tt4.0-seed*" in lines[1]


def test_paper_rows_stand_in_for_an_embedded_task():
    rows = paper_rows("extractive_qa")
    assert rows == paper_rows("squad") and len(rows) == 22  # 8 student-teacher pairs and 3 fractions, two methods
    assert {row["method"] for row in rows} == {"seqkd", "uld"} and {row["fraction"] for row in rows} == {0.25, 0.5, 0.75, 1.0}
    pythia = [row for row in rows if row["student"] == "pythia-410m-deduped" and row["teacher"] == "Llama-2-7b-chat-hf"]
    assert {(row["method"], row["fraction"]): row["score"] for row in pythia}[("uld", 1.0)] == 74.14
    assert all(row["score"] > 0 for row in paper_rows("dialogue_summary"))  # rougeLsum there
    with pytest.raises(ValueError, match="no results for task 'gsm8k'"):
        paper_rows("gsm8k")


def test_paper_numbers_are_looked_up_by_setting():
    llama, pythia = "meta-llama/Llama-2-7b-chat-hf", "EleutherAI/pythia-410m-deduped"
    assert paper_number("squad", llama, pythia, "seqkd", 1.5, 1.0) == 71.39
    assert paper_number("squad", llama, pythia, "uld", 1.5, 0.25) == 69.47
    assert paper_number("dialogsum", llama, pythia, "uld", 1.5, 1.0) is not None
    assert paper_number("squad", llama, pythia, "uld", 0.5, 1.0) is None
    assert paper_number("extractive_qa", "teacher-extractive_qa", "default-student", "uld", 1.5, 1.0) is None


def cli(*args):
    return subprocess.run([sys.executable, "-m", "uld", "replicate", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("", "is empty: it must hold a mapping of base and grid"),
    ("grid: {}\n", "grid must vary at least one setting"),
    ("base:\n  task: [unclosed\ngrid: {seed: [0]}\n", "line 2: malformed YAML"),
    ("grid: {distillation_weight: [-1.5]}\n", "distillation_weight must be >= 0"),
])
def test_cli_bad_grid_exits_2_with_one_line_and_writes_nothing(tmp_path, content, message):
    path = tmp_path / "grid.yaml"
    if content is not None:
        path.write_text(content)
    done = cli("--grid", path, "--out", tmp_path / "out")
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and str(path) in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_shipped_grids_load_and_expand(tmp_path):
    for path in sorted((ROOT / "configs" / "grids").glob("*.yaml")):
        for preset in yaml.safe_load(path.read_text()).get("presets") or [None]:
            grid = load_grid(path, preset)
            assert grid.expand(tmp_path / path.stem / str(preset)), (path, preset)


def test_a_preset_replaces_the_axes_it_names_and_adds_the_rest_to_base(tmp_path):
    presets = {"small": {"train_limit": 2, "seed": [0]}, "big": {"seed": [0, 1, 2], "epochs": 3}}
    path = grid_file(tmp_path, [{"method": ["sft", "seqkd"], "seed": [5]}, {"method": ["raw"]}], presets=presets)
    small = load_grid(path, "small")
    assert small.base["train_limit"] == 2 and small.axes[0] == {"method": ["sft", "seqkd"], "seed": [0]}
    assert small.axes[1] == {"method": ["raw"]}
    big = load_grid(path, "big").expand(tmp_path / "big")
    assert [name for name, _ in big] == ["sft-seed0", "sft-seed1", "sft-seed2", "seqkd-seed0", "seqkd-seed1",
                                         "seqkd-seed2", "raw-seed0"]
    assert {config.epochs for _, config in big if config.method != "raw"} == {3}  # raw trains nothing
    with pytest.raises(ValueError, match="needs --preset; choose from small, big"):
        load_grid(path)
    with pytest.raises(ValueError, match="has no preset 'huge'; choose from small, big"):
        load_grid(path, "huge")
    with pytest.raises(ValueError, match="has no presets; run it without --preset"):
        load_grid(grid_file(tmp_path, {"seed": [0]}), "small")
    with pytest.raises(ValueError, match="unknown config keys in base: epoch"):
        load_grid(grid_file(tmp_path, {"seed": [0]}, presets={"x": {"epoch": 1}}), "x")


def test_a_recipe_is_where_base_starts_and_base_wins(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "r.yaml").write_text("learning_rate: 0.5\nepochs: 7\nweight_decay: 0.25\n")
    path = grid_file(tmp_path, {"seed": [0]}, base={"epochs": 1}, recipe="recipes/r.yaml")
    base = load_grid(path).base
    assert (base["learning_rate"], base["weight_decay"], base["epochs"]) == (0.5, 0.25, 1)
    (tmp_path / "recipes" / "bad.yaml").write_text("learning_rate: 0.5\nepoch: 7\n")
    with pytest.raises(ValueError, match="bad.yaml: unknown config keys: epoch"):
        load_grid(grid_file(tmp_path, {"seed": [0]}, recipe="recipes/bad.yaml"))
    with pytest.raises(ValueError, match="missing.yaml does not exist"):
        load_grid(grid_file(tmp_path, {"seed": [0]}, recipe="recipes/missing.yaml"))


def test_the_cpu_recipe_is_written_once_and_read_by_the_cpu_grids():
    recipe = read_recipe(ROOT / "configs" / "recipes" / "cpu.yaml")
    for name in ("cpu", "control", "fixes"):
        path = ROOT / "configs" / "grids" / f"{name}.yaml"
        data = yaml.safe_load(path.read_text())
        assert data["recipe"] == "../recipes/cpu.yaml" and not set(recipe) & set(data["base"]) - {"teacher_cache"}
        grid = load_grid(path, "cpu" if data.get("presets") else None)
        assert {key: grid.base[key] for key in recipe if key != "teacher_cache"} == \
            {key: value for key, value in recipe.items() if key != "teacher_cache"}
    assert load_grid(ROOT / "configs" / "grids" / "fixes.yaml", "cpu").base["teacher_cache"] is False  # fixes: live


def test_the_ci_grid_runs_through_the_cli(tmp_path):
    done = cli("--grid", ROOT / "configs" / "grids" / "ci.yaml", "--out", tmp_path / "ci")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "ci" / "results.csv").open()))
    assert len(rows) == 11 and {r["status"] for r in rows} == {"done"}  # raw once, 3 methods x 2 seeds, control 2 x 2
    assert {r["method"] for r in rows} == {"raw", "sft", "seqkd", "uld", "kl"}
    assert {r["student"] for r in rows if r["method"] == "kl"} == {"default-student-shared"}
    assert "| uld |" in done.stdout and "11 run, 0 already finished, 0 failed" in done.stdout
    table = (tmp_path / "ci" / "results.md").read_text()
    for pair in ("uld − seqkd", "seqkd − sft", "sft − raw", "kl − seqkd"):
        line = next(line for line in table.splitlines() if f"| {pair} |" in line)
        assert line.split("|")[7].strip() in ("above", "below", "inconclusive")
        assert "2 x" in line and "12 questions" in line
    grid = json.loads((tmp_path / "ci" / "grid.json").read_text())
    assert len(grid["cells"]) == 11
    # The teacher, scored once on the students' questions, in the table and (as a line) in the figure.
    teacher = next(line for line in table.splitlines() if line.startswith("The teacher "))
    assert re.fullmatch(r"The teacher \S+ on the same 12 extractive_qa questions: f1 \d+\.\d\d\.", teacher)
    assert len(list((tmp_path / "ci" / "teacher").glob("*-eval-*/metrics.json"))) == 1
    # The whole job's progress at each cell.
    assert "[11/11] " in done.stdout and re.search(r"\(10 of 11 finished; .* so far, about .* left\)", done.stdout)


def test_a_grid_killed_at_random_points_ends_with_the_uninterrupted_table(tmp_path):
    """SIGKILL at seeded random moments (15-45% of an uninterrupted run's duration, so start-up,
    teacher answers, training or evaluation), then a last run to the end: the same scores and
    predictions as a run never interrupted."""
    import random
    import signal
    import time

    path = grid_file(tmp_path, {"method": ["seqkd", "uld"], "seed": [0, 1]},
                     base={"train_limit": 32, "epochs": 2, "teacher_cache": False, "learning_rate": 0.002})
    started = time.monotonic()
    whole = cli("--grid", path, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    duration = time.monotonic() - started  # kill moments scale with this machine's pace
    moments, kills = random.Random(0), 0
    for _ in range(12):
        process = subprocess.Popen([sys.executable, "-m", "uld", "replicate", "--grid", str(path), "--out",
                                    str(tmp_path / "killed")], cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(moments.uniform(0.15, 0.45) * duration)
        if process.poll() is not None:  # it finished what the kills had left
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
    assert kills >= 3
    last = cli("--grid", path, "--out", tmp_path / "killed")
    assert last.returncode == 0, last.stderr[-2000:]

    def table(out):
        rows = list(csv.DictReader((out / "results.csv").open()))
        return [(r["cell"], r["status"], r["score"], r["steps"]) for r in rows]

    assert table(tmp_path / "killed") == table(tmp_path / "whole")
    for cell in ("seqkd-seed0", "seqkd-seed1", "uld-seed0", "uld-seed1"):
        assert (tmp_path / "killed" / "cells" / cell / "predictions.jsonl").read_text() == \
            (tmp_path / "whole" / "cells" / cell / "predictions.jsonl").read_text()
