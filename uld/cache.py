"""Where the kit keeps what it materialises (tokenizers, tiny models, teacher caches).

``$ULD_CACHE`` when set, else ``~/.cache/uld``.

>>> import os; os.environ["ULD_CACHE"] = "/tmp/uld-cache"; str(cache_dir())
'/tmp/uld-cache'
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The kit's cache folder (not created here)."""
    return Path(os.environ.get("ULD_CACHE") or Path.home() / ".cache" / "uld")
