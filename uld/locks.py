"""One writer per output folder.

Two processes writing one run folder (two ``replicate`` on the same ``--out``) would both
redo every cell into the same files. `one_writer` holds an operating-system lock on
``<folder>/.uld.lock`` (``filelock``: released by the system when its process dies, so a
lock left by a killed run is simply taken over) and writes who holds it beside it, so a
second writer is refused with a message naming the holder:

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with one_writer(folder, "python -m uld replicate ..."):
    ...     try:
    ...         with one_writer(folder, "another"):
    ...             pass
    ...     except FolderBusy as busy:
    ...         print(str(busy).split(" (")[0].replace(str(folder), "OUT"))
    OUT is in use by another run
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

__all__ = ["FolderBusy", "one_writer"]

LOCK_NAME = ".uld.lock"
HOLDER_NAME = ".uld.lock.holder"


class FolderBusy(ValueError):
    """Another process holds the folder's lock."""


@contextmanager
def one_writer(folder, command: str | None = None):
    """Hold ``folder``'s lock for the ``with`` block; `FolderBusy` when another process holds
    it. ``command`` is what the holder file shows to a second writer. A folder the block
    created and left empty is removed again."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise FolderBusy(f"{folder} is in use by another run ({_holder(folder)}); wait for it to finish "
                         f"or choose another folder") from None
    try:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": command or " ".join(sys.argv)}
        (folder / HOLDER_NAME).write_text(json.dumps(holder))
        yield folder
    finally:
        (folder / HOLDER_NAME).unlink(missing_ok=True)
        lock.release()
        if created and {p.name for p in folder.iterdir()} <= {LOCK_NAME}:  # nothing written: leave nothing
            (folder / LOCK_NAME).unlink(missing_ok=True)
            folder.rmdir()


def _holder(folder: Path) -> str:
    try:
        holder = json.loads((folder / HOLDER_NAME).read_text())
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']}: {holder['command']}"
    except (OSError, ValueError, KeyError):
        return "holder unknown"
