"""The documentation's commands, as written, are commands the CLI accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from uld.__main__ import build_parser
from uld.runner import NOTEBOOKS_DIR, discover, select

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "notebooks/README.md", "data/README.md", "results.md"]


def documented_commands() -> list[tuple[str, str]]:
    """``(document, command)`` for every ``python -m uld ...`` line of a code block
    (continuation lines joined, comments dropped)."""
    found = []
    for name in DOCUMENTS:
        blocks = re.findall(r"```(?:bash)?\n(.*?)```", (ROOT / name).read_text(), flags=re.S)
        for block in blocks:
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("#")[0].strip()
                if line.startswith("python -m uld "):
                    found.append((name, line))
    return found


def test_the_documents_show_commands():
    assert len(documented_commands()) >= 15


@pytest.mark.parametrize("document, command", documented_commands())
def test_each_documented_command_parses(document, command):
    words = [w.replace("$name", "pretrained-student") for w in shlex.split(command)][3:]
    args = build_parser().parse_args(words)  # argparse exits 2 on a command it does not accept
    if args.command == "notebooks" and args.only:
        assert select(discover(NOTEBOOKS_DIR), args.only), f"{document}: --only {args.only} selects no notebook"


def test_the_quick_start_is_two_make_targets_and_ci_runs_one_of_them():
    import subprocess

    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    for target, command in (("test", "-m pytest"), ("demo", "-m uld replicate --grid configs/grids/cpu.yaml")):
        # dry run, with the set-up taken as done: the command each target runs
        done = subprocess.run(["make", "-n", "-o", ".venv/.installed", target], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert command in done.stdout and "HF_HUB_OFFLINE=1" in done.stdout, done.stdout
    setup = subprocess.run(["make", "-n", "-B", "setup", "VENV=/nonexistent/venv"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert setup.returncode == 0, setup.stderr
    assert "torch==2.13.0" in setup.stdout and "requirements.lock" in setup.stdout
    assert "--no-deps -r requirements-assets.txt" in setup.stdout and "--no-deps -e ." in setup.stdout
