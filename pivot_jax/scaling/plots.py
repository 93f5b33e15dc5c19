"""fits.png (each group's points, fitted curve and bootstrap band on a log-x axis) and allocation.png (the chosen
amounts and predicted metric against the uniform split), check.png (predicted against measured, both splits),
each written whole or not at all.

    plot_fits(points, fits, "out/fits.png", metric="chrf++", joint=joint_fits)
    plot_allocation(allocation, "out2/allocation.png", metric="chrf++")
    plot_check({"allocated": (predicted, measured), "uniform": (...)}, "out3/check.png", "chrf++", "gain ...")
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from pivot_jax.paths import PathLike, as_path
from pivot_jax.scaling.allocate import Allocation
from pivot_jax.scaling.fit import Fit
from pivot_jax.scaling.table import Points

# The amount-0 baseline has no place on a log axis: it is drawn this factor left of the smallest amount.
BASELINE_OFFSET = 4.0
_CURVE_POINTS = 200


def _pyplot() -> Any:
    # matplotlib.pyplot takes ~0.3 s to import and only the plots need it; Agg draws without a display.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: PathLike) -> None:
    """`fig` as a PNG at `path`, written under a temporary name and renamed: an interrupted run leaves the old
    file or the new one, never half of one."""
    path = as_path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:  # a file object: savefig cannot open a gs:// URL
            fig.savefig(f, format="png", dpi=110)
        tmp.replace(path)
    except BaseException:  # an interrupt too: no temporary file is left behind
        tmp.unlink(missing_ok=True)
        raise


def _band(fit: Fit, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The pointwise bootstrap interval of the curve over `grid`, at the fit's confidence."""
    samples = fit.sample_thetas()
    if not len(samples):
        return None
    law = fit.make_law()
    with np.errstate(all="ignore"):
        curves = law.value(grid[:, None], samples.T)  # (grid, resamples)
    tail = (1 - fit.confidence) / 2 * 100
    return np.nanpercentile(curves, tail, axis=1), np.nanpercentile(curves, 100 - tail, axis=1)


def plot_fits(points: Mapping[str, Points], fits: Mapping[str, Fit], path: PathLike, metric: str = "",
              joint: Mapping[str, Fit] | None = None) -> None:
    """One panel per group: the points (seeds apart), the baseline at the left edge, the fitted curve and its
    bootstrap band; the joint fit's curve dashed when given."""
    plt = _pyplot()
    groups = list(fits)
    ncols = min(len(groups), 3)
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.4 * nrows), squeeze=False)
    for ax, group in zip(axes.flat, groups):
        fit, pts = fits[group], points[group]
        grid = np.geomspace(pts.x.min() / 1.5, pts.x.max() * 1.5, _CURVE_POINTS)
        band = _band(fit, grid)
        if band is not None:
            ax.fill_between(grid, *band, color="C0", alpha=0.2, lw=0, label=f"{fit.confidence:.0%} bootstrap")
        ax.plot(grid, fit.predict(grid), color="C0", label=f"{fit.law} (R² {fit.r2:.3f})" if fit.r2 is not None
                else fit.law)
        if joint and group in joint:
            ax.plot(grid, joint[group].predict(grid), "--", color="C2", label="joint (shared exponent)")
        ax.plot(pts.x, pts.y, "o", color="C1", ms=4, label="points")
        if len(pts.baseline):
            left = pts.x.min() / BASELINE_OFFSET
            ax.plot(np.full(len(pts.baseline), left), pts.baseline, "s", color="C3", ms=5, label="amount 0")
            ax.axvline(left * math.sqrt(BASELINE_OFFSET), color="0.7", lw=0.8, ls=":")  # the axis break
        ax.set_xscale("log")
        ax.set_title(group, fontsize=10)
        ax.set_xlabel("translation pairs")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
    for ax in axes.flat[len(groups):]:
        ax.axis("off")
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def _bars(ax: Any, langs: list[str], first: list[float], second: list[float], fmt: str,
          labels: tuple[str, str] = ("allocated", "uniform"), colors: tuple[str, str] = ("C0", "C7")) -> None:
    """Two bars per language, each with its number on top."""
    x = np.arange(len(langs))
    for offset, values, label, color in ((-0.2, first, labels[0], colors[0]), (0.2, second, labels[1], colors[1])):
        bars = ax.bar(x + offset, values, 0.4, label=label, color=color)
        for bar, v in zip(bars, values):
            ax.annotate(format(v, fmt), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=7)
    ax.set_xticks(x, langs)
    ax.legend(fontsize=7)


def plot_allocation(allocation: Allocation, path: PathLike, metric: str = "") -> None:
    """Two panels: the amounts per language, allocated and uniform; the predicted metric both ways."""
    plt = _pyplot()
    langs = list(allocation.amounts)
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8.0, 1.6 * len(langs) + 4), 3.6))
    _bars(left, langs, [allocation.amounts[g] for g in langs], [allocation.uniform_amounts[g] for g in langs], ",")
    left.set_title(f"translation pairs (budget {allocation.budget:,})", fontsize=10)
    _bars(right, langs, [allocation.predicted[g] for g in langs], [allocation.uniform_predicted[g] for g in langs],
          ".4g")
    ci = f" [{allocation.gain_ci[0]:.3g}, {allocation.gain_ci[1]:.3g}]" if allocation.gain_ci else ""
    right.set_title(f"predicted {metric} (gain {allocation.gain:+.3g}{ci})", fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def plot_check(splits: Mapping[str, tuple[Mapping[str, float], Mapping[str, float]]], path: PathLike,
               metric: str = "", title: str = "") -> None:
    """One panel per split (allocated, uniform) on a shared axis: predicted and measured `metric` per language."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 3.6), sharey=True, squeeze=False)
    for ax, (name, (predicted, measured)) in zip(axes.flat, splits.items()):
        langs = list(predicted)
        _bars(ax, langs, [predicted[g] for g in langs], [measured[g] for g in langs], ".3g",
              labels=("predicted", "measured"), colors=("C7", "C0"))
        ax.set_title(f"{name} split", fontsize=10)
    axes.flat[0].set_ylabel(metric)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
