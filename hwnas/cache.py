"""Where caches live: $XDG_CACHE_HOME/hwnas (default ~/.cache/hwnas)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hwnas"


def cache_dir(kind: str) -> Path:
    d = cache_root() / kind
    d.mkdir(parents=True, exist_ok=True)
    return d


def digest(obj: Any, n: int = 16) -> str:
    """Stable short hash of JSON-able inputs: caches are reused only when their inputs match."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]
