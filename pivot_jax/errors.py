"""The project's error type for problems in what a user gave: a file, a line, a field, a config key or value.

Commands print such an error as one line (plus its hint), without a traceback (`--verbose` or
`PIVOT_JAX_VERBOSE=1` shows it); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class PivotError(Exception):
    """Bad input, named: the message says which file/line/field or key is wrong and what was expected."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class ConfigError(PivotError, ValueError):
    """A config key whose value is out of range, of the wrong kind, or in conflict with another key."""
