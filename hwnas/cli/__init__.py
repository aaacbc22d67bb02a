"""The `hwnas` command line: a thin layer over the Python API.

Each command lives in its own module exposing `register(subparsers)`; the handler it
sets returns an exit code. UserError -> exit 2 with one line on stderr, no traceback;
BudgetNotMet (generate) -> exit 3.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from hwnas import __version__
from hwnas.errors import BudgetNotMet, UserError

COMMAND_MODULES = ["space", "profile", "latency", "train", "import_ofa", "search", "export", "generate"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse already exits 2; keep its one-line form
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hwnas", description="Hardware-aware on-device model generator.")
    parser.add_argument("--version", action="version", version=f"hwnas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"hwnas.cli.{name}_cmd")
        except ModuleNotFoundError as e:  # a command still under construction
            if e.name != f"hwnas.cli.{name}_cmd":
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
    except UserError as e:
        print(f"hwnas {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BudgetNotMet as e:  # a defined outcome, not a bug: its own exit code, no traceback
        print(f"hwnas {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"hwnas {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug or an environment failure: the traceback helps the report
        traceback.print_exc()
        print(f"hwnas {args.command}: unexpected failure (exit 1); please report it with the traceback above", file=sys.stderr)
        return 1
    return int(code or 0)


def entry() -> None:
    sys.exit(main())
