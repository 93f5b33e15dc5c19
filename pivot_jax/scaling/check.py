"""Closing the loop: what an allocation predicted against what MuIT measured on the allocated amounts and on the
uniform split of the same budget (the runs of `python -m pivot_jax.sweep ... --check_allocation`).

    check = check_allocation("DIR2/allocation.json", "runs/check")     # the check sweep's results
    write_check(check, "runs/check/check")                              # check.json, check.png

The laws were fitted on one-language runs; a MuIT run trains the languages together, so the measured values also
show what mixing does (transfer or interference) beside the laws' own error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from etils import epath

from pivot_jax.jsonl import read_json
from pivot_jax.paths import PathLike, as_path, write_text_atomic
from pivot_jax.scaling import ScalingError
from pivot_jax.scaling.plots import plot_check
from pivot_jax.scaling.table import METRIC, VALUE, number, read_rows, results_file

# The split column of the check sweep's results and its values, as `allocation.json` names their amounts.
SPLIT = "split"
SPLITS = {"allocated": ("amounts", "predicted"), "uniform": ("uniform_amounts", "uniform_predicted")}


@dataclass(frozen=True)
class SplitCheck:
    """One split: its amounts, the laws' prediction and the measured mean (over seeds) per language."""

    amounts: dict[str, int]
    predicted: dict[str, float]
    measured: dict[str, float]
    runs: dict[str, int]  # measurements (seeds) per language

    def to_json(self) -> dict[str, Any]:
        return {"amounts": self.amounts, "predicted": self.predicted, "measured": self.measured, "runs": self.runs}


@dataclass(frozen=True)
class Check:
    metric: str
    budget: int
    weights: dict[str, float]
    higher_is_better: bool
    splits: dict[str, SplitCheck]
    predicted_gain: float
    predicted_gain_ci: list[float] | None
    allocation: str
    results: str

    @property
    def measured_gain(self) -> float:
        """The allocated split's weighted metric over the uniform one's (a decrease for a lower-is-better metric),
        as the allocation's predicted gain is defined."""
        sign = 1.0 if self.higher_is_better else -1.0
        total = {name: sum(self.weights[lang] * v for lang, v in split.measured.items())
                 for name, split in self.splits.items()}
        return sign * (total["allocated"] - total["uniform"])

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "budget": self.budget, "weights": self.weights,
                "higher_is_better": self.higher_is_better,
                "splits": {name: split.to_json() for name, split in self.splits.items()},
                "predicted_gain": self.predicted_gain, "predicted_gain_ci": self.predicted_gain_ci,
                "measured_gain": self.measured_gain, "allocation": self.allocation, "results": self.results}


def check_allocation(allocation: PathLike, results: PathLike) -> Check:
    """The allocation's predictions beside the measured `metric` of the check runs in `results` (rows with a
    `split` column of allocated/uniform and a `language` column)."""
    record = read_json(allocation)
    for key in ("metric", "budget", "gain", *(k for pair in SPLITS.values() for k in pair)):
        if key not in record:
            raise ScalingError(f"{allocation}: no field {key!r} (an allocation.json of `pivot_jax.scaling allocate`)")
    metric, languages = record["metric"], list(record["amounts"])
    path = results_file(results)
    measured: dict[str, dict[str, list[float]]] = {name: {lang: [] for lang in languages} for name in SPLITS}
    for row in read_rows(path):
        split, lang = str(row.values.get(SPLIT, "")), str(row.values.get("language", ""))
        if str(row.values.get(METRIC)) != metric or split not in SPLITS or lang not in languages:
            continue
        measured[split][lang].append(number(row, VALUE))
    missing = [f"{split}/{lang}" for split, langs in measured.items() for lang, values in langs.items() if not values]
    if missing:
        raise ScalingError(f"{path}: no {metric!r} measured for {', '.join(missing)} (rows need the columns "
                           f"{SPLIT!r} (allocated or uniform), 'language', {METRIC!r} and {VALUE!r}: the results "
                           "of `pivot_jax.sweep --check_allocation`)")
    splits = {name: SplitCheck(amounts={lang: int(record[amounts][lang]) for lang in languages},
                               predicted={lang: float(record[predicted][lang]) for lang in languages},
                               measured={lang: float(np.mean(measured[name][lang])) for lang in languages},
                               runs={lang: len(measured[name][lang]) for lang in languages})
              for name, (amounts, predicted) in SPLITS.items()}
    weights = {lang: float((record.get("weights") or {}).get(lang, 1.0)) for lang in languages}
    return Check(metric=metric, budget=int(record["budget"]), weights=weights,
                 higher_is_better=bool(record.get("higher_is_better", True)), splits=splits,
                 predicted_gain=float(record["gain"]), predicted_gain_ci=record.get("gain_ci"),
                 allocation=str(allocation), results=path)


def write_check(check: Check, output: PathLike) -> tuple[epath.Path, epath.Path]:
    """OUTPUT/check.json and OUTPUT/check.png (each written whole or not at all)."""
    output = as_path(output)
    output.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output / "check.json", json.dumps(check.to_json(), indent=1, ensure_ascii=False) + "\n")
    plot_check({name: (split.predicted, split.measured) for name, split in check.splits.items()},
               output / "check.png", check.metric,
               f"gain predicted {check.predicted_gain:+.3g}, measured {check.measured_gain:+.3g}")
    return output / "check.json", output / "check.png"
