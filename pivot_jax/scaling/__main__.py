"""Translation-quality scaling laws (x-LLaMA's study): fit them to sweep results, then split a budget of
translation pairs across languages by them.

  python -m pivot_jax.scaling fit RESULTS --metric chrf++ [--x amount] [--group_by language]
      [--law auto|xllama|power|power_offset|loglinear|loss] [--gamma es:1,zh:0.6] [--joint] --output DIR
  python -m pivot_jax.scaling allocate DIR/fits.json --budget 200000 [--weights es:1,zh:2]
      [--available es:100000,zh:50000] [--minimums es:1000] [--use_joint] --output DIR2
  python -m pivot_jax.scaling check DIR2/allocation.json CHECK_RESULTS --output DIR3

RESULTS is `pivot_jax.sweep collect`'s directory, its results.csv / results.jsonl, or any CSV or JSON-lines file
with the columns named by --x and --group_by, `metric` and `value` (one row per point; seeds are separate points;
amount 0 is the baseline, plotted and never fitted). `fit` prints each group's law, parameters with bootstrap
intervals, R² and errors, and writes DIR/fits.json and DIR/fits.png. `allocate` prints the amounts, the predicted
metric per language and the gain over the uniform split, and writes DIR2/allocation.json, DIR2/allocation.png,
DIR2/muit_override.txt (the configs/muit.py argument) and DIR2/muit_allocated.py (a config file calling it).
`check` reads the results of MuIT runs on the allocated and the uniform amounts (`pivot_jax.sweep
--check_allocation`: a `split` column) and prints measured against predicted per language and the two gains;
writes DIR3/check.json and DIR3/check.png.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from absl import app, flags

from pivot_jax.cli import Command, Subcommand
from pivot_jax.scaling import ScalingError
from pivot_jax.scaling.allocate import Allocation
from pivot_jax.scaling.check import check_allocation, write_check
from pivot_jax.scaling.fit import DEFAULT_BOOTSTRAP, Fit
from pivot_jax.scaling.joint import JointFit
from pivot_jax.scaling.laws import LAWS
from pivot_jax.scaling.study import allocate_from_fits, fit_results, write_allocation, write_fits


def _define_flags() -> None:
    flags.DEFINE_string("metric", None, "fit: the metric to fit (rows whose `metric` column is this)")
    flags.DEFINE_string("x", "amount", "fit: the column of translation pairs")
    flags.DEFINE_string("group_by", "language", "fit: the column whose values are the groups ('' for one group)")
    flags.DEFINE_enum("law", "auto", ["auto", *LAWS], "fit: the law; auto picks, per group, the smallest "
                      "extrapolation error among xllama, power and loglinear (loss and loglinear for a loss)")
    flags.DEFINE_string("gamma", "", "fit: xllama's fixed similarity per group, e.g. es:1,zh:0.6 (default 1)")
    flags.DEFINE_bool("lower_is_better", None, "fit: the metric falls as it improves (default: when its name "
                      "contains 'loss', or --law loss)")
    flags.DEFINE_bool("joint", False, "fit: also fit one exponent shared by all groups (the --law law; with auto "
                      "the law most groups chose) and compare it with the separate fits")
    flags.DEFINE_integer("bootstrap", DEFAULT_BOOTSTRAP, "fit: bootstrap resamples for the intervals", lower_bound=1)
    flags.DEFINE_float("confidence", 0.95, "fit and allocate: the intervals' confidence level", lower_bound=0.5,
                       upper_bound=0.999)
    flags.DEFINE_integer("seed", 0, "fit: the bootstrap's seed; allocate: the seed of SLSQP's random starts")
    flags.DEFINE_integer("budget", None, "allocate: the translation pairs to split", lower_bound=0)
    flags.DEFINE_string("weights", "", "allocate: weight per language, e.g. es:1,zh:2 (default 1)")
    flags.DEFINE_string("available", "", "allocate: pairs available per language, e.g. es:100000 (default no limit)")
    flags.DEFINE_string("minimums", "", "allocate: minimum pairs per language, e.g. es:1000 (default 0)")
    flags.DEFINE_bool("use_joint", False, "allocate: use the joint fit (fit --joint) instead of the separate ones")
    flags.DEFINE_string("output", None, "the output directory (created)")


def _parse_map(text: str, flag: str) -> dict[str, float]:
    """`es:1,zh:2` -> {"es": 1.0, "zh": 2.0}; a malformed item is an error naming the flag."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition(":")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not name.strip() or number is None or not np.isfinite(number):
            raise ScalingError(f"{flag}: {item!r} should be NAME:NUMBER (e.g. es:1000)")
        out[name.strip()] = number
    return out


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "—" if value is None or not np.isfinite(value) else format(value, spec)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


def _print_fits(fits: dict[str, Fit], title: str) -> None:
    print(title)
    rows = [[g, fit.law, str(fit.n), _fmt(fit.r2), _fmt(fit.loo_error), _fmt(fit.extrapolation_error),
             "  ".join(f"{name}={_fmt(v)} [{_fmt(fit.ci[name][0])}, {_fmt(fit.ci[name][1])}]"
                       for name, v in fit.params.items())]
            for g, fit in fits.items()]
    confidence = next(iter(fits.values())).confidence
    print(_table(["group", "law", "n", "R²", "LOO", "extrap", f"parameters [{confidence:.0%} bootstrap CI]"], rows))
    laws = list(dict.fromkeys(name for fit in fits.values() for name in fit.candidates))
    if len(laws) > 1:
        print("\ncandidates: extrapolation error / leave-one-out error (* chosen)")
        rows = [[g] + [_candidate_cell(fit, name) for name in laws] for g, fit in fits.items()]
        print(_table(["group", *laws], rows))


def _candidate_cell(fit: Fit, name: str) -> str:
    candidate = fit.candidates.get(name)
    if candidate is None or "skipped" in candidate:
        return "too few points"
    cell = f"{_fmt(candidate['extrapolation_error'], '.3g')} / {_fmt(candidate['loo_error'], '.3g')}"
    return cell + (" *" if name == fit.law else "")


def _print_joint(joint: JointFit) -> None:
    (name, value), = joint.shared.items()
    low, high = joint.shared_ci[name]
    print(f"\njoint {joint.law}: shared {name} = {_fmt(value)} [{_fmt(low)}, {_fmt(high)}]")
    rows = [[g, _fmt(f.extrapolation_error), _fmt(joint.separate[g]["extrapolation_error"]), _fmt(f.loo_error),
             _fmt(joint.separate[g]["loo_error"])] for g, f in joint.groups.items()]
    mean = joint.mean_errors()
    rows.append(["mean", _fmt(mean["joint"]["extrapolation_error"]), _fmt(mean["separate"]["extrapolation_error"]),
                 _fmt(mean["joint"]["loo_error"]), _fmt(mean["separate"]["loo_error"])])
    print(_table(["group", "joint extrap", "separate extrap", "joint LOO", "separate LOO"], rows))
    print(f"preferred: {joint.preferred}")


def _fit(f: Any, results: str) -> None:
    try:
        study = fit_results(results, f.metric, x=f.x, group_by=f.group_by, law=f.law,
                            gammas=_parse_map(f.gamma, "--gamma"), lower_is_better=f.lower_is_better, joint=f.joint,
                            n_bootstrap=f.bootstrap, seed=f.seed, confidence=f.confidence)
    except ScalingError as e:
        if "contradicts" in str(e):
            raise app.UsageError(f"--{e}") from None
        raise
    by = f"by {f.group_by}" if f.group_by else "one group"
    _print_fits(study.fits, f"{f.metric} against {f.x}, {by} ({study.results}; "
                            f"{'higher' if study.higher_is_better else 'lower'} is better)")
    if study.joint is not None:
        _print_joint(study.joint)
    json_path, png_path = write_fits(study, f.output)
    print(f"\nwrote {json_path} and {png_path}")


def _print_allocation(result: Allocation, metric: str) -> None:
    print(f"allocation of {result.budget:,} pairs: {result.method}")
    rows = [[lang, _fmt(result.weights[lang], "g"), f"{result.amounts[lang]:,}", f"{result.uniform_amounts[lang]:,}",
             _fmt(result.predicted[lang]), _fmt(result.uniform_predicted[lang])] for lang in result.amounts]
    print(_table(["language", "weight", "amount", "uniform", f"predicted {metric}", "uniform predicted"], rows))
    ci = f" [{_fmt(result.gain_ci[0])}, {_fmt(result.gain_ci[1])}] (bootstrap)" if result.gain_ci else \
        " (no bootstrap samples in the fits: no interval)"
    kind = "weighted sum" if result.higher_is_better else "weighted decrease"
    print(f"predicted gain over the uniform split ({kind} of {metric}): {_fmt(result.gain, '+.4g')}{ci}")
    if result.extrapolated:
        print(f"note: outside the fitted amounts (an extrapolation): {', '.join(result.extrapolated)}")


def _allocate(f: Any, fits: str) -> None:
    result, record = allocate_from_fits(fits, f.budget, _parse_map(f.weights, "--weights"),
                                        _parse_map(f.available, "--available"), _parse_map(f.minimums, "--minimums"),
                                        f.use_joint, confidence=f.confidence, seed=f.seed)
    _print_allocation(result, str(record.get("metric", "")))
    paths = write_allocation(result, record, f.output)
    override = paths["muit_override.txt"].read_text().strip()
    print(f"\nMuIT: --config {override}\n   or --config {paths['muit_allocated.py']}")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")


def _check(f: Any, allocation: str, results: str) -> None:
    check = check_allocation(allocation, results)
    print(f"{check.metric} of MuIT at a budget of {check.budget:,} pairs: predicted by the laws, measured "
          f"({'higher' if check.higher_is_better else 'lower'} is better)")
    rows = [[lang, name, f"{split.amounts[lang]:,}", _fmt(split.predicted[lang]), _fmt(split.measured[lang]),
             _fmt(split.measured[lang] - split.predicted[lang], "+.4g"), str(split.runs[lang])]
            for lang in check.splits["allocated"].amounts for name, split in check.splits.items()]
    print(_table(["language", "split", "pairs", "predicted", "measured", "measured - predicted", "runs"], rows))
    ci = check.predicted_gain_ci
    interval = f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""
    print(f"gain of the allocation over the uniform split: predicted {_fmt(check.predicted_gain, '+.4g')}{interval}, "
          f"measured {_fmt(check.measured_gain, '+.4g')}")
    json_path, png_path = write_check(check, f.output)
    print(f"\nwrote {json_path} and {png_path}")


COMMAND = Command("pivot_jax.scaling", __doc__, _define_flags, [
    Subcommand("fit", _fit, "fit scaling laws to a results file -> DIR/fits.json, DIR/fits.png",
               required=("metric", "output")),
    Subcommand("allocate", _allocate, "split a pair budget across languages by fits.json -> DIR2/allocation.json",
               required=("budget", "output")),
    Subcommand("check", _check, "an allocation's predictions against its MuIT runs' results -> DIR3/check.json",
               required=("output",)),
])
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.cli()
