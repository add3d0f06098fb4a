"""`python -m uld distill`: configs, every method end to end at a tiny size, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from uld.distill import DistillConfig, RunFinished, run_distillation

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(task="extractive_qa", train_limit=16, eval_limit=6, epochs=1, max_new_tokens=6, batch_size=8, logging_steps=1)


@pytest.mark.parametrize("method", ["raw", "sft", "seqkd", "uld"])
def test_every_method_runs_and_writes_scored_results(method, tmp_path):
    results = run_distillation(DistillConfig(method=method, out=str(tmp_path), **TINY), echo=lambda line: None)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["scores"] == results["scores"] and set(results["scores"]) == {"f1", "em"}
    assert saved["method"] == method and saved["student"] == "default-student" and saved["seconds"] > 0
    assert all(0 <= value <= 100 for value in results["scores"].values())
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 6
    assert (tmp_path / "teacher_answers.jsonl").exists() == (method in ("seqkd", "uld"))
    assert results["n_train"] == (0 if method == "raw" else 16)


def test_a_finished_run_is_kept_unless_asked_and_a_redo_reuses_the_teacher_answers(tmp_path):
    config = DistillConfig(method="seqkd", out=str(tmp_path), **TINY)
    first = run_distillation(config, echo=lambda line: None)
    assert first["steps"] == 2 and first["teacher"] == "default-teacher"
    journal = (tmp_path / "teacher_answers.jsonl").read_text()
    with pytest.raises(RunFinished, match="already holds a finished run"):
        run_distillation(config, echo=lambda line: None)
    run_distillation(config, echo=lambda line: None, overwrite=True)
    assert (tmp_path / "teacher_answers.jsonl").read_text() == journal


@pytest.mark.parametrize("values, message", [
    (dict(method="magic"), "unknown method 'magic'"),
    (dict(task="trivia"), "unknown task 'trivia'"),
    (dict(train_fraction=0.0), "train_fraction"),
    (dict(epochs=0), "epochs must be positive"),
    (dict(epochs="five"), "epochs must be float, got 'five'"),
    (dict(skip_student_eos=1), "skip_student_eos must be bool"),
    (dict(batch_size=True), "batch_size must be int"),
])
def test_bad_configs_are_value_errors(values, message):
    with pytest.raises(ValueError, match=message):
        DistillConfig(**values)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "uld", "distill", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_cli_runs_a_config_with_overrides(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("task: generative_qa\nmethod: uld\neval_limit: 3\nmax_new_tokens: 5\n")
    done = cli("--config", config, "--set", "method=raw", "--set", "eval_limit=4", "--out", tmp_path / "r")
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["method"] == "raw" and metrics["n_eval"] == 4 and metrics["metric"] == "rougeLsum"


@pytest.mark.parametrize("args, message", [
    (["--set", "bogus=1"], "unknown config keys: bogus"),
    (["--set", "epochs=many"], "epochs must be float"),
    (["--set", "method"], "--set takes key=value"),
    (["--set", "task=trivia"], "unknown task 'trivia'"),
    (["--set", "method=raw", "--set", "student=/no/such/model"], "/no/such/model"),
    (["--config", "/no/such.yaml"], "No such file"),
])
def test_cli_errors_exit_2_with_one_line(tmp_path, args, message):
    done = cli(*args, "--out", tmp_path / "r")
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_cli_refuses_to_overwrite_a_finished_run(tmp_path):
    assert cli("--set", "method=raw", "--set", "eval_limit=2", "--set", "max_new_tokens=3", "--out", tmp_path).returncode == 0
    again = cli("--set", "method=raw", "--out", tmp_path)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_the_shipped_configs_load():
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        config = DistillConfig.load(path, out="x")
        assert config.method == "uld"
    assert DistillConfig.load(ROOT / "configs" / "paper" / "squad.yaml", out="x").teacher_shots == 1


def test_kl_distils_an_encoder_decoder_student_sharing_the_teachers_tokenizer(tmp_path):
    results = run_distillation(DistillConfig(method="kl", student="tiny-mt5", out=str(tmp_path), **TINY),
                               echo=lambda line: None)
    assert results["n_train"] == 16 and results["steps"] >= 1
    distillation = [entry["distillation"] for entry in results["log_history"] if "distillation" in entry]
    assert distillation and all(value > 0 for value in distillation)


def test_kl_across_two_tokenizers_is_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="kl method needs one tokenizer shared"):
        run_distillation(DistillConfig(method="kl", out=str(tmp_path), **TINY), echo=lambda line: None)


def test_uld_distils_an_encoder_decoder_student(tmp_path):
    results = run_distillation(DistillConfig(method="uld", student="tiny-mt5", teacher="tiny-llama",
                                             out=str(tmp_path), **TINY), echo=lambda line: None)
    distillation = [entry["distillation"] for entry in results["log_history"] if "distillation" in entry]
    assert results["n_train"] == 16 and distillation and all(value > 0 for value in distillation)
