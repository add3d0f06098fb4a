"""`python -m uld distill`: configs, every method end to end at a tiny size, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from uld.distill import DistillConfig, run_distillation

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(task="extractive_qa", train_limit=16, eval_limit=6, epochs=1, max_new_tokens=6, batch_size=8)


@pytest.mark.parametrize("method", ["raw", "sft", "seqkd", "uld"])
def test_every_method_runs_and_writes_scored_results(method, tmp_path):
    results = run_distillation(DistillConfig(method=method, out=str(tmp_path), **TINY), echo=lambda line: None)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["scores"] == results["scores"] and set(results["scores"]) == {"f1", "em"}
    assert all(0 <= value <= 100 for value in results["scores"].values())
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 6
    assert (tmp_path / "teacher_answers.jsonl").exists() == (method in ("seqkd", "uld"))
    assert results["n_train"] == (0 if method == "raw" else 16)


def test_a_rerun_reuses_the_teacher_answers(tmp_path):
    config = DistillConfig(method="seqkd", out=str(tmp_path), **TINY)
    run_distillation(config, echo=lambda line: None)
    journal = (tmp_path / "teacher_answers.jsonl").read_text()
    lines = []
    run_distillation(config, echo=lines.append)
    assert (tmp_path / "teacher_answers.jsonl").read_text() == journal
    assert any("teacher answers" in line for line in lines)


@pytest.mark.parametrize("values, message", [
    (dict(method="magic"), "unknown method 'magic'"),
    (dict(task="trivia"), "unknown task 'trivia'"),
    (dict(train_fraction=0.0), "train_fraction"),
    (dict(epochs=0), "epochs must be positive"),
])
def test_bad_configs_are_value_errors(values, message):
    with pytest.raises(ValueError, match=message):
        DistillConfig(**values)


def test_cli_config_file_and_flags(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("task: generative_qa\nmethod: raw\neval_limit: 3\nmax_new_tokens: 5\n")
    done = subprocess.run([sys.executable, "-m", "uld", "distill", "--config", str(config), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["config"]["task"] == "generative_qa" and results["metric"] == "rougeLsum"
    config.write_text("task: generative_qa\nbogus: 1\n")
    bad = subprocess.run([sys.executable, "-m", "uld", "distill", "--config", str(config)], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "unknown config keys" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
