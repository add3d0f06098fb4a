"""The GitHub workflows cannot run here: check their structure and every kit command they run."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from uld.__main__ import build_parser

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def load(name):
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as true
    return workflow


def commands(workflow):
    """Every `python -m uld ...` line of every run step, matrix values filled in."""
    found = []
    for job in workflow["jobs"].values():
        matrix = job.get("strategy", {}).get("matrix", {})
        for step in job["steps"]:
            for line in step.get("run", "").splitlines():
                if "python -m uld" not in line:
                    continue
                variants = [line]
                for key, values in matrix.items():
                    variants = [v.replace(f"${{{{ matrix.{key} }}}}", str(value)) for v in variants for value in values]
                found += variants
    return found


@pytest.mark.parametrize("name", ["cpu.yml", "gpu.yml"])
def test_workflows_are_well_formed(name):
    workflow = load(name)
    assert workflow["name"] and workflow["on"] and workflow["jobs"]
    for job in workflow["jobs"].values():
        assert job["runs-on"] and job["steps"]
        assert all(("uses" in step) != ("run" in step) for step in job["steps"])
        assert "${{" not in str(job.get("runs-on"))


@pytest.mark.parametrize("name", ["cpu.yml", "gpu.yml"])
def test_every_kit_command_in_a_workflow_parses_and_names_existing_files(name):
    lines = commands(load(name))
    assert lines
    for line in lines:
        words = shlex.split(line.split("python -m uld", 1)[1])
        args = build_parser().parse_args(words)
        for option in ("grid", "config"):
            if getattr(args, option, None) is not None:
                assert (ROOT / getattr(args, option)).exists(), line


def test_the_gpu_workflow_runs_every_notebook_in_its_own_job_and_uploads_results():
    workflow = load("gpu.yml")
    notebooks = workflow["jobs"]["notebooks"]
    assert notebooks["strategy"]["fail-fast"] is False
    shipped = sorted(path.name[:2] for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks["strategy"]["matrix"]["notebook"] == shipped
    assert "gpu" in notebooks["runs-on"] and "self-hosted" in notebooks["runs-on"]
    for job in workflow["jobs"].values():
        assert any(step.get("uses", "").startswith("actions/upload-artifact") for step in job["steps"])
    grids = workflow["jobs"]["paper-grid"]["strategy"]["matrix"]["grid"]
    assert all((ROOT / "configs" / "grids" / f"{grid}.yaml").exists() for grid in grids)


def test_the_cpu_workflow_runs_the_ci_script():
    steps = load("cpu.yml")["jobs"]["tests"]["steps"]
    assert any(step.get("run") == ".ci/run" for step in steps)


def test_the_gpu_workflow_runs_the_course_offline_and_the_gpu_check():
    jobs = load("gpu.yml")["jobs"]
    run_step = next(step for step in jobs["notebooks"]["steps"] if "--preset gpu" in step.get("run", ""))
    assert run_step["env"]["HF_HUB_OFFLINE"] == "1"
    assert any("benchmarks/gpu_check.sh" in step.get("run", "") for step in jobs["gpu-check"]["steps"])
    presets = yaml.safe_load((ROOT / "notebooks" / "params" / "gpu.yaml").read_text())
    hub_ids = [value for settings in presets.values() for value in str(settings).split("'") if "/" in value]
    assert not hub_ids, f"a gpu preset names a hub model: {hub_ids}"
