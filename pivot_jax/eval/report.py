"""Side-by-side reports of training runs: generation metrics before and after, and loss curves (Markdown + PNG).

    md, png = write_report(["runs/plug", "runs/plug_mono"], "runs/plug_vs_mono")

A run is a trainer workdir. Its generation evaluations (`eval.generate_every_steps`, and step 0 with
`eval.generate_at_start`) are read from WORKDIR/results_index.jsonl, its losses from WORKDIR/metrics.jsonl.
The trainer writes WORKDIR/report.md and report.png itself at the end of a run that evaluated generations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from etils import epath

from pivot_jax.jsonl import read_jsonl
from pivot_jax.paths import PathLike, as_path
from pivot_jax.results import FILENAME as RESULTS_FILENAME
from pivot_jax.results import Result, read_training_results

# Metrics where lower is better (everything else reported here is higher-is-better).
LOWER_IS_BETTER = ("plug_marker_not_found",)


@dataclass
class Run:
    """One workdir's evaluations ({step: {metric: Result}}) and its logged losses."""

    name: str
    evals: dict[int, dict[str, Result]] = field(default_factory=dict)
    losses: list[dict[str, float]] = field(default_factory=list)

    @property
    def first(self) -> int | None:
        return min(self.evals) if self.evals else None

    @property
    def last(self) -> int | None:
        return max(self.evals) if self.evals else None

    def value(self, step: int, metric: str) -> float | None:
        result = self.evals[step].get(metric)
        return result.value if result else None


def read_run(workdir: PathLike, name: str | None = None) -> Run:
    """A trainer workdir's generation evaluations (the latest record of each step's metric) and losses."""
    workdir = as_path(workdir)
    if not workdir.is_dir():
        raise FileNotFoundError(f"run directory {workdir} does not exist")
    return Run(name or workdir.name, read_training_results(workdir / RESULTS_FILENAME),
               read_jsonl(workdir / "metrics.jsonl", torn_tail_ok=True))


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
        protocols = sorted({r.protocol for step in run.evals.values() for r in step.values()})
        samples = sorted({r.samples for step in run.evals.values() for r in step.values()})
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
        values = [run.value(step, metric) for _, run, step in columns]
        (a_run, a_step), (b_run, b_step) = ends
        a, b = a_run.value(a_step, metric), b_run.value(b_step, metric)
        change = f"{b - a:+.4g}" if a is not None and b is not None else "—"
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


def plot(runs: Sequence[Run], path: epath.Path) -> None:
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
        values = [v if (v := run.value(step, metric)) is not None else float("nan") for _, run, step in columns]
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
    with path.open("wb") as f:  # a file object: savefig cannot open a gs:// URL
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def write_report(workdirs: Sequence[PathLike], output: PathLike, names: Sequence[str] | None = None
                 ) -> tuple[epath.Path, epath.Path]:
    """report.md + report.png for these runs into `output`; returns both paths."""
    runs = [read_run(w, n) for w, n in zip(workdirs, names or [None] * len(workdirs))]
    output = as_path(output)
    output.mkdir(parents=True, exist_ok=True)
    text = markdown(runs)
    md, png = output / "report.md", output / "report.png"
    plot(runs, png)
    md.write_text(text + f"\n![report]({png.name})\n")
    return md, png
