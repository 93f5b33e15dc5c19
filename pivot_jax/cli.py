"""What every `python -m pivot_jax.*` command shares: logging that shows our progress, not library chatter, and
errors in the user's input printed as one line (with a hint) instead of a traceback."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from pivot_jax.errors import PivotError

T = TypeVar("T")

VERBOSE_ENV = "PIVOT_JAX_VERBOSE"
VERBOSE_HELP = f"on an error in the input, also print the traceback (or set {VERBOSE_ENV}=1)"
# Errors that name what the user gave (a file, a key, a value); anything else is a bug and keeps its traceback.
USER_ERRORS = (PivotError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
USER_ERROR_EXIT_CODE = 1


def setup_logging(*progress_loggers: str) -> None:
    """Our named loggers at INFO with a timestamp; libraries (absl, Orbax, seqio, TF) only when they warn."""
    from absl import logging as absl_logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", force=True)
    absl_logging.set_verbosity(absl_logging.WARNING)
    for name in progress_loggers:
        logging.getLogger(name).setLevel(logging.INFO)


def define_verbose_flag() -> None:
    """`--verbose` for the absl-flag commands."""
    from absl import flags

    flags.DEFINE_bool("verbose", False, VERBOSE_HELP)


def add_verbose_argument(parser: Any) -> None:
    """`--verbose` for the argparse commands."""
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)


def exit_on_user_error(run: Callable[[], T], verbose: bool = False) -> T:
    """`run()`; an error in the user's input prints `error: MESSAGE` (+ `hint: ...`) on stderr and exits with
    USER_ERROR_EXIT_CODE. Verbose (the flag or $PIVOT_JAX_VERBOSE) lets the traceback through as well."""
    verbose = verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0")
    try:
        return run()
    except USER_ERRORS as e:
        if verbose:
            raise
        lines = [f"error: {e}"]
        if getattr(e, "hint", ""):
            lines.append(f"hint: {e.hint}")
        lines.append(f"(--verbose or {VERBOSE_ENV}=1 shows the traceback)")
        print("\n".join(lines), file=sys.stderr, flush=True)
        raise SystemExit(USER_ERROR_EXIT_CODE) from None
