import importlib
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from absl import app, flags

from pivot_jax.cli import USAGE_EXIT_CODE, USER_ERROR_EXIT_CODE, Command, Subcommand, exit_on_user_error, setup_logging
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


# ---------------------------------------------------------------------------------------------------------------
# One command-line style: absl flags, subcommands first, --help for everything


def _command_of(module: str) -> Command:
    """The `Command` that `python -m module` runs (a package's is in its `__main__`)."""
    mod = importlib.import_module(module)
    return mod.COMMAND if hasattr(mod, "COMMAND") else importlib.import_module(f"{module}.__main__").COMMAND


@pytest.mark.parametrize("module", ["pivot_jax.train", "pivot_jax.evaluate", "pivot_jax.generate",
                                    "pivot_jax.report", "pivot_jax.convert", "pivot_jax.data",
                                    "pivot_jax.data.tfds_builders", "pivot_jax.sweep", "pivot_jax.scaling",
                                    "pivot_jax.aot", "pivot_jax.construct"])
def test_help_shows_every_subcommand_and_flag_with_its_help(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], check=False, capture_output=True, text=True,
                            cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr  # absl's --help: 1
    shown = dict(re.findall(r"^  --(?:\[no\])?(\w+): (?:<[^>]*>: )?(.*)$", result.stdout, re.MULTILINE))
    assert shown and all(text.strip() for text in shown.values()), shown
    command = _command_of(module)
    with command.defined() as names:
        assert all(flags.FLAGS[name].help for name in names)
    assert set(names) <= set(shown) and "verbose" in names
    assert command.doc.strip().splitlines()[0] in result.stdout
    for subcommand in [] if callable(command.run) else command.run:
        assert subcommand.help and re.search(rf"^  {subcommand.name}\b.*  {re.escape(subcommand.help)}$",
                                             result.stdout, re.MULTILINE), subcommand.name


def _add(f, a: str, b: str, *more: str) -> int:
    return (int(a) + int(b) + sum(map(int, more))) * f.times


def _check(f, name: str | None = None) -> str:
    if name == "bad":
        raise app.UsageError("name must not be 'bad'")
    if name == "missing":
        raise FileNotFoundError("missing: no such file")
    return f"{name} x{f.times} {f.label}"


def _define_toy_flags() -> None:
    flags.DEFINE_integer("times", 1, "multiplies the result")
    flags.DEFINE_string("label", None, "a label")


TOY = Command("pivot_jax.toy", "A toy command.", _define_toy_flags, [
    Subcommand("add", _add, "adds numbers"),
    Subcommand("check", _check, "checks a name", required=("label",)),
])


def test_flags_go_anywhere_between_the_positional_arguments():
    assert TOY.main(["add", "1", "2"]) == 3
    assert TOY.main(["--times", "2", "add", "1", "--times=3", "2", "4"]) == 21  # the last --times wins
    assert TOY.main(["check", "--label", "L"]) == "None x1 L" and TOY.main(["check", "n", "--label=L"]) == "n x1 L"
    assert "times" not in flags.FLAGS and "verbose" not in flags.FLAGS  # defined only while a command runs


@pytest.mark.parametrize("argv, message", [
    (["bogus", "1"], "error: unknown subcommand 'bogus': python -m pivot_jax.toy takes add or check"),
    ([], "error: no subcommand: python -m pivot_jax.toy takes add or check"),
    (["add", "1"], "error: python -m pivot_jax.toy add takes A B [MORE...]; got 1 argument(s): 1"),
    (["check", "a", "b", "--label=L"], "error: python -m pivot_jax.toy check takes [NAME]; got 2 argument(s): a b"),
    (["check", "a"], "error: python -m pivot_jax.toy check needs --label"),
    (["check", "bad", "--label=L"], "error: name must not be 'bad'"),
    (["add", "1", "2", "--times=x"], "error: flag --times=x: invalid literal for int() with base 10: 'x'"),
    (["add", "1", "2", "--tims=2"], "error: Unknown command line flag 'tims'. Did you mean: times ?"),
])
def test_usage_errors_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        TOY.main(argv)
    assert exit_.value.code == USAGE_EXIT_CODE
    err = capsys.readouterr().err.splitlines()
    assert err[0] == message and err[-1] == "(--help shows every flag)"
    if "subcommand" in message:  # then each subcommand with its help
        assert [line.split() for line in err[1:-1]] == [["add", "A", "B", "[MORE...]", "adds", "numbers"],
                                                        ["check", "[NAME]", "--label=...", "checks", "a", "name"]]
    else:
        assert len(err) == 2


def test_user_errors_of_a_command_are_one_line_unless_verbose(capsys, monkeypatch):
    monkeypatch.delenv("PIVOT_JAX_VERBOSE", raising=False)
    with pytest.raises(SystemExit) as exit_:
        TOY.main(["check", "missing", "--label=L"])
    assert exit_.value.code == USER_ERROR_EXIT_CODE
    assert capsys.readouterr().err.startswith("error: missing: no such file\n")
    with pytest.raises(FileNotFoundError):
        TOY.main(["check", "missing", "--label=L", "--verbose"])


def test_an_unknown_subcommand_on_the_command_line_names_the_valid_ones():
    result = subprocess.run([sys.executable, "-m", "pivot_jax.convert", "hf-to-orbx", "a", "b"], check=False,
                            cwd=REPO, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == USAGE_EXIT_CODE and result.stdout == ""
    assert result.stderr.splitlines()[0] == ("error: unknown subcommand 'hf-to-orbx': python -m pivot_jax.convert "
                                             "takes hf-to-orbax, gguf-to-orbax or orbax-to-hf")


def test_config_file_flags_and_their_overrides_in_process():
    from ml_collections import config_flags

    def define() -> None:
        config_flags.DEFINE_config_file("config", None, "config file", lock_config=True)

    command = Command("pivot_jax.toy", "A toy command.", define, lambda f: f.config.train.seq_len)
    tiny = str(REPO / "configs" / "tiny.py")
    assert command.main(["--config", tiny, "--config.train.seq_len=77"]) == 77
    assert command.main([f"--config={tiny}"]) != 77  # nothing left over from the call before
    assert not [name for name in flags.FLAGS if name.startswith("config")]
