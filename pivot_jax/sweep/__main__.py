"""Sweeps of training runs, then their results table, fits and allocation.

  python -m pivot_jax.sweep --config configs/sweeps/FILE.py[:ARGS] --workdir DIR [--backend local|slurm|tpu]
      [--backend_option K=V]... [--parallel N]
      [--dry_run] [--only NAME_GLOB]
  python -m pivot_jax.sweep collect DIR

Each point trains with `python -m pivot_jax.train` in its own process and DIR/points/NAME, evaluates at its last
step and appends to DIR/results_index.jsonl with its tags. The same command again skips finished points,
reattaches to running ones and resumes interrupted ones; a failed point is named with its log and the others go
on. At the end: DIR/results.csv and results.jsonl (`collect`), and for the sweep file's `fit.metrics`
`python -m pivot_jax.scaling fit` into DIR/fits/METRIC (and `allocate` into DIR/allocation with `fit.budget`).

With --check_allocation (an allocation.json of `scaling allocate`) the same sweep file closes the loop instead:
MuIT on the allocated amounts and on the uniform split of the same budget (points `NAME-check-allocated-seedS`,
`NAME-check-uniform-seedS`, scored in every language), then `python -m pivot_jax.scaling check` prints the
measured metric against the predicted one for both splits into DIR/check (check.json, check.png).
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import subprocess
import sys
from typing import Any

from absl import app, flags

from pivot_jax.cli import Command
from pivot_jax.jsonl import read_json
from pivot_jax.launch.backends import BACKENDS, make_executor, parse_options
from pivot_jax.paths import as_path
from pivot_jax.sweep.collect import collect
from pivot_jax.sweep.runner import point_workdir, run_sweep, train_command
from pivot_jax.sweep.spec import Sweep, load_sweep
from pivot_jax.sweep.state import FILENAME as STATE_FILENAME


def _define_flags() -> None:
    flags.DEFINE_string("config", None, "the sweep file, configs/sweeps/FILE.py[:ARGS]")
    flags.DEFINE_string("workdir", None, "the sweep's directory: points/, sweep.json, results, fits")
    flags.DEFINE_enum("backend", "local", sorted(BACKENDS), "where points run")
    flags.DEFINE_multi_string("backend_option", [], "KEY=VALUE for the backend (repeatable), e.g. partition=gpu")
    flags.DEFINE_integer("parallel", None, "points at a time (default: the sweep file's `parallel`)")
    flags.DEFINE_bool("dry_run", False, "print every point's training command and exit")
    flags.DEFINE_string("only", None, "run only the points whose name matches this glob, e.g. '*-es-*'")
    flags.DEFINE_string("check_allocation", None, "an allocation.json: train MuIT on its amounts and on the uniform "
                        "split instead of the sweep's points, then compare measured with predicted")


def _sweep(f: Any, action: str = "", directory: str = "") -> None:
    if action == "collect":
        if not directory:
            raise app.UsageError("collect takes the sweep's DIR")
        _collect(load_sweep(*_saved_source(directory)), directory)
        return
    if action:
        raise app.UsageError(f"unknown action {action!r}: run a sweep with --config/--workdir, or `collect DIR`")
    if not f.config or not f.workdir:
        raise app.UsageError("a sweep needs --config and --workdir")
    allocation = os.path.abspath(f.check_allocation) if f.check_allocation else ""
    sweep = load_sweep(_absolute_source(f.config), allocation)
    only = (lambda name: fnmatch.fnmatchcase(name, f.only)) if f.only else (lambda name: True)
    if f.dry_run:
        for point in sweep.points:
            if only(point.name):
                print(shlex.join(train_command(sweep, point, point_workdir(as_path(f.workdir), point))))
        return
    executor = make_executor(f.backend, f.parallel or sweep.config.parallel, parse_options(f.backend_option))
    summary = run_sweep(sweep, f.workdir, executor, only)
    print(f"\n{len(summary.skipped)} finished before, {len(summary.done)} finished now, {len(summary.failed)} failed")
    for name, log in summary.failed.items():
        print(f"  failed: {name}  (log: {log})")
    _collect(sweep, f.workdir)
    if sweep.allocation:
        _check(sweep.allocation, f.workdir)
    else:
        _fit(sweep, f.workdir)
    if summary.failed:
        raise SystemExit(1)  # the others are done; the same command retries the failed ones


def _collect(sweep: Sweep, directory: str) -> None:
    csv_path, jsonl_path, rows = collect(sweep, directory)
    print(f"results: {rows} rows in {csv_path} and {jsonl_path}")


def _fit(sweep: Sweep, directory: str) -> None:
    """`scaling fit` of each of the sweep file's fit.metrics, then `scaling allocate` with fit.budget."""
    fit = sweep.config.fit
    for metric in fit.metrics:
        output = os.path.join(directory, "fits", metric.replace("/", "_"))
        _run([sys.executable, "-m", "pivot_jax.scaling", "fit", directory, "--metric", metric, "--law", fit.law,
              "--output", output])
        print(f"fits of {metric}: {output}/fits.json, plot {output}/fits.png")
    if fit.metrics and fit.budget:
        fits = os.path.join(directory, "fits", fit.metrics[0].replace("/", "_"), "fits.json")
        output = os.path.join(directory, "allocation")
        _run([sys.executable, "-m", "pivot_jax.scaling", "allocate", fits, "--budget", str(fit.budget),
              "--output", output])
        print(f"allocation: {output}/allocation.json, plot {output}/allocation.png")


def _check(allocation: str, directory: str) -> None:
    """`scaling check`: the allocation's predictions against what its MuIT runs measured."""
    output = os.path.join(directory, "check")
    _run([sys.executable, "-m", "pivot_jax.scaling", "check", allocation, directory, "--output", output])
    print(f"check: {output}/check.json, plot {output}/check.png")


def _run(command: list[str]) -> None:
    print("$ " + shlex.join(command[1:]).replace("-m ", "python -m ", 1), flush=True)
    result = subprocess.run(command, check=False)
    if result.returncode:
        print(f"(exit status {result.returncode})", flush=True)


def _absolute_source(spec: str) -> str:
    """FILE.py[:ARGS] with FILE made absolute, so `collect DIR` finds it again from anywhere."""
    path, sep, arg = spec.partition(":")
    return os.path.abspath(path) + sep + arg


def _saved_source(directory: str) -> tuple[str, str]:
    """The sweep file (with its arguments) and the allocation it checks ("" for none) of a sweep directory."""
    state = as_path(directory) / STATE_FILENAME
    if not state.exists():
        raise FileNotFoundError(f"{state} does not exist: {directory} is not a sweep directory")
    saved = read_json(state)
    return saved["sweep"], saved.get("allocation", "")


COMMAND = Command("pivot_jax.sweep", __doc__, _define_flags, _sweep,
                  loggers=("pivot_jax.sweep", "pivot_jax.launch"))
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.cli()
