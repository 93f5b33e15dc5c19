"""A results table to fitted laws, and fitted laws to an allocation, in one call each, with their files: what
`python -m pivot_jax.scaling` and notebooks/scaling_laws.ipynb both run.

    study = fit_results("runs/sweep/results.csv", "chrf++")            # points and one Fit per language
    write_fits(study, "runs/sweep/fits/chrf++")                        # fits.json + fits.png
    result = allocate_from_fits("runs/sweep/fits/chrf++/fits.json", budget=20000)
    write_allocation(result, "runs/sweep/allocation")                  # allocation.json + .png + MuIT override
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from etils import epath

from pivot_jax.paths import PathLike, as_path, write_text_atomic
from pivot_jax.scaling import ScalingError
from pivot_jax.scaling.allocate import Allocation, allocate, muit_config, muit_override
from pivot_jax.scaling.fit import DEFAULT_BOOTSTRAP, DEFAULT_CONFIDENCE, Fit, fit_group, read_fits
from pivot_jax.scaling.joint import JointFit, fit_joint
from pivot_jax.scaling.laws import AUTO, LAWS, make_law
from pivot_jax.scaling.plots import plot_allocation, plot_fits
from pivot_jax.scaling.table import Points, read_points, results_file


def higher_is_better(metric: str, law: str = "auto", lower_is_better: bool | None = None) -> bool:
    """The metric's direction: as given, else the law's (`loss` falls), else lower for names with "loss"."""
    law_direction = LAWS[law].direction if law != "auto" else 0
    if lower_is_better is not None:
        if law_direction and (law_direction > 0) == lower_is_better:
            raise ScalingError(f"law {law} is for a metric where {'higher' if law_direction > 0 else 'lower'} is "
                               "better; it contradicts --lower_is_better")
        return not lower_is_better
    return law_direction > 0 if law_direction else "loss" not in metric.lower()


@dataclasses.dataclass
class Study:
    """One metric of a results file: its points and fits per group (and the joint fit when asked)."""

    results: str
    metric: str
    x: str
    group_by: str
    higher_is_better: bool
    points: dict[str, Points]
    fits: dict[str, Fit]
    joint: JointFit | None = None

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"groups": {g: fit.to_json() for g, fit in self.fits.items()}, "metric": self.metric,
                                  "x": self.x, "group_by": self.group_by, "results": self.results,
                                  "higher_is_better": self.higher_is_better}
        if self.joint is not None:
            record["joint"] = self.joint.to_json()
        return record


def fit_results(results: PathLike, metric: str, *, x: str = "amount", group_by: str = "language",
                law: str = "auto", gammas: Mapping[str, float] | None = None, lower_is_better: bool | None = None,
                joint: bool = False, n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                confidence: float = DEFAULT_CONFIDENCE) -> Study:
    """Fit `law` (or, with "auto", each group's best candidate) to every group of `metric` in `results`."""
    higher = higher_is_better(metric, law, lower_is_better)
    path = results_file(results)
    points = read_points(path, metric, x, group_by)
    gammas = dict(gammas or {})
    unknown = sorted(set(gammas) - set(points))
    if unknown:
        raise ScalingError(f"--gamma names {', '.join(unknown)}, which {path} has no points of (groups: "
                           f"{', '.join(points)})")
    names = AUTO[higher] if law == "auto" else (law,)

    def make(name: str, group: str):
        return make_law(name, gamma=gammas.get(group, 1.0)) if name == "xllama" else make_law(name)

    fits = {g: fit_group(p, [make(name, g) for name in names], higher_is_better=higher, n_bootstrap=n_bootstrap,
                         seed=seed, confidence=confidence) for g, p in points.items()}
    study = Study(str(path), metric, x, group_by, higher, points, fits)
    if joint:
        chosen = law if law != "auto" else _joint_law(fits, higher)
        study.joint = fit_joint(points, {g: make(chosen, g) for g in points}, higher_is_better=higher,
                                n_bootstrap=n_bootstrap, seed=seed, confidence=confidence)
    return study


def _joint_law(fits: dict[str, Fit], higher: bool) -> str:
    """With law auto: the law with an exponent that most groups chose (ties: the first candidate)."""
    votes = Counter(fit.law for fit in fits.values() if LAWS[fit.law].exponent)
    candidates = [name for name in AUTO[higher] if LAWS[name].exponent]
    return max(candidates, key=lambda name: votes[name])


def write_fits(study: Study, output: PathLike) -> tuple[epath.Path, epath.Path]:
    """OUTPUT/fits.json and OUTPUT/fits.png (each written whole or not at all)."""
    output = as_path(output)
    output.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output / "fits.json", json.dumps(study.to_json(), indent=1, ensure_ascii=False) + "\n")
    plot_fits(study.points, study.fits, output / "fits.png", study.metric, study.joint.groups if study.joint else None)
    return output / "fits.json", output / "fits.png"


def allocate_from_fits(fits: PathLike, budget: int, weights: Mapping[str, float] | None = None,
                       available: Mapping[str, float] | None = None, minimums: Mapping[str, float] | None = None,
                       use_joint: bool = False, confidence: float = DEFAULT_CONFIDENCE, seed: int = 0
                       ) -> tuple[Allocation, dict[str, Any]]:
    """The allocation of `budget` pairs by the laws in a fits.json, and that file's record."""
    group_fits, record = read_fits(fits, use_joint)
    result = allocate(group_fits, budget, dict(weights or {}), dict(available or {}), dict(minimums or {}),
                      confidence=confidence, seed=seed)
    return result, {**record, "fits": str(fits)}


def write_allocation(result: Allocation, record: Mapping[str, Any], output: PathLike) -> dict[str, epath.Path]:
    """OUTPUT/allocation.json, allocation.png, muit_override.txt and muit_allocated.py."""
    output = as_path(output)
    output.mkdir(parents=True, exist_ok=True)
    metric, fits = str(record.get("metric", "")), str(record.get("fits", ""))
    override = muit_override(result.amounts)
    paths = {name: output / name for name in ("allocation.json", "allocation.png", "muit_override.txt",
                                             "muit_allocated.py")}
    write_text_atomic(paths["allocation.json"], json.dumps(
        {**result.to_json(), "metric": metric, "fits": fits, "override": override}, indent=1,
        ensure_ascii=False) + "\n")
    write_text_atomic(paths["muit_override.txt"], override + "\n")
    write_text_atomic(paths["muit_allocated.py"], muit_config(override, result.budget, fits,
                                                              str(paths["muit_allocated.py"])))
    plot_allocation(result, paths["allocation.png"], metric)
    return paths
