"""A translation-pair budget split across languages by their fitted laws: maximise sum_l w_l * y_l(X_l) subject
to sum_l X_l <= budget and minimum_l <= X_l <= available_l (for a loss, y_l is -L_l: lower is better).

    result = allocate(fits, budget=200_000, weights={"zh": 2.0}, available={"es": 100_000})
    result.amounts, result.predicted, result.gain, result.gain_ci

When every law's utility is concave and never falls (x-LLaMA's law, the power laws, a rising log-linear law, a
falling loss), the optimum is where the weighted marginal gains w_l * y_l'(X_l) are equal (to the multiplier of
the budget, found by bisection), each X_l clipped to its bounds: exact. Otherwise scipy's SLSQP from several
starts finds a (local) optimum. Either way the amounts are then made whole pairs: rounded down, the remainder
given pair by pair to the best marginal gain, and single pairs moved between languages while that gains (for
concave utilities that makes the whole-pair split optimal).

Every law's utility is minus infinity at X = 0 (a log or a negative power of 0), so each language gets at least
one pair. The gain over the uniform split (equal amounts, as far as `available` allows) is the difference of the
objective, and its interval comes from the bootstrap parameters of the fits: the same resample index across
languages, the amounts fixed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import brentq, minimize

from pivot_jax.scaling import ScalingError
from pivot_jax.scaling.fit import DEFAULT_CONFIDENCE, Fit, intervals, json_safe
from pivot_jax.scaling.laws import utility_is_concave

MUIT_CONFIG = "configs/muit.py"
_BISECTIONS = 200  # halvings of the log-multiplier's bracket: far below float precision
_EXCHANGES = 100_000  # single-pair moves at most (rounding leaves the optimum within a pair per language)
_RANDOM_STARTS = 4  # SLSQP starts drawn at random (seeded), besides the uniform split and one corner per language


@dataclass
class Allocation:
    """The chosen amounts and what the laws predict for them and for the uniform split (allocation.json)."""

    budget: int
    amounts: dict[str, int]
    predicted: dict[str, float]
    uniform_predicted: dict[str, float]
    gain: float
    gain_ci: list[float] | None
    uniform_amounts: dict[str, int] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    minimums: dict[str, int] = field(default_factory=dict)
    available: dict[str, int | None] = field(default_factory=dict)
    method: str = ""
    higher_is_better: bool = True
    extrapolated: list[str] = field(default_factory=list)  # languages given amounts outside their fitted range

    def to_json(self) -> dict[str, Any]:
        return json_safe({"budget": self.budget, "amounts": self.amounts, "predicted": self.predicted,
                          "uniform_predicted": self.uniform_predicted, "gain": self.gain, "gain_ci": self.gain_ci,
                          "uniform_amounts": self.uniform_amounts, "weights": self.weights,
                          "minimums": self.minimums, "available": self.available, "method": self.method,
                          "higher_is_better": self.higher_is_better, "extrapolated": self.extrapolated})


class _Problem:
    """The utilities, weights and bounds of one allocation, in the fits' order."""

    def __init__(self, fits: Mapping[str, Fit], weights: Mapping[str, float], lower: np.ndarray,
                 upper: np.ndarray, sign: int):
        self.langs = list(fits)
        self.laws = [fits[lang].make_law() for lang in self.langs]
        self.thetas = [fits[lang].theta for lang in self.langs]
        self.w = np.array([weights[lang] for lang in self.langs]) * sign
        self.lower, self.upper = lower, upper

    def utility(self, i: int, x: float | np.ndarray) -> np.ndarray:
        return self.w[i] * self.laws[i].value(np.atleast_1d(np.asarray(x, dtype=float)), self.thetas[i])

    def marginal(self, i: int, x: float) -> float:
        return float(self.w[i] * self.laws[i].slope(np.array([x]), self.thetas[i])[0])

    def objective(self, amounts: np.ndarray) -> float:
        return float(sum(self.utility(i, a)[0] for i, a in enumerate(amounts)))


def _check_names(kind: str, values: Mapping[str, float] | None, langs: list[str]) -> dict[str, float]:
    values = dict(values or {})
    unknown = sorted(set(values) - set(langs))
    if unknown:
        raise ScalingError(f"{kind} names {', '.join(unknown)}, which the fits do not have (groups: "
                           f"{', '.join(langs)})")
    for lang, v in values.items():
        if not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise ScalingError(f"{kind} of {lang}: {v!r} is not a finite number")
    return values


def _bounds(langs: list[str], available: dict[str, float], minimums: dict[str, float], budget: int
            ) -> tuple[np.ndarray, np.ndarray]:
    for lang, v in minimums.items():
        if v < 0 or v != int(v):
            raise ScalingError(f"minimum of {lang}: {v!r} should be a whole number >= 0")
    for lang, v in available.items():
        if v < 1 or v != int(v):
            raise ScalingError(f"available of {lang}: {v!r} should be a whole number >= 1 (a law is minus "
                               "infinity at 0 pairs; leave the language out of the fits instead)")
        if v < minimums.get(lang, 0):
            raise ScalingError(f"{lang}: available {int(v)} is below its minimum {int(minimums[lang])}")
    lower = np.array([max(minimums.get(lang, 0), 1) for lang in langs], dtype=float)
    upper = np.array([available.get(lang, np.inf) for lang in langs], dtype=float)
    total_min = sum(minimums.values())
    if budget < total_min:
        raise ScalingError(f"budget {budget} is below the sum of the minimums, {int(total_min)} ("
                           + ", ".join(f"{lang}: {int(v)}" for lang, v in sorted(minimums.items())) + ")")
    if budget < lower.sum():
        raise ScalingError(f"budget {budget} is below {int(lower.sum())}: every language needs at least one pair "
                           "(and its minimum)")
    return lower, upper


def _amount_at(problem: _Problem, i: int, multiplier: float) -> float:
    """The amount of language i whose marginal gain is `multiplier`, clipped to its bounds (concave utility)."""
    lo, hi = problem.lower[i], problem.upper[i]
    if problem.marginal(i, lo) <= multiplier:
        return lo
    if np.isfinite(hi) and problem.marginal(i, hi) >= multiplier:
        return hi
    top = lo * 2
    while problem.marginal(i, top) >= multiplier:
        if np.isfinite(hi) and top >= hi:
            return hi
        top *= 2
    top = min(top, hi)
    return math.exp(brentq(lambda t: problem.marginal(i, math.exp(t)) - multiplier, math.log(lo), math.log(top),
                           xtol=1e-13))


def _equal_marginals(problem: _Problem, budget: int) -> np.ndarray:
    """The exact optimum of concave, never-falling utilities: bisection on the multiplier (in log space)."""
    n = len(problem.langs)

    def amounts(log_multiplier: float) -> np.ndarray:
        return np.array([_amount_at(problem, i, math.exp(log_multiplier)) for i in range(n)])

    top = max(problem.marginal(i, problem.lower[i]) for i in range(n))
    if top <= 0:  # every law is flat: nothing gains from more pairs
        return problem.lower.copy()
    high, low = math.log(top), math.log(top) - 50.0
    while amounts(low).sum() < budget and low > math.log(top) - 700:  # until the budget binds, or flat laws
        low -= 50.0
    for _ in range(_BISECTIONS):
        mid = (low + high) / 2
        if amounts(mid).sum() > budget:
            low = mid
        else:
            high = mid
    return amounts(high)  # the side that keeps within the budget


def _slsqp(problem: _Problem, budget: int, start_points: list[np.ndarray]) -> np.ndarray:
    """The best SLSQP optimum from `start_points`, in units of the budget (scaled for the solver)."""
    scale = float(budget)
    bounds = [(lo / scale, None if not np.isfinite(hi) else hi / scale)
              for lo, hi in zip(problem.lower, problem.upper)]

    def negative(z: np.ndarray) -> float:
        return -problem.objective(np.maximum(z * scale, problem.lower))

    def gradient(z: np.ndarray) -> np.ndarray:
        x = np.maximum(z * scale, problem.lower)
        return -np.array([problem.marginal(i, a) for i, a in enumerate(x)]) * scale

    budget_left = {"type": "ineq", "fun": lambda z: 1.0 - z.sum(), "jac": lambda z: -np.ones_like(z)}
    best, best_value = None, -np.inf
    for start in start_points:
        with np.errstate(all="ignore"):
            result = minimize(negative, start / scale, jac=gradient, bounds=bounds, constraints=[budget_left],
                              method="SLSQP", options={"maxiter": 500, "ftol": 1e-12})
        x = np.clip(result.x * scale, problem.lower, problem.upper)
        if x.sum() > budget:
            x = problem.lower + (x - problem.lower) * (budget - problem.lower.sum()) / (x - problem.lower).sum()
        value = problem.objective(x)
        if value > best_value:
            best, best_value = x, value
    return best


def _water_fill(lower: np.ndarray, upper: np.ndarray, total: float) -> np.ndarray:
    """clip(level, lower, upper) with the one level whose sum is `total` (at most the sum of `upper`)."""
    low, high = 0.0, float(max(total, np.max(lower)))
    for _ in range(_BISECTIONS):
        mid = (low + high) / 2
        if np.clip(mid, lower, upper).sum() > total:
            high = mid
        else:
            low = mid
    return np.clip(low, lower, upper)


def _whole(problem: _Problem, amounts: np.ndarray, budget: int) -> np.ndarray:
    """`amounts` as whole pairs within the bounds and the budget: rounded down, the remainder pair by pair to the
    largest marginal gain, then single pairs moved from the smallest loss to the largest gain while that gains."""
    lower, upper = np.ceil(problem.lower), np.floor(problem.upper)
    x = np.clip(np.floor(amounts + 1e-9), lower, upper)
    n = len(x)

    def gain_up(i: int) -> float:
        return float(problem.utility(i, x[i] + 1)[0] - problem.utility(i, x[i])[0]) if x[i] < upper[i] else -np.inf

    def loss_down(i: int) -> float:
        return float(problem.utility(i, x[i])[0] - problem.utility(i, x[i] - 1)[0]) if x[i] > lower[i] else np.inf

    while x.sum() < budget:
        gains = [gain_up(i) for i in range(n)]
        best = int(np.argmax(gains))
        if not gains[best] > 0:
            break
        x[best] += 1
    for _ in range(_EXCHANGES):
        gains, losses = [gain_up(i) for i in range(n)], [loss_down(i) for i in range(n)]
        up, down = int(np.argmax(gains)), int(np.argmin(losses))
        if up == down or not gains[up] > losses[down] + 1e-12 * (abs(gains[up]) + abs(losses[down])):
            break
        x[up] += 1
        x[down] -= 1
    return x


def allocate(fits: Mapping[str, Fit], budget: int, weights: Mapping[str, float] | None = None,
             available: Mapping[str, float] | None = None, minimums: Mapping[str, float] | None = None,
             confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> Allocation:
    """The whole-pair amounts per language (a group of `fits`) that maximise the weighted predicted metric;
    `weights` default to 1, `available` to unlimited, `minimums` to 0 (each language gets at least 1 pair)."""
    langs = sorted(fits)
    if not langs:
        raise ScalingError("no fits to allocate over")
    directions = {fits[lang].higher_is_better for lang in langs}
    if len(directions) > 1:
        raise ScalingError("the fits mix higher-is-better and lower-is-better metrics; allocate over one metric")
    higher = directions.pop()
    if budget != int(budget) or budget < 0:
        raise ScalingError(f"budget {budget!r} should be a whole number of pairs >= 0")
    budget = int(budget)
    weights = {lang: 1.0 for lang in langs} | _check_names("--weights", weights, langs)
    for lang, w in weights.items():
        if w <= 0:
            raise ScalingError(f"weight of {lang}: {w!r} should be > 0 (leave the language out of the fits instead)")
    available, minimums = _check_names("--available", available, langs), _check_names("--minimums", minimums, langs)
    lower, upper = _bounds(langs, available, minimums, budget)
    problem = _Problem({lang: fits[lang] for lang in langs}, weights, lower, upper, 1 if higher else -1)

    uniform = _water_fill(lower, upper, min(budget, upper.sum()))
    concave = all(utility_is_concave(law, theta, higher) for law, theta in zip(problem.laws, problem.thetas))
    if concave and upper.sum() <= budget:  # no utility falls with more pairs: take them all
        method, continuous = "everything available (the budget covers it)", upper.copy()
    elif concave:
        method, continuous = "equal marginal gains (exact: concave utilities)", _equal_marginals(problem, budget)
    else:
        rng = np.random.default_rng(seed)
        room = budget - lower.sum()
        corners = [lower + room * np.eye(len(langs))[i] for i in range(len(langs))]
        randoms = [lower + room * rng.dirichlet(np.ones(len(langs))) for _ in range(_RANDOM_STARTS)]
        starts = [np.minimum(s, upper) for s in [uniform, *corners, *randoms]]
        method, continuous = "SLSQP from several starts (a law is not concave)", _slsqp(problem, budget, starts)
    amounts = _whole(problem, continuous, budget)
    uniform = _whole_uniform(uniform, lower, upper, budget)

    gain = problem.objective(amounts) - problem.objective(uniform)
    samples = [fits[lang].sample_thetas() for lang in langs]
    gain_ci = None
    k = min(len(s) for s in samples)
    if k:
        gains = sum(problem.w[i] * (law.value(np.array([amounts[i]]), s[:k].T) - law.value(np.array([uniform[i]]),
                                                                                         s[:k].T))
                    for i, (law, s) in enumerate(zip(problem.laws, samples)))
        low, high = intervals(np.asarray(gains)[:, None], confidence)
        gain_ci = [float(low[0]), float(high[0])]
    return Allocation(
        budget=budget, amounts={lang: int(a) for lang, a in zip(langs, amounts)},
        predicted={lang: float(fits[lang].predict(np.array([a]))[0]) for lang, a in zip(langs, amounts)},
        uniform_predicted={lang: float(fits[lang].predict(np.array([u]))[0]) for lang, u in zip(langs, uniform)},
        gain=float(gain), gain_ci=gain_ci, uniform_amounts={lang: int(u) for lang, u in zip(langs, uniform)},
        weights=weights, minimums={lang: int(v) for lang, v in minimums.items()},
        available={lang: int(available[lang]) if lang in available else None for lang in langs}, method=method,
        higher_is_better=higher,
        extrapolated=[lang for lang, a in zip(langs, amounts)
                      if fits[lang].x_range and not fits[lang].x_range[0] <= a <= fits[lang].x_range[1]])


def _whole_uniform(level: np.ndarray, lower: np.ndarray, upper: np.ndarray, budget: int) -> np.ndarray:
    """The uniform split in whole pairs: rounded down, the remainder one pair each in the languages' order."""
    x = np.clip(np.floor(level + 1e-9), np.ceil(lower), np.floor(upper))
    for i in range(len(x)):
        if x.sum() >= min(budget, np.floor(upper).sum()):
            break
        if x[i] < np.floor(upper[i]):
            x[i] += 1
    return x


def muit_override(amounts: dict[str, int]) -> str:
    """The configs/muit.py argument that trains these amounts: its languages and the amount of each."""
    return (f"{MUIT_CONFIG}:langs={'+'.join(amounts)},"
            f"amounts={'+'.join(f'{lang}:{n}' for lang, n in amounts.items())}")


def muit_config(override: str, budget: int, fits_path: str, config_path: str) -> str:
    """The text of a config file (to be written at `config_path`) that is configs/muit.py with the allocated
    languages and amounts; arguments given to it pass on to configs/muit.py."""
    argument = override.split(":", 1)[1]
    return f'''"""MuIT with the translation amounts that `python -m pivot_jax.scaling allocate` chose for a budget of
{budget:,} pairs (from the fits in FITS). An argument goes on to {MUIT_CONFIG} (e.g. `:model=llama-7b`).

  python -m pivot_jax.train --config {config_path} --workdir runs/muit_allocated ...
"""

import importlib.util
from pathlib import Path

import pivot_jax

ARGUMENT = {argument!r}
FITS = {fits_path!r}
# {MUIT_CONFIG} of the checkout that pivot_jax is installed from (configs/ is not a package to import).
MUIT = Path(pivot_jax.__file__).resolve().parents[1] / {MUIT_CONFIG!r}


def get_config(arg=None):
    spec = importlib.util.spec_from_file_location("muit_config", MUIT)
    muit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(muit)
    return muit.get_config(",".join(filter(None, [ARGUMENT, arg])))
'''
