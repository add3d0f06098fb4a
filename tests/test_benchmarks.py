"""The loss benchmark runs end to end at a tiny size, and its peers agree with ULDLoss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_loss_benchmark_writes_its_table_and_json(tmp_path):
    out = tmp_path / "loss_speed.json"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "loss_speed.py"),
        "--batch", "2", "--seq", "24", "--min-answer", "3", "--max-answer", "10",
        "--student-vocab", "300", "--teacher-vocab", "200", "--top-k", "16", "--repeats", "1",
        "--variants", "uld_exact,uld_top_k,uld_offsets,uld_hybrid,published,trl", "--out", str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "fwd+bwd s" in done.stdout and "published" in done.stdout
    report = json.loads(out.read_text())
    rows = {row["variant"]: row for row in report["rows"]}
    assert set(rows) == {"uld_exact", "uld_top_k", "uld_offsets", "uld_hybrid", "published", "trl"}
    assert rows["uld_offsets"]["loss"] != rows["uld_exact"]["loss"]  # other pairs: the positions that start together
    assert all(row["seconds"] > 0 for row in rows.values())
    # The loop shaped like the published code computes the same loss as ULDLoss.
    assert abs(rows["uld_exact"]["loss"] - rows["published"]["loss"]) <= 1e-5 * abs(rows["published"]["loss"])
    assert abs(rows["uld_exact"]["loss"] - rows["trl"]["loss"]) <= 1e-5 * abs(rows["trl"]["loss"])  # TRL's GOLD
    top_k = rows["uld_top_k"]
    assert top_k["abs_error"] <= top_k["reported_bound"] + 1e-7
    assert set(report["ratios"]) == {f"{a}_vs_{b}" for a in ("uld_exact", "uld_top_k") for b in ("published", "trl")}


def test_gold_side_by_side_agrees_where_the_semantics_agree_and_explains_the_rest(tmp_path):
    out = tmp_path / "gold.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gold_side_by_side.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert all(row["holds"] for row in rows)
    same = [row for row in rows if row["relation"] == "same"]
    explained = [row for row in rows if row["relation"] == "explained"]
    assert all(abs(row["ours"] - row["trl"]) <= 1e-5 for row in same)
    assert all(abs(row["explained"] - row["trl"]) <= 1e-5 < 1e-4 < abs(row["ours"] - row["trl"]) for row in explained)
    for mode in ("positional", "extended / offsets", "hybrid, beta=0"):  # each mode agrees somewhere, differs somewhere
        assert {row["relation"] for row in rows if row["mode"] == mode} == {"same", "explained"}
    counts = {(c["student"], c["teacher"]): c for c in report["shared_tokens"]}
    assert counts[("gpt2", "llama")]["uld_texts"] > 2 * counts[("gpt2", "llama")]["gold_entries"]  # Ġ and ▁ differ
    assert "all 9 rows hold" in done.stdout


def test_gold_side_by_side_names_the_missing_peer():
    script = ROOT / "benchmarks" / "gold_side_by_side.py"
    hide_trl = ("import importlib.util as u, runpy, sys; find = u.find_spec; "
                "u.find_spec = lambda name, *a: None if name == 'trl' else find(name, *a); "
                f"sys.argv = ['x']; runpy.run_path({str(script)!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", hide_trl], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "trl is not installed: pip install -r benchmarks/requirements.txt" in done.stderr


def test_loss_benchmark_rejects_bad_arguments():
    command = [sys.executable, str(ROOT / "benchmarks" / "loss_speed.py"), "--variants", "nope"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unknown variants" in done.stderr


def test_step_time_benchmark_runs(tmp_path):
    out = tmp_path / "step_time.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--steps", "3", "--batch", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {row["variant"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"sft", "uld", "uld_cache"} and rows["sft"]["vs_sft"] == 1.0
    assert all(row["seconds_per_step"] > 0 and row["steps"] == 2 for row in rows.values())
    assert rows["uld_cache"]["bytes_per_token"] == 256 * 2 + 4 and "per answer token (top-256, float16)" in done.stdout


def test_tokenizer_pair_benchmark_prints_and_writes_its_table():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tokenizer_pair.py")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| extractive_qa |" in done.stdout and "| dialogue_summary |" in done.stdout
    rows = json.loads((ROOT / "benchmarks" / "results" / "tokenizer_pair.json").read_text())
    assert [row["task"] for row in rows] == ["extractive_qa", "generative_qa", "dialogue_summary"]
    assert all(0.8 <= row["contexts"] <= 1.3 and 0.8 <= row["answers"] <= 1.3 for row in rows)
    assert all(0 < row["positions_alike"] < 1 for row in rows)  # two real tokenizers: some positions alike, not all


def test_teachers_against_gold_students_on_a_tiny_grid(tmp_path):
    grid = tmp_path / "gold.yaml"
    grid.write_text("base: {train_limit: 8, eval_limit: 4, epochs: 1, batch_size: 8, max_new_tokens: 6, "
                    "student: default-student}\ngrid:\n  - task: [generative_qa]\n    method: [raw]\n"
                    "  - task: [generative_qa]\n    method: [sft]\n    seed: [0, 1]\n")
    replicate = subprocess.run([sys.executable, "-m", "uld", "replicate", "--grid", str(grid), "--out",
                                str(tmp_path / "runs")], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert replicate.returncode == 0, replicate.stderr[-2000:]
    out = tmp_path / "teachers.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "teachers_vs_gold.py"), "--grid", str(grid),
                           "--runs", str(tmp_path / "runs"), "--teacher", "default-teacher", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [(r["task"], r["metric"]) for r in rows] == [("generative_qa", "rougeLsum"), ("generative_qa", "em")]
    assert all(r["sft_seeds"] == 2 and r["verdict"] in ("above", "below", "inconclusive") for r in rows)
    assert all(r["interval"][0] <= r["teacher_minus_sft"] <= r["interval"][1] for r in rows)
    assert "| generative_qa | rougeLsum |" in done.stdout
    teacher = json.loads((tmp_path / "runs" / "teacher" / "default-teacher-generative_qa-test" / "metrics.json").read_text())
    assert teacher["n_eval"] == 4


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: these check its absence")


@NO_CUDA
def test_the_gpu_check_refuses_a_machine_without_cuda_and_names_why(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OUT": str(tmp_path / "check")})
    assert done.returncode == 2 and "needs a CUDA GPU" in done.stderr


@NO_CUDA
def test_the_loss_benchmark_refuses_cuda_where_there_is_none(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "loss_speed.py"), "--device", "cuda",
                           "--out", str(tmp_path / "x.json")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no CUDA device here" in done.stderr


def test_the_jupyterlab_check_counts_what_a_notebook_saves_and_names_what_it_lacks(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from notebooks_in_jupyterlab import problems, saved_outputs
    finally:
        sys.path.pop(0)
    saved = saved_outputs(ROOT / "notebooks" / "04_loss_on_sequences.ipynb")
    assert saved["widgets"] == 1 and saved["figures"] >= 5 and saved["tables"] >= 5
    seen = {**saved, "errors": 0, "modified": False}
    assert problems(saved, seen) == []
    assert problems(saved, {**seen, "figures": 4, "errors": 1, "modified": True}) == [
        f"4 of {saved['figures']} figures shown", "1 error outputs", "marked modified on opening"]
    # without a browser it says what to install, in one line, and exits 2
    script = ROOT / "benchmarks" / "notebooks_in_jupyterlab.py"
    done = subprocess.run([sys.executable, str(script), "--chromium", str(tmp_path / "chromium")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "chromium not found: apt-get install chromium chromium-driver" in done.stderr
