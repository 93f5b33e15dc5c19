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


# Units of the metrics this package reports (`pivot_jax.eval.run`): panels of one unit share their y range.
_PERCENT = ("bleu", "chrf++", "spbleu", "xllama_accuracy", "accuracy")  # 0-100, as the papers report them
_FRACTIONS = ("language_fidelity",)  # 0-1
_COUNTS = ("plug_marker_not_found", "judge_errors")  # items
_NICE_STEPS = (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)
_UNIT_LABELS = {"percent": "score (0-100)", "fraction": "fraction (0-1)", "count": "items",
                "judge score": "judge score (0-10)"}


def _split_metric(metric: str) -> tuple[str, str]:
    """("chrf++/es" -> ("chrf++", "es")); a metric without a language suffix is over the whole set: "all"."""
    base, _, language = metric.partition("/")
    return base, language or "all"


def _unit(base: str) -> str:
    """The unit of a metric's values: "percent", "fraction", "count", "judge score", or the metric itself."""
    if base in _PERCENT or base.startswith(("exact_match", "f1")) or (base.startswith("judge_")
                                                                      and base.endswith("_pct")):
        return "percent"
    if base in _FRACTIONS or base.endswith(("_share", "fidelity")):
        return "fraction"
    if base in _COUNTS:
        return "count"
    if base in ("judge_score", "judge_score_other"):
        return "judge score"
    return base


def _nice_ceil(x: float) -> float:
    """The smallest of 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power of ten that is >= x (x > 0)."""
    exponent = math.floor(math.log10(x))
    nice = (step * 10.0 ** exponent if exponent >= 0 else step / 10.0 ** -exponent for step in _NICE_STEPS)
    return next(top for top in nice if top >= x * (1 - 1e-9))  # 3 / 10, not 3 * 0.1 (0.30000000000000004)


def _panels(runs: Sequence[Run]) -> list[tuple[str, list[str]]]:
    """(base metric, languages) per bar panel, in the table's order; "all" (no suffix) comes first in a panel."""
    panels: dict[str, list[str]] = {}
    for _, run, step in _columns(runs):
        for metric in run.evals[step]:
            base, language = _split_metric(metric)
            languages = panels.setdefault(base, [])
            if language not in languages:
                languages.append(language)
    return [(base, sorted(languages, key=lambda lang: lang != "all")) for base, languages in panels.items()]


def _y_limits(values: dict[str, Sequence[float | None]]) -> dict[str, tuple[float, float]]:
    """{base metric: (bottom, top)} from {base metric: its bar values}: panels of one unit share a range that
    starts at 0 (below it only for negative values) and ends at the unit's largest value rounded up to a nice
    number; fractions span 0-1. Never zoomed to the data's minimum, so a +0.05 change stays a small one."""
    by_unit: dict[str, list[float]] = {}
    for base, vals in values.items():
        by_unit.setdefault(_unit(base), []).extend(v for v in vals if v is not None and math.isfinite(v))
    ranges = {}
    for unit, vals in by_unit.items():
        high, low = max(vals, default=0.0), min(vals, default=0.0)
        top = 1.0 if unit == "fraction" and high <= 1 else (_nice_ceil(high) if high > 0 else 1.0)
        ranges[unit] = (-_nice_ceil(-low) if low < 0 else 0.0, top)
    return {base: ranges[_unit(base)] for base in values}


def plot(runs: Sequence[Run], path: epath.Path) -> None:
    """One bar panel per metric, languages grouped and each run's first and last evaluation side by side, panels
    of one unit on one y range; and the loss curves. One PNG."""
    import matplotlib  # heavy: imported only to draw

    matplotlib.use("Agg")
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    columns = _columns(runs)
    panels = _panels(runs)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    run_color = {id(run): colors[i % len(colors)] for i, run in enumerate(runs)}

    def column_color(run: Run, step: int) -> tuple[float, ...]:
        rgb = mcolors.to_rgb(run_color[id(run)])
        if step == run.first and run.first != run.last:  # the starting weights: lighter than the trained ones
            rgb = tuple(0.45 * c + 0.55 for c in rgb)
        return rgb

    def value(run: Run, step: int, base: str, language: str) -> float | None:
        v = run.value(step, base if language == "all" else f"{base}/{language}")
        return v if v is not None and math.isfinite(v) else None

    values = {base: [value(run, step, base, lang) for lang in languages for _, run, step in columns]
              for base, languages in panels}
    limits = _y_limits(values)

    # Layout: one panel per metric and one for the losses; panels widen with their bars.
    n_bars = max((len(languages) * (len(columns) + 1) for _, languages in panels), default=0)
    panel_width = min(max(3.6, 1.0 + 0.2 * n_bars), 12.0)
    n_panels = len(panels) + 1
    nrows = math.ceil(n_panels / max(1, min(n_panels, int(20 // panel_width))))
    ncols = math.ceil(n_panels / nrows)  # balanced: 4 panels make 2x2, not 3+1
    legend_rows = math.ceil(len(columns) / 4) if columns else 0
    legend_height = 0.25 * legend_rows + 0.15 if columns else 0.0
    height = 3.2 * nrows + legend_height
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_width * ncols, height), squeeze=False)
    width = 1.0 / (len(columns) + 1) if columns else 1.0  # a bar; one bar's width separates the language groups
    # The numbers on the bars: upright where a bar is wide enough for them (about 0.3 inch), else turned.
    upright = all(0.8 * panel_width / len(languages) * width >= 0.3 for _, languages in panels)
    for ax, (base, languages) in zip(axes.flat, panels):
        bottom, top = limits[base]
        for g, language in enumerate(languages):
            for c, (_, run, step) in enumerate(columns):
                v = value(run, step, base, language)
                if v is None:
                    continue  # not evaluated: a gap
                x = g + (c - (len(columns) - 1) / 2) * width
                color = column_color(run, step)
                ax.bar(x, v, width, color=color, edgecolor=run_color[id(run)], linewidth=0.6)
                ax.annotate(f"{v:.3g}", (x, max(v, 0.0)), xytext=(0, 1.5), textcoords="offset points",
                            ha="center", va="bottom", fontsize=6.5, rotation=0 if upright else 90)
        # Room above the range for the numbers; ticks only within it.
        ax.set_ylim(bottom, top * 1.18 if top > 0 else 1)
        ticks = MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(bottom, top)
        ax.set_yticks([t for t in ticks if bottom - abs(top) * 1e-6 <= t <= top * (1 + 1e-6)])
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", linewidth=0.4, alpha=0.5)
        ax.set_axisbelow(True)
        ax.set_xticks(range(len(languages)), languages, fontsize=8)
        ax.set_xlim(-0.5, len(languages) - 0.5)
        ax.set_title(base + (" (lower is better)" if base in LOWER_IS_BETTER else ""), fontsize=10)
        ax.set_ylabel(_UNIT_LABELS.get(_unit(base), ""), fontsize=8)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    ax = axes.flat[len(panels)]
    for run in runs:
        train = [(row["step"], row["loss"]) for row in run.losses if "loss" in row]
        held = [(row["step"], row["eval_loss"]) for row in run.losses if "eval_loss" in row]
        if train:
            ax.plot(*zip(*train), color=run_color[id(run)], label=f"{run.name} train")
        if held:
            ax.plot(*zip(*held), "o--", color=run_color[id(run)], markersize=3, label=f"{run.name} held-out")
    ax.set_title("loss", fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(linewidth=0.4, alpha=0.5)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no losses logged", ha="center", va="center", transform=ax.transAxes, fontsize=8)
    for ax in axes.flat[n_panels:]:
        ax.axis("off")
    if columns:  # one legend for every bar panel: a colour per run, its first evaluation lighter
        handles = [Patch(facecolor=column_color(run, step), edgecolor=run_color[id(run)], label=label)
                   for label, run, step in columns]
        fig.legend(handles=handles, loc="upper center", ncol=min(len(columns), 4), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - legend_height / height))
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
