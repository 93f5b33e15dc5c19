"""What every `python -m pivot_jax.*` command shares: logging that shows our progress, not library chatter."""

from __future__ import annotations

import logging


def setup_logging(*progress_loggers: str) -> None:
    """Our named loggers at INFO with a timestamp; libraries (absl, Orbax, seqio, TF) only when they warn."""
    from absl import logging as absl_logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", force=True)
    absl_logging.set_verbosity(absl_logging.WARNING)
    for name in progress_loggers:
        logging.getLogger(name).setLevel(logging.INFO)
