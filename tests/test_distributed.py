"""Distillation under torchrun (2 CPU processes, gloo): the ranks end with identical students."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from uld.models import load_model, materialise_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def test_two_ranks_hold_identical_students_after_training(tmp_path):
    cache = tmp_path / "cache"
    for name in ("default-teacher", "default-student"):
        materialise_tiny_model(name, cache)  # once, before the ranks start
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               str(ROOT / "tests" / "helpers" / "ddp_train.py"), str(tmp_path), str(cache)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and {r["rank"] for r in ranks} == {0, 1}
    assert ranks[0]["sha256"] == ranks[1]["sha256"] and ranks[0]["steps"] == ranks[1]["steps"] == 4
    untrained = sum(float(p.detach().double().sum()) for p in load_model("default-student", cache=cache).parameters())
    assert abs(ranks[0]["sum"] - untrained) > 1e-6  # they trained, in step
