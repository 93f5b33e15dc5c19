import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pivot_jax.cli import USER_ERROR_EXIT_CODE, exit_on_user_error, setup_logging
from pivot_jax.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_our_progress_shows_and_library_info_does_not():
    setup_logging("pivot_jax")
    assert logging.getLogger("pivot_jax.train").isEnabledFor(logging.INFO)
    assert logging.getLogger("pivot_jax.evaluate").isEnabledFor(logging.INFO)
    assert not logging.getLogger("absl").isEnabledFor(logging.INFO)
    assert not logging.getLogger("orbax").isEnabledFor(logging.INFO)


def _fail():
    raise ConfigError("config key train.seq_len=0: must be >= 2", hint="try 512")


def test_user_errors_are_one_line_with_their_hint(capsys, monkeypatch):
    monkeypatch.delenv("PIVOT_JAX_VERBOSE", raising=False)
    with pytest.raises(SystemExit) as exit_:
        exit_on_user_error(_fail)
    assert exit_.value.code == USER_ERROR_EXIT_CODE
    assert capsys.readouterr().err.splitlines() == [
        "error: config key train.seq_len=0: must be >= 2", "hint: try 512",
        "(--verbose or PIVOT_JAX_VERBOSE=1 shows the traceback)"]
    with pytest.raises(ConfigError):  # verbose: the error itself, traceback and all
        exit_on_user_error(_fail, verbose=True)
    monkeypatch.setenv("PIVOT_JAX_VERBOSE", "1")
    with pytest.raises(ConfigError):
        exit_on_user_error(_fail)
    with pytest.raises(ZeroDivisionError):  # a bug is never shortened
        exit_on_user_error(lambda: 1 / 0)


def _train(tmp_path, *flags, env=None):
    cmd = [sys.executable, "-m", "pivot_jax.train", "--config", str(REPO / "configs" / "tiny.py"),
           "--workdir", str(tmp_path / "w"), *flags]
    return subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})})


def test_train_prints_a_bad_value_as_one_line_before_any_work(tmp_path):
    result = _train(tmp_path, "--config.train.seq_len=0")
    assert result.returncode == USER_ERROR_EXIT_CODE
    assert "error: config key train.seq_len=0: must be >= 2 (an input token and a target)" in result.stderr
    assert "Traceback" not in result.stderr and "model tiny" not in result.stderr
    assert not (tmp_path / "w").exists()
    verbose = _train(tmp_path, "--config.train.log_every_steps=0", "--verbose")
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr and "train.log_every_steps=0" in verbose.stderr
