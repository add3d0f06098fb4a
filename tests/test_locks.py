"""One writer per run folder: a second process is refused naming the holder; a dead holder's lock is taken over."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from uld.locks import FolderBusy, one_writer

ROOT = Path(__file__).resolve().parents[1]
HOLD = "import sys, time; from uld.locks import one_writer\nwith one_writer(sys.argv[1], 'the holder'):\n" \
       "    print('held', flush=True); time.sleep(120)"


@pytest.fixture
def holder(tmp_path):
    """Another process holding ``tmp_path / 'out'``."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True,
                               cwd=ROOT)
    assert process.stdout.readline().strip() == "held"
    yield process
    process.kill()
    process.wait()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, holder):
    with pytest.raises(FolderBusy, match=f"in use by another run \\(pid {holder.pid} on .*: the holder\\)"):
        with one_writer(tmp_path / "out"):
            pass


@pytest.mark.parametrize("command", [
    ["replicate", "--grid", ROOT / "configs" / "grids" / "ci.yaml"],
    ["distill", "--set", "method=raw"],
])
def test_the_cli_refuses_a_busy_folder_with_one_line_and_exit_2(tmp_path, holder, command):
    done = subprocess.run([sys.executable, "-m", "uld", *map(str, command), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert f"is in use by another run (pid {holder.pid}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".uld.lock", ".uld.lock.holder"]


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with one_writer(tmp_path / "out") as folder:
        (folder / "result.txt").write_text("mine")
    assert (tmp_path / "out" / "result.txt").read_text() == "mine"


def test_a_folder_left_empty_is_removed_and_one_written_to_is_kept(tmp_path):
    with one_writer(tmp_path / "empty"):
        pass
    assert not (tmp_path / "empty").exists()
    with one_writer(tmp_path / "used") as folder:
        (folder / "a.txt").write_text("a")
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == [".uld.lock", "a.txt"]
