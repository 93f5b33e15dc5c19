"""A sweep file (big_vision style: a Python file whose `get_config(arg)` returns a ConfigDict) and its points.

    s = sweep_config()
    s.name = "coit"
    s.train_config = "configs/quickstart.py:langs=es+zh"       # the base training config ({language} etc. allowed)
    s.axes = [("language", ["es", "zh"]), ("amount", [0, 100, 1000]), ("seed", [0])]   # a grid
    s.compute = "epochs"                                        # or "steps": the same compute for every point
    s.eval_config = "configs/eval/cldr.py:tgt={language},limit=40"

Axes are config keys (`optimizer.lr`) or the aliases `language` (data.langs), `amount` (data.translation_amount:
translation pairs) and `seed`. `s.points` (a list of dicts of axis values) replaces the grid when set. A point's
name comes from its values: `coit-es-pairs1000-seed0`. Amount 0 is the no-translation-data baseline: with
`s.zero_amount_trains = False` (no other training data) it evaluates the starting weights (`train.steps=0`).

The same sweep file checks an allocation (`load_sweep(spec, allocation="DIR2/allocation.json")`): its points are
then MuIT runs over all the languages, one on the allocated amounts and one on the uniform split of the same
budget (per seed), with the file's base config, overrides, compute and eval config (scored in every language).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Sequence
from typing import Any

from ml_collections import ConfigDict

from pivot_jax.config import load_config_file
from pivot_jax.errors import ConfigError
from pivot_jax.jsonl import read_json

ALIASES = {"language": "data.langs", "amount": "data.translation_amount", "seed": "seed"}
COMPUTE = ("epochs", "steps")


def sweep_config() -> ConfigDict:
    """The sweep file schema, with defaults."""
    s = ConfigDict()
    s.name = "sweep"  # the prefix of every point name
    s.train_config = ""  # configs/FILE.py[:ARGS]; "{language}", "{amount}", "{seed}" or any axis are filled in
    s.overrides = []  # [(config key, value)] for every point
    s.axes = []  # [(axis, [values])]: their grid is the points
    s.points = []  # or an explicit list of {axis: value}
    s.compute = "epochs"  # "epochs": train.epochs over each point's data (compute grows with it); "steps": the same
    s.epochs = 3.0
    s.steps = 0
    s.zero_amount_trains = False  # amount 0 trains on the other data (True) or evaluates the start weights (False)
    s.eval_config = ""  # evaluated at each point's last step ({language} etc. filled in)
    s.parallel = 1  # points at a time on the local backend (the command's --parallel wins)
    s.fit = ConfigDict()
    s.fit.metrics = []  # after the sweep: `scaling fit` of each of these metrics (e.g. "chrf++")
    s.fit.law = "auto"
    s.fit.budget = 0  # > 0: `scaling allocate` this many pairs over the languages with the first metric's fits
    return s


@dataclasses.dataclass(frozen=True)
class Point:
    """One training run of the sweep: its name, its axis values and the config overrides they mean."""

    name: str
    values: dict[str, Any]
    overrides: dict[str, str]

    @property
    def tags(self) -> dict[str, str]:
        return {axis: str(value) for axis, value in self.values.items()}


@dataclasses.dataclass(frozen=True)
class Sweep:
    config: ConfigDict
    points: list[Point]
    source: str  # the sweep file (with its arguments)
    allocation: str = ""  # an allocation.json this sweep checks (MuIT on its amounts and the uniform split)

    @property
    def axes(self) -> list[str]:
        return list(self.points[0].values) if self.points else []


def load_sweep(spec: str, allocation: str = "") -> Sweep:
    """The sweep file `FILE.py[:ARGS]` checked and expanded into points (the MuIT check of `allocation` when
    given)."""
    config = load_config_file(spec)
    missing = sorted(set(sweep_config()) - set(config))
    if missing:
        raise ConfigError(f"{spec}: not a sweep file (missing {missing}); start from "
                          "pivot_jax.sweep.spec.sweep_config()")
    if config.compute not in COMPUTE:
        raise ConfigError(f"{spec}: compute must be one of {COMPUTE}, got {config.compute!r}")
    if not config.train_config:
        raise ConfigError(f"{spec}: train_config is empty (the base training config of every point)")
    if config.compute == "epochs" and config.epochs <= 0 or config.compute == "steps" and config.steps <= 0:
        raise ConfigError(f"{spec}: compute={config.compute!r} needs {config.compute} > 0")
    if allocation:
        points = allocation_points(config, read_json(allocation), allocation, spec)
    else:
        rows = [dict(p) for p in config.points] or _grid(config.axes, spec)
        points = [_point(config, values, spec) for values in rows]
    names = [p.name for p in points]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{spec}: points share the names {duplicates}; give them distinct axis values")
    return Sweep(config, points, spec, allocation)


def _grid(axes: Sequence[tuple[str, Sequence[Any]]], spec: str) -> list[dict[str, Any]]:
    if not axes:
        raise ConfigError(f"{spec}: no axes and no points: nothing to sweep")
    for axis in axes:
        if len(axis) != 2 or isinstance(axis[1], str) or not len(axis[1]):
            raise ConfigError(f"{spec}: axis {axis!r} must be (name, [values...]) with at least one value")
    names = [name for name, _ in axes]
    return [dict(zip(names, combo)) for combo in itertools.product(*(values for _, values in axes))]


def _point(config: ConfigDict, values: dict[str, Any], spec: str) -> Point:
    overrides = {key: _text(value) for key, value in config.overrides}
    for axis, value in values.items():
        overrides[ALIASES.get(axis, axis)] = _text(value)
    _set_compute(config, overrides)
    if str(values.get("amount", "")) == "0" and not config.zero_amount_trains:
        overrides.update({"train.steps": "0", "train.epochs": "0"})  # the untrained baseline
    _set_evaluation(overrides, values)
    if config.eval_config:
        overrides["eval.generate_config"] = _fill(config.eval_config, values, spec)
    return Point(point_name(config.name, values), dict(values), overrides)


SPLITS = ("allocated", "uniform")


def allocation_points(config: ConfigDict, allocation: dict[str, Any], where: str, spec: str) -> list[Point]:
    """MuIT over the allocation's languages on its `amounts` and on its `uniform_amounts` (the same budget), per
    seed of the sweep's `seed` axis; a language allocated no pairs still gets scored."""
    splits = {}
    for split, key in zip(SPLITS, ("amounts", "uniform_amounts")):
        amounts = allocation.get(key)
        if not isinstance(amounts, dict) or not amounts or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in amounts.values()):
            raise ConfigError(f"{where}: field {key!r} should map languages to pair counts, got {amounts!r} "
                              "(an allocation.json from `python -m pivot_jax.scaling allocate`)")
        splits[split] = amounts
    languages = list(splits["allocated"])
    if sorted(splits["uniform"]) != sorted(languages):
        raise ConfigError(f"{where}: 'amounts' and 'uniform_amounts' name different languages")
    axes = dict(config.axes)
    fixed = {}  # the sweep's other axes: the check trains at their one value
    for axis, values in axes.items():
        if axis in ALIASES:
            continue
        if len(values) != 1:
            raise ConfigError(f"{spec}: axis {axis!r} has {len(values)} values; an allocation check trains at one "
                              "(give the sweep file an argument to pick it)")
        fixed[axis] = _text(values[0])
    seeds = axes.get("seed", [0])
    points = []
    for split, amounts in splits.items():
        trained = [lang for lang in languages if amounts[lang] > 0]
        for seed in seeds:
            values = {"split": split, "seed": seed}
            overrides = {**{key: _text(value) for key, value in config.overrides}, **fixed}
            overrides.update({"data.method": "muit", "data.langs": ",".join(trained),
                              "data.translation_amount": ",".join(f"{lang}:{amounts[lang]}" for lang in trained),
                              "seed": _text(seed)})
            _set_compute(config, overrides)
            _set_evaluation(overrides, values)
            if config.eval_config:
                overrides["eval.generate_config"] = ";".join(
                    _fill(config.eval_config, {"language": lang, "amount": amounts[lang], "seed": seed}, spec)
                    for lang in languages)
            points.append(Point(point_name(f"{config.name}-check", values), values, overrides))
    return points


def _set_compute(config: ConfigDict, overrides: dict[str, str]) -> None:
    if config.compute == "epochs":
        overrides.update({"train.epochs": _text(config.epochs)})
    else:
        overrides.update({"train.steps": _text(config.steps), "train.epochs": "0"})


def _set_evaluation(overrides: dict[str, str], values: dict[str, Any]) -> None:
    """Evaluate at the last step only, tagged with the point's values."""
    overrides.update({"eval.at_end": "true", "eval.every_steps": "0", "eval.generate_every_steps": "0",
                      "eval.generate_at_start": "false",
                      "eval.tags": ",".join(f"{axis}={value}" for axis, value in values.items())})


def point_name(prefix: str, values: dict[str, Any]) -> str:
    """`coit-es-pairs3000-seed0`: the language as is, `pairs` for amounts, other axes by their last key part."""
    parts = [prefix]
    for axis, value in values.items():
        label = {"language": "", "amount": "pairs", "split": ""}.get(axis, axis.rsplit(".", 1)[-1])
        parts.append(f"{label}{value}")
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", "-".join(parts))


def train_config_of(sweep: Sweep, point: Point) -> str:
    return _fill(sweep.config.train_config, point.values, sweep.source)


def _fill(template: str, values: dict[str, Any], spec: str) -> str:
    try:
        return template.format(**values)
    except KeyError as e:
        raise ConfigError(f"{spec}: {template!r} names {{{e.args[0]}}}, which is not an axis "
                          f"({list(values)})") from None


def _text(value: Any) -> str:
    """A value as a --config.KEY=VALUE flag writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
