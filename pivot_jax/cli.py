"""What every `python -m pivot_jax.*` command shares: one command-line style (absl flags for options, a
subcommand as the first positional argument where a command has several: `convert hf-to-orbax SRC DST`),
`--help` with the module docstring, the subcommands and every flag; logging that shows our progress, not
library chatter; and errors in the user's input printed as one line (with a hint) instead of a traceback.

A command module is a thin shell: it defines its flags in a function (absl flags are global to the process, so
never at import), names what runs, and hands both to `Command`:

    def _define_flags() -> None:
        flags.DEFINE_string("dtype", None, "stored dtype (default: as in the source)")

    def _hf_to_orbax(f: flags.FlagValues, src_dir: str, dst: str) -> None: ...

    COMMAND = Command("pivot_jax.convert", __doc__, _define_flags,
                      [Subcommand("hf-to-orbax", _hf_to_orbax, "Hugging Face directory -> Orbax model directory")])
    main = COMMAND.main            # main(["hf-to-orbax", "SRC", "DST", "--dtype", "bfloat16"]) in-process
    if __name__ == "__main__":
        COMMAND.cli()              # python -m: absl's app.run over sys.argv

A function's positional parameters after the flags are the command line's positional arguments (`[NAME]` when
it has a default, `NAME...` for *args): they give the usage line and the count that is checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

from absl import app, flags
from absl import logging as absl_logging

from pivot_jax.errors import PivotError

T = TypeVar("T")

VERBOSE_ENV = "PIVOT_JAX_VERBOSE"
VERBOSE_HELP = f"on an error in the input, also print the traceback (or set {VERBOSE_ENV}=1)"
# Errors that name what the user gave (a file, a key, a value); anything else is a bug and keeps its traceback.
USER_ERRORS = (PivotError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
USER_ERROR_EXIT_CODE = 1
# An unknown subcommand, a wrong number of arguments, a bad or missing flag: 1, as absl's own flag errors.
USAGE_EXIT_CODE = 1


def setup_logging(*progress_loggers: str) -> None:
    """Our named loggers at INFO with a timestamp; libraries (absl, Orbax, seqio, TF) only when they warn."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", force=True)
    absl_logging.set_verbosity(absl_logging.WARNING)
    for name in progress_loggers:
        logging.getLogger(name).setLevel(logging.INFO)


def define_verbose_flag() -> None:
    """`--verbose` for the absl-flag commands (`Command` defines it itself)."""
    flags.DEFINE_bool("verbose", False, VERBOSE_HELP)


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


@dataclasses.dataclass(frozen=True)
class Subcommand:
    """`NAME ARGS...` of a command with several: `run(flags.FLAGS, *ARGS)`, `help` one line for `--help`."""

    name: str
    run: Callable[..., Any]
    help: str
    required: Sequence[str] = ()  # flags this subcommand needs (a flag needed by all: flags.mark_flag_as_required)


@dataclasses.dataclass(frozen=True)
class Command:
    """`python -m NAME [SUBCOMMAND] ARGS... --flags`: absl flags, defined by `define_flags` when it runs.

    `run` is `run(flags.FLAGS, *ARGS)` or the subcommands, the first positional argument naming one. The
    command gets `--verbose`; errors in the user's input go through `exit_on_user_error`; a function may raise
    `absl.app.UsageError` for a usage error of its own (flags that go together, say)."""

    name: str  # the module, e.g. "pivot_jax.convert"
    doc: str  # the module docstring: `--help` prints it, then the subcommands and the flags
    define_flags: Callable[[], None]
    run: Callable[..., Any] | Sequence[Subcommand]
    loggers: Sequence[str] = ("pivot_jax",)  # progress loggers shown at INFO (`setup_logging`)

    def cli(self) -> None:
        """The command line, through absl's `app.run` (`--help`, `--helpfull`, `--flagfile` and all)."""
        with self.defined() as names:
            for name in names:  # --help lists the main module's flags: make the helpers' flags (--verbose) its own
                flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
            sys.modules["__main__"].__doc__ = self.help()  # what absl's usage() prints above the flags

            def main(argv: list[str]) -> None:
                setup_logging(*self.loggers)
                self._call(flags.FLAGS, argv[1:])

            app.run(main, flags_parser=self._parse)

    def main(self, argv: Sequence[str]) -> Any:
        """The command line `argv` (without the program name) in this process; returns what the command returns.
        Its flags exist only during the call, so commands run one after another in one process (tests)."""
        argv = [f"python -m {self.name}", *argv]
        with self.defined():
            saved, sys.argv = sys.argv, argv  # ml_collections finds its --config.KEY overrides in sys.argv
            try:
                args = self._parse(argv)[1:]
            finally:
                sys.argv = saved
            return self._call(flags.FLAGS, args)

    @contextlib.contextmanager
    def defined(self) -> Iterator[list[str]]:
        """This command's flags (and --verbose) defined in absl's global FLAGS while inside; yields their names."""
        before = set(flags.FLAGS)
        try:
            self.define_flags()
            define_verbose_flag()
            yield sorted(set(flags.FLAGS) - before)
        finally:
            for name in set(flags.FLAGS) - before:  # also what the parsing added (ml_collections' --config.KEY)
                delattr(flags.FLAGS, name)

    def help(self) -> str:
        """The docstring, then one line per subcommand."""
        text = self.doc.rstrip() + "\n\n"
        if self._subcommands():
            return text + "subcommands:\n" + self._subcommand_lines()
        return text + f"usage: {' '.join(filter(None, ['python -m', self.name, _arguments(self.run), '[flags]']))}\n"

    def _subcommands(self) -> dict[str, Subcommand]:
        return {} if callable(self.run) else {s.name: s for s in self.run}

    def _subcommand_lines(self) -> str:
        heads = {s.name: " ".join(filter(None, [s.name, _arguments(s.run), *(f"--{f}=..." for f in s.required)]))
                 for s in self._subcommands().values()}
        width = max(map(len, heads.values()))
        return "".join(f"  {heads[s.name]:<{width}}  {s.help}\n" for s in self._subcommands().values())

    def _parse(self, argv: list[str]) -> list[str]:
        """absl's parsing of `argv` (flags anywhere among the positional arguments); a bad flag is a usage error."""
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            self._usage_error(str(e))

    def _call(self, f: Any, args: list[str]) -> Any:
        run, prog, subcommands = self.run, f"python -m {self.name}", self._subcommands()
        if subcommands:
            if not args or args[0] not in subcommands:
                given = f"unknown subcommand {args[0]!r}" if args else "no subcommand"
                self._usage_error(f"{given}: {prog} takes {_one_of(list(subcommands))}",
                                  self._subcommand_lines())
            subcommand, args = subcommands[args[0]], args[1:]
            run, prog = subcommand.run, f"{prog} {subcommand.name}"
            missing = [f"--{name}" for name in subcommand.required if f[name].value in (None, "", [])]
            if missing:
                self._usage_error(f"{prog} needs {' and '.join(missing)}")
        try:
            inspect.signature(run).bind(f, *args)
        except TypeError:
            given = f"{len(args)} argument(s)" + (f": {' '.join(args)}" if args else "")
            self._usage_error(f"{prog} takes {_arguments(run) or 'no arguments'}; got {given}")
        try:
            return exit_on_user_error(lambda: run(f, *args), f.verbose)
        except app.UsageError as e:
            self._usage_error(str(e))

    def _usage_error(self, message: str, details: str = "") -> NoReturn:
        print(f"error: {message}\n{details}(--help shows every flag)", file=sys.stderr, flush=True)
        raise SystemExit(USAGE_EXIT_CODE)


def _arguments(run: Callable[..., Any]) -> str:
    """The usage of `run`'s positional parameters after the flags: `SRC DST`, `[TASK]`, `WORKDIR...`."""
    words = []
    for p in list(inspect.signature(run).parameters.values())[1:]:
        if p.kind == p.VAR_POSITIONAL:
            words.append(f"[{p.name.upper()}...]")
        elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            words.append(p.name.upper() if p.default is p.empty else f"[{p.name.upper()}]")
    return " ".join(words)


def _one_of(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
