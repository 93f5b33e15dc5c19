import logging

from pivot_jax.cli import setup_logging


def test_our_progress_shows_and_library_info_does_not():
    setup_logging("pivot_jax")
    assert logging.getLogger("pivot_jax.train").isEnabledFor(logging.INFO)
    assert logging.getLogger("pivot_jax.evaluate").isEnabledFor(logging.INFO)
    assert not logging.getLogger("absl").isEnabledFor(logging.INFO)
    assert not logging.getLogger("orbax").isEnabledFor(logging.INFO)
