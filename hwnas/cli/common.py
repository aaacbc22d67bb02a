"""What every command shares: --json output, progress on stderr, exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")


def add_force_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="overwrite an existing output")


def emit(args: argparse.Namespace, result: dict[str, Any], human: str | None = None) -> None:
    """Print the result: one JSON line with --json, readable text otherwise."""
    if getattr(args, "json", False):
        print(json.dumps(result, default=_jsonable), flush=True)
    else:
        print(human if human is not None else json.dumps(result, indent=2, default=_jsonable), flush=True)


def log(msg: str) -> None:
    """Progress and notes go to stderr so stdout stays machine-readable."""
    print(msg, file=sys.stderr, flush=True)


def _jsonable(o: Any) -> Any:
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)
