"""`python -m uld distill`: configs, every method end to end at a tiny size, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from uld.distill import DistillConfig, RunFinished, run_distillation
from uld.methods import unread_settings

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


def test_a_redo_with_another_teacher_refuses_the_first_teachers_answers(tmp_path):
    run_distillation(DistillConfig(method="seqkd", out=str(tmp_path), **TINY), echo=lambda line: None)
    changed = DistillConfig(method="seqkd", out=str(tmp_path), **{**TINY, "max_new_tokens": 5})
    with pytest.raises(ValueError, match="written under other settings \\(max_new_tokens 6 there, 5 here\\)"):
        run_distillation(changed, echo=lambda line: None, overwrite=True)


def test_a_finished_run_keeps_its_student_not_its_checkpoints_and_a_redo_trains_again(tmp_path, monkeypatch):
    from transformers import Trainer

    from uld.data import load_task
    from uld.generation import answer_questions
    from uld.models import load_model, load_tokenizer

    config = DistillConfig(method="sft", out=str(tmp_path), **TINY)
    first = run_distillation(config, echo=lambda line: None)
    assert not (tmp_path / "checkpoints").exists() and (tmp_path / "student" / "config.json").exists()
    student = str(tmp_path / "student")
    answers = answer_questions(load_model(student), load_tokenizer(student), load_task("extractive_qa", "eval", limit=6),
                               kind="extractive_qa", max_new_tokens=6)
    saved = [json.loads(line)["prediction"] for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert answers == saved  # the folder holds the student that was scored
    real_step, steps = Trainer.training_step, []

    def counted_step(self, *args, **kwargs):
        steps.append(self.state.global_step)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", counted_step)
    again = run_distillation(config, echo=lambda line: None, overwrite=True)
    assert steps == [0, 1] and again["scores"] == first["scores"]  # trained from the start, not resumed


@pytest.mark.parametrize("values, message", [
    (dict(method="magic"), "unknown method 'magic'"),
    (dict(task="trivia"), "unknown task 'trivia'"),
    (dict(train_fraction=0.0), "train_fraction"),
    (dict(epochs=0), "epochs must be positive"),
    (dict(epochs="five"), "epochs must be float, got 'five'"),
    (dict(skip_student_eos=1), "skip_student_eos must be bool"),
    (dict(batch_size=True), "batch_size must be int"),
    (dict(distillation_weight=-1.5), "distillation_weight must be >= 0, got -1.5"),
    (dict(distillation_weight=float("nan")), "distillation_weight must be >= 0"),
    (dict(student_temperature=0.0), "student_temperature must be positive"),
    (dict(teacher_temperature=-1.0), "teacher_temperature must be positive"),
    (dict(top_k=0), "top_k must be positive"),
    (dict(train_limit=0), "train_limit must be positive"),
    (dict(weight_decay=-0.1), "weight_decay must be >= 0"),
    (dict(alignment="chars"), "alignment must be one of position, offsets, got 'chars'"),
    (dict(alignment="offsets", teacher_cache=True), "alignment offsets needs the live teacher"),
    (dict(hybrid_loss=True, teacher_cache=True), "hybrid_loss applies to the uld method with the live teacher"),
    (dict(hybrid_loss=True, method="kl"), "hybrid_loss applies to the uld method"),
    (dict(matched_weight=-1.0), "matched_weight must be >= 0"),
    (dict(teacher_cache=True, top_k=512), "top_k 512 exceeds teacher_cache_top_k 256"),
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
    (["--config", "/no/such.yaml"], "/no/such.yaml does not exist"),
    (["--set", "distillation_weight=-1.5"], "distillation_weight must be >= 0"),
    (["--set", "method=uld", "--set", "student_temperature=0"], "student_temperature must be positive"),
    (["--set", "seed=[unclosed"], "--set seed=[unclosed: malformed YAML value"),
    ([], "nothing to run"),
])
def test_cli_errors_exit_2_with_one_line(tmp_path, args, message):
    done = cli(*args, "--out", tmp_path / "r")
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # refused before anything was written


@pytest.mark.parametrize("content, message", [
    ("", "is empty: it must hold a mapping of config keys"),
    ("# only a comment\n", "is empty"),
    ("task: [unclosed\n", "line 1: malformed YAML"),
    ("method: uld\n  bad indent: 1\n", "line 2: malformed YAML"),
    ("- uld\n", "must hold a mapping of config keys, not a list"),
])
def test_cli_refuses_empty_and_malformed_config_files(tmp_path, content, message):
    config = tmp_path / "run.yaml"
    config.write_text(content)
    done = cli("--config", config, "--out", tmp_path / "r")
    assert done.returncode == 2, done.stderr
    assert f"{config}" in done.stderr and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_cli_refuses_to_overwrite_a_finished_run(tmp_path):
    assert cli("--set", "method=raw", "--set", "eval_limit=2", "--set", "max_new_tokens=3", "--out", tmp_path).returncode == 0
    again = cli("--set", "method=raw", "--out", tmp_path)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    metrics = tmp_path / "metrics.json"
    metrics.write_text(metrics.read_text()[:25])  # truncated: the run is unfinished, and redone
    redone = cli("--set", "method=raw", "--set", "eval_limit=2", "--set", "max_new_tokens=3", "--out", tmp_path)
    assert redone.returncode == 0, redone.stderr
    assert f"{metrics} is unreadable" in redone.stdout and json.loads(metrics.read_text())["n_eval"] == 2


def test_the_shipped_configs_load():
    for path in sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "configs" / "paper").glob("*.yaml")):
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


@pytest.mark.parametrize("student, teacher, cached", [("tiny-mt5", "tiny-llama", False),
                                                      ("default-student-mt5", "default-teacher", True)])
def test_uld_distils_an_encoder_decoder_student(tmp_path, student, teacher, cached):
    results = run_distillation(DistillConfig(method="uld", student=student, teacher=teacher, teacher_cache=cached,
                                             out=str(tmp_path), **TINY), echo=lambda line: None, progress=False)
    distillation = [entry["distillation"] for entry in results["log_history"] if "distillation" in entry]
    assert results["n_train"] == 16 and distillation and all(value > 0 for value in distillation)


def test_runs_sharing_teacher_outputs_train_from_the_cache_without_loading_the_teacher(tmp_path, monkeypatch):
    shared = tmp_path / "teacher"
    options = dict(TINY, method="uld", teacher_cache=True, teacher_cache_top_k=64, teacher_outputs=str(shared))
    first = run_distillation(DistillConfig(out=str(tmp_path / "a"), **options), echo=lambda line: None)
    assert first["teacher_cache_bytes_per_token"] == 64 * 2 + 4
    assert (shared / "teacher_answers.jsonl").exists() and len(list((shared / "teacher_cache").glob("k64-t1-*/meta.json"))) == 1
    import uld.models

    real_load = uld.models.load_model

    def student_only(name, **kwargs):
        assert name != "default-teacher", "the teacher was loaded"
        return real_load(name, **kwargs)

    monkeypatch.setattr(uld.models, "load_model", student_only)
    second = run_distillation(DistillConfig(out=str(tmp_path / "b"), distillation_weight=0.5, **options),
                              echo=lambda line: None)
    assert second["steps"] == first["steps"] == 2
    assert all("distillation" in e for e in second["log_history"] if "loss" in e)


def test_kl_from_a_cache_of_the_whole_vocabulary_trains_as_the_live_teacher_does(tmp_path):
    """The positive control without the teacher in memory: its cache keeps the token ids."""
    options = dict(TINY, method="kl", student="default-student-shared", teacher_cache_top_k=1355)
    live = run_distillation(DistillConfig(out=str(tmp_path / "live"), **options), echo=lambda line: None)
    cached = run_distillation(DistillConfig(out=str(tmp_path / "cached"), teacher_cache=True, **options),
                              echo=lambda line: None)
    assert cached["teacher_cache_bytes_per_token"] == 1355 * (2 + 4) + 4
    assert len(list((tmp_path / "cached" / "teacher_cache").glob("k1355-t1-*-ids/meta.json"))) == 1

    def distillation(results):
        return [e["distillation"] for e in results["log_history"] if "distillation" in e]

    assert len(distillation(cached)) == 2 and distillation(cached) == pytest.approx(distillation(live), rel=1e-3)


def test_uld_aligned_by_characters_trains_and_differs_from_positional(tmp_path):
    runs = {rule: run_distillation(DistillConfig(method="uld", alignment=rule, out=str(tmp_path / rule), **TINY),
                                   echo=lambda line: None, progress=False) for rule in ("position", "offsets")}
    distillation = {rule: [e["distillation"] for e in r["log_history"] if "distillation" in e]
                    for rule, r in runs.items()}
    assert all(distillation.values()) and distillation["offsets"] != distillation["position"]
    assert runs["offsets"]["config"]["alignment"] == "offsets"
    assert "alignment" in unread_settings("seqkd") and "alignment" not in unread_settings("uld")


def test_the_hybrid_loss_trains_across_tokenizers(tmp_path):
    results = run_distillation(DistillConfig(method="uld", hybrid_loss=True, matched_weight=2.0, out=str(tmp_path),
                                             **TINY), echo=lambda line: None, progress=False)
    distillation = [e["distillation"] for e in results["log_history"] if "distillation" in e]
    assert distillation and all(value > 0 for value in distillation)
    assert results["config"]["hybrid_loss"] and "hybrid_loss" in unread_settings("sft")


def test_a_learning_curve_is_logged_when_asked(tmp_path):
    results = run_distillation(DistillConfig(method="sft", out=str(tmp_path), eval_steps=1, **TINY),
                               echo=lambda line: None)
    curve = [e for e in results["log_history"] if "eval_f1" in e]
    losses = [e for e in results["log_history"] if "eval_loss" in e]
    assert [e["step"] for e in curve] == [1, 2] and [e["step"] for e in losses] == [1, 2]
    assert all(0 <= e["eval_f1"] <= 100 for e in curve)


class Interrupt(Exception):
    pass


def test_an_interrupted_training_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    options = dict(TINY, method="sft", epochs=2, train_limit=32, max_new_tokens=4)
    straight = run_distillation(DistillConfig(out=str(tmp_path / "straight"), **options), echo=lambda line: None)
    from transformers import Trainer

    real_step = Trainer.training_step
    steps, failures = [], [6]  # fail once at step 6: epoch 2, after the epoch-1 checkpoint (step 4)

    def failing_step(self, *args, **kwargs):
        steps.append(self.state.global_step)
        if failures and self.state.global_step == failures[0]:
            failures.pop()
            raise Interrupt()
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", failing_step)
    with pytest.raises(Interrupt):
        run_distillation(DistillConfig(out=str(tmp_path / "resumed"), **options), echo=lambda line: None)
    assert (tmp_path / "resumed" / "checkpoints" / "checkpoint-4").exists()
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    steps.clear()
    resumed = run_distillation(DistillConfig(out=str(tmp_path / "resumed"), **options), echo=lambda line: None)
    assert steps == [4, 5, 6, 7]  # only the unfinished epoch is trained again
    straight_losses = [e["loss"] for e in straight["log_history"] if "loss" in e]
    resumed_losses = [e["loss"] for e in resumed["log_history"] if "loss" in e]
    assert resumed_losses == pytest.approx(straight_losses, rel=1e-4)
    assert resumed["scores"] == straight["scores"]


def test_a_hub_task_offline_is_one_line_with_advice_a_cli_user_can_follow(tmp_path):
    done = cli("--config", ROOT / "configs" / "paper" / "squad.yaml", "--out", tmp_path / "r")
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "--set task_source=path/to/copy" in done.stderr
    assert not (tmp_path / "r").exists()


def test_a_local_copy_of_a_hub_task_is_a_config_field(tmp_path):
    squad = {"id": "a1", "title": "T", "context": "Ada lives in Lund.", "question": "Where does Ada live?",
             "answers": {"text": ["Lund"], "answer_start": [13]}}
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text(json.dumps(squad) + "\n")
    done = cli("--set", "task=squad", "--set", "method=raw", "--set", f"task_source={tmp_path}",
               "--set", "max_new_tokens=3", "--out", tmp_path / "r")
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["task"] == "squad" and metrics["n_eval"] == 1


def test_ctrl_c_prints_one_line_and_exits_130(monkeypatch, capsys):
    import uld.__main__ as command_line

    def interrupted(args, argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(command_line, "_run", interrupted)
    assert command_line.main(["distill", "--set", "method=raw", "--out", "x"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "python -m uld distill: interrupted; rerun the same command to resume"]
