"""Side-by-side reports of training runs: generation metrics before and after, and loss curves (Markdown + PNG).

  python -m pivot_jax.report runs/coit_es                                  # one run: its first vs last eval
  python -m pivot_jax.report runs/plug runs/plug_mono --output runs/plug_vs_mono   # runs side by side

A run is a trainer workdir. Its generation evaluations (`eval.generate_every_steps`, and step 0 with
`eval.generate_at_start`) are read from WORKDIR/results_index.jsonl, its losses from WORKDIR/metrics.jsonl.
The trainer writes WORKDIR/report.md and report.png itself at the end of a run that evaluated generations.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pivot_jax.jsonl import DataError, read_jsonl, read_numbered, type_name

# Metrics where lower is better (everything else reported here is higher-is-better).
LOWER_IS_BETTER = ("plug_marker_not_found",)


@dataclass
class Run:
    """One workdir's evaluations: {step: {metric: (value, protocol, samples)}} and its logged losses."""

    name: str
    evals: dict[int, dict[str, tuple[float, str, int]]] = field(default_factory=dict)
    losses: list[dict[str, float]] = field(default_factory=list)

    @property
    def first(self) -> int | None:
        return min(self.evals) if self.evals else None

    @property
    def last(self) -> int | None:
        return max(self.evals) if self.evals else None


def read_run(workdir: str | Path, name: str | None = None) -> Run:
    """A trainer workdir's generation evaluations and losses (later entries for a step replace earlier ones, as
    when a resumed run evaluates the same step again). A last line cut short by an interrupted run is ignored."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise FileNotFoundError(f"run directory {workdir} does not exist")
    run = Run(name or workdir.name)
    index = workdir / "results_index.jsonl"
    for number, row in read_numbered(index, torn_tail_ok=True):
        step, metric, value = _index_entry(row, f"{index}: line {number}")
        run.evals.setdefault(step, {})[metric] = value
    run.losses = read_jsonl(workdir / "metrics.jsonl", torn_tail_ok=True)
    return run


def _index_entry(row: Any, where: str) -> tuple[int, str, tuple[float, str, int]]:
    """(step, metric, (value, protocol, samples)) of one results-index line."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type_name(row)}")
    if "step" not in row:
        raise DataError(f"{where}: a line without 'step' ({row.get('metric')!r}); report reads the trainer's "
                        "generation evaluations")
    step = row["step"]
    if not (_is_int(step) or isinstance(step, str) and step.isascii() and step.isdigit()):
        raise DataError(f"{where}: field 'step' should be an integer (or its digits as a string), got {step!r}")
    for key, kind, check in (("metric", "a string", lambda v: isinstance(v, str)),
                             ("protocol", "a string", lambda v: isinstance(v, str)),
                             ("value", "a number", lambda v: _is_int(v) or isinstance(v, float)),
                             ("samples", "an integer", _is_int)):
        if key not in row:
            raise DataError(f"{where}: missing field {key!r} ({kind})")
        if not check(row[key]):
            raise DataError(f"{where}: field {key!r} should be {kind}, got {type_name(row[key])}")
    return int(step), row["metric"], (float(row["value"]), row["protocol"], row["samples"])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _columns(runs: Sequence[Run]) -> list[tuple[str, Run, int]]:
    """(label, run, step): each run's first evaluation and its last (one column when they coincide)."""
    columns = []
    for run in runs:
        if run.first is None:
            continue
        if run.first != run.last:
            columns.append((f"{run.name} @ step {run.first}", run, run.first))
        columns.append((f"{run.name} @ step {run.last}", run, run.last))
    return columns


def _fmt(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.4g}"


def markdown(runs: Sequence[Run]) -> str:
    columns = _columns(runs)
    if not columns:
        names = ", ".join(run.name for run in runs)
        raise ValueError(f"no generation evaluations in {names}: train with eval.generate_every_steps (and "
                         "eval.generate_at_start for a step-0 baseline)")
    metrics = list(dict.fromkeys(m for _, run, step in columns for m in run.evals[step]))
    lines = ["# Report: " + " vs ".join(run.name for run in runs), ""]
    for run in runs:
        protocols = sorted({p for step in run.evals.values() for _, p, _ in step.values()})
        samples = sorted({s for step in run.evals.values() for _, _, s in step.values()})
        lines.append(f"- **{run.name}**: {', '.join(protocols) or 'no evaluations'}; "
                     f"{'/'.join(map(str, samples))} items")
    # One run: its last evaluation minus its first. Several: the last run's final numbers minus the first run's.
    evaluated = [run for run in runs if run.evals]
    first, last = evaluated[0], evaluated[-1]
    if len(evaluated) == 1:
        change_label, change_note = "change", f"{first.name}'s step {first.last} minus step {first.first}"
        ends = ((first, first.first), (first, first.last))
    else:
        change_label = f"{last.name} − {first.name}"
        change_note = f"{last.name} at step {last.last} minus {first.name} at step {first.last}"
        ends = ((first, first.last), (last, last.last))
    lines += ["", "| metric | " + " | ".join(label for label, _, _ in columns) + f" | {change_label} |",
              "|---|" + "---|" * (len(columns) + 1)]
    for metric in metrics:
        values = [run.evals[step].get(metric, (None,))[0] for _, run, step in columns]
        (a_run, a_step), (b_run, b_step) = ends
        a, b = a_run.evals[a_step].get(metric), b_run.evals[b_step].get(metric)
        change = f"{b[0] - a[0]:+.4g}" if a and b else "—"
        lines.append(f"| {metric} | " + " | ".join(_fmt(v) for v in values) + f" | {change} |")
    lower = [m for m in metrics if m in LOWER_IS_BETTER]
    lines += ["", f"{change_label}: {change_note}. " + (f"Lower is better for {', '.join(lower)}; higher for the "
                                                          "rest." if lower else "Higher is better."), ""]
    for run in runs:
        losses = [row for row in run.losses if "loss" in row]
        if losses:
            held = [row for row in run.losses if "eval_loss" in row]
            text = f"- {run.name}: train loss {losses[0]['loss']:.4f} (step {losses[0]['step']}) -> " \
                   f"{losses[-1]['loss']:.4f} (step {losses[-1]['step']})"
            if held:
                text += f"; held-out loss {held[0]['eval_loss']:.4f} (step {held[0]['step']}) -> " \
                        f"{held[-1]['eval_loss']:.4f} (step {held[-1]['step']})"
            lines.append(text)
    return "\n".join(lines) + "\n"


def plot(runs: Sequence[Run], path: Path) -> None:
    """One bar panel per metric (every column of the table) and the loss curves, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = _columns(runs)
    metrics = list(dict.fromkeys(m for _, run, step in columns for m in run.evals[step]))
    panels = len(metrics) + 1
    ncols = min(panels, 4)
    nrows = math.ceil(panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes.flat, metrics):
        values = [run.evals[step].get(metric, (float("nan"),))[0] for _, run, step in columns]
        run_color = {id(run): colors[i % len(colors)] for i, run in enumerate(runs)}
        bars = ax.bar(range(len(columns)), values, color=[run_color[id(run)] for _, run, _ in columns])
        for bar, (_, run, step) in zip(bars, columns):
            if step == run.first and run.first != run.last:
                bar.set_alpha(0.45)  # the starting weights: lighter than the trained ones
        ax.set_title(metric, fontsize=10)
        ax.set_xticks(range(len(columns)), [label.replace(" @ ", "\n") for label, _, _ in columns], fontsize=7)
        for x, v in enumerate(values):
            if not math.isnan(v):
                ax.annotate(f"{v:.3g}", (x, v), ha="center", va="bottom", fontsize=7)
    ax = axes.flat[len(metrics)]
    for i, run in enumerate(runs):
        train = [(row["step"], row["loss"]) for row in run.losses if "loss" in row]
        held = [(row["step"], row["eval_loss"]) for row in run.losses if "eval_loss" in row]
        if train:
            ax.plot(*zip(*train), color=colors[i % len(colors)], label=f"{run.name} train")
        if held:
            ax.plot(*zip(*held), "o--", color=colors[i % len(colors)], label=f"{run.name} held-out")
    ax.set_title("loss", fontsize=10)
    ax.set_xlabel("step")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    for ax in axes.flat[panels:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(workdirs: Sequence[str | Path], output: str | Path, names: Sequence[str] | None = None
                 ) -> tuple[Path, Path]:
    """report.md + report.png for these runs into `output`; returns both paths."""
    runs = [read_run(w, n) for w, n in zip(workdirs, names or [None] * len(workdirs))]
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    text = markdown(runs)
    md, png = output / "report.md", output / "report.png"
    plot(runs, png)
    md.write_text(text + f"\n![report]({png.name})\n", encoding="utf-8")
    return md, png


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    from pivot_jax.cli import add_verbose_argument, exit_on_user_error

    parser = argparse.ArgumentParser(prog="python -m pivot_jax.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+", help="trainer workdirs")
    parser.add_argument("--output", help="where report.md / report.png go (default: the only workdir)")
    parser.add_argument("--names", help="comma-separated run names (default: directory names)")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    if not args.output and len(args.workdirs) > 1:
        parser.error("--output is required with several workdirs")
    names = args.names.split(",") if args.names else None
    if names and len(names) != len(args.workdirs):
        parser.error(f"--names gives {len(names)} names for {len(args.workdirs)} workdirs")
    md, png = exit_on_user_error(lambda: write_report(args.workdirs, args.output or args.workdirs[0], names),
                                 args.verbose)
    print(md.read_text(encoding="utf-8"))
    print(f"wrote {md} and {png}")


if __name__ == "__main__":
    sys.exit(main())
