"""Where the kit keeps what it materialises (tokenizers, tiny models, teacher caches).

``$ULD_CACHE`` when set, else ``~/.cache/uld``.

>>> import os; os.environ["ULD_CACHE"] = "/tmp/uld-cache"; str(cache_dir())
'/tmp/uld-cache'
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path


def cache_dir() -> Path:
    """The kit's cache folder (not created here)."""
    return Path(os.environ.get("ULD_CACHE") or Path.home() / ".cache" / "uld")


def hub_offline(*variables: str) -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or one of ``variables``) is set to a true value."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", *variables))


def shipped_or_built(shipped: Path, built: Path, build, use_shipped: bool = True) -> Path:
    """A model folder the kit ships (``shipped``, e.g. under ``data/``), else ``built``, made
    once by ``build(built)``; a folder counts when it holds the kit's ``uld.json``."""
    if use_shipped and (Path(shipped) / "uld.json").exists():
        return Path(shipped)
    if (Path(built) / "uld.json").exists():
        return Path(built)
    return Path(build(Path(built)))


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a scratch file, then a rename)."""
    scratch = Path(path).with_name(Path(path).name + ".partial")
    scratch.write_text(text, encoding="utf-8")
    os.replace(scratch, path)


@contextmanager
def replaced_folder(folder: Path):
    """Yield an empty scratch folder; when the block succeeds it replaces ``folder`` whole.

    An interrupted build leaves only ``<folder>.partial``, which the next build clears.
    """
    scratch = Path(folder).with_name(Path(folder).name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    yield scratch
    shutil.rmtree(folder, ignore_errors=True)
    scratch.rename(folder)
