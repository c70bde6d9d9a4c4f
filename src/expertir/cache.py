"""The user's cache folder: results that are slow to compute and never change for the same
input (a model's measured memory, CEA's fitted degradation probe, BM3D outputs).

Every entry is keyed by everything its value depends on, written atomically, and computed
again when its file is missing or unreadable; deleting the folder is always safe.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$EXPERTIR_CACHE_DIR``, else ``$XDG_CACHE_HOME/expertir``, else ``~/.cache/expertir``."""
    if os.environ.get("EXPERTIR_CACHE_DIR"):
        return Path(os.environ["EXPERTIR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "expertir"
