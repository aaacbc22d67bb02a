"""generate's progress lines (stderr, only when asked for)."""

from __future__ import annotations

import sys


def log(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)
