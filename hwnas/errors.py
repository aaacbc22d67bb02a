"""Error types that decide the CLI exit code.

`UserError` (and subclasses) means bad input: the CLI prints one line and exits 2.
Anything else is a bug or an environment failure: exit 1.
"""

from __future__ import annotations


class HwnasError(Exception):
    """Base class of hwnas errors."""


class UserError(HwnasError, ValueError):
    """Bad input or usage: the message names the file, field or flag and what would be valid."""


class DataError(UserError):
    """A dataset that cannot be used (missing split, empty folder, unreadable image...)."""


class TrainingDiverged(HwnasError):
    """Loss became NaN/inf; the last good checkpoint is kept."""


class BudgetNotMet(HwnasError):
    """`generate` delivered no model within the latency budget (exit 3); `result` is what --json prints."""

    exit_code = 3

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result or {}
