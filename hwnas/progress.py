"""Progress lines: stderr (stdout stays for --json), flushed, and only when the caller asked for them."""

from __future__ import annotations

import sys


def log(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)
