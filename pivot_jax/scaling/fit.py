"""Robust fits of one law to one group's points, their bootstrap intervals and out-of-sample errors, and the
choice among candidate laws.

    fit = fit_group(points, [make_law("xllama"), make_law("power"), make_law("loglinear")], n_bootstrap=1000)
    fit.law, fit.params, fit.ci, fit.extrapolation_error        # the chosen law; see Fit for the JSON shape

A fit minimises the Huber loss of the residuals (scipy's bounded least squares) from several starting points.
The Huber scale is 1.345 robust standard deviations of the residuals (Huber's 95%-efficiency constant): of a
plain least-squares fit first, then of the Huber fit itself, so a point far off the curve counts linearly, not
squared, and does not widen the scale that judges it. Intervals are percentiles of the parameters refitted on
points resampled with replacement (seeds of one amount are separate points). A law is fitted only on at least
two more points than it has parameters, over at least one more amount, so that leaving out a point, or the
largest amount, still leaves it determined.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning, least_squares

from pivot_jax.jsonl import read_json
from pivot_jax.paths import PathLike
from pivot_jax.scaling import ScalingError
from pivot_jax.scaling.laws import Law, make_law
from pivot_jax.scaling.table import Points

HUBER_K = 1.345
MAD_TO_SD = 1.4826  # the median absolute deviation of a normal sample, in standard deviations
DEFAULT_BOOTSTRAP = 1000
DEFAULT_CONFIDENCE = 0.95
# Extrapolation errors within this fraction of the best one are a tie (one held-out amount makes that error
# noisy), which the leave-one-out error decides.
TIE_TOLERANCE = 0.05
# A resample with fewer distinct amounts than the law has parameters cannot determine it: it is drawn again.
_REDRAWS = 100
# Evaluations per start: a law that only fits in a limit (a power law with c and a running off together, on
# log-linear points) stops here, close enough to its limit, instead of at scipy's 100 per parameter.
MAX_EVALUATIONS = 100
# Huber fits at most, each with the scale of the previous one's residuals (it settles in two or three).
_SCALE_ROUNDS = 4


@dataclass
class Fit:
    """One group's fitted law, as in fits.json: the named fields first, then what `allocate` and plots need.

    `params` are unrounded; `ci` {name: [low, high]} at `confidence`; `loo_error` and `extrapolation_error` are
    root mean squared errors of out-of-sample predictions (leave one point out; fit below the largest amount,
    predict every point at it); `samples` {name: [value per bootstrap resample]}; `candidates` {law: {params, r2,
    loo_error, extrapolation_error}} of every law tried, and {law: {"skipped": reason}} of those with too few
    points."""

    law: str
    params: dict[str, float]
    ci: dict[str, list[float]]
    r2: float | None
    loo_error: float
    extrapolation_error: float
    n: int
    n_amounts: int = 0
    x_range: list[float] = field(default_factory=list)
    fixed: dict[str, float] = field(default_factory=dict)
    higher_is_better: bool = True
    f_scale: float = 1.0
    confidence: float = DEFAULT_CONFIDENCE
    samples: dict[str, list[float]] = field(default_factory=dict)
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)

    def make_law(self) -> Law:
        return make_law(self.law, **self.fixed)

    @property
    def theta(self) -> np.ndarray:
        return self.make_law().from_dict(self.params, f"law {self.law}")

    def sample_thetas(self) -> np.ndarray:
        """The bootstrap parameter vectors, (resamples, parameters); (0, parameters) without samples."""
        law = self.make_law()
        if not self.samples:
            return np.zeros((0, law.n_params))
        return np.array([self.samples[name] for name in law.params], dtype=float).T

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.make_law().value(np.asarray(x, dtype=float), self.theta)

    def to_json(self) -> dict[str, Any]:
        return json_safe(asdict(self))

    @classmethod
    def from_json(cls, record: Any, where: str) -> Fit:
        """The fit of one fits.json group; a missing or mistyped field is an error naming `where`."""
        if not isinstance(record, dict):
            raise ScalingError(f"{where}: expected an object, got {type(record).__name__}")
        missing = [name for name in ("law", "params", "n") if name not in record]
        if missing:
            raise ScalingError(f"{where}: missing {', '.join(missing)}")
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in record.items() if k in known}
        values.setdefault("ci", {})
        values.setdefault("loo_error", float("nan"))
        values.setdefault("extrapolation_error", float("nan"))
        values.setdefault("r2", None)
        fit = cls(**values)
        try:
            fit.make_law().from_dict(fit.params)
            if fit.samples:
                fit.sample_thetas()
        except (KeyError, TypeError, ValueError) as e:
            raise ScalingError(f"{where}: {e}") from None
        return fit


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities as null (JSON has neither)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class LawFit:
    """The parameters of one fit, the Huber scale it used and its cost."""

    theta: np.ndarray
    f_scale: float
    cost: float


def huber_scale(residuals: np.ndarray, y: np.ndarray) -> float:
    """HUBER_K robust standard deviations of `residuals` (their median absolute value), kept above a
    millionth of the values' size so that a perfect fit still has a scale."""
    floor = 1e-6 * max(1.0, float(np.max(np.abs(y))))
    return max(HUBER_K * MAD_TO_SD * float(np.median(np.abs(residuals))), floor)


def _solve(law: Law, x: np.ndarray, y: np.ndarray, start: np.ndarray, loss: str, f_scale: float) -> Any:
    lower, upper = law.bounds()
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        return least_squares(lambda t: law.value(x, t) - y, law.clip(start), jac=lambda t: law.jacobian(x, t),
                             bounds=(lower, upper), loss=loss, f_scale=f_scale, x_scale="jac", method="trf",
                             max_nfev=MAX_EVALUATIONS)


def _best(law: Law, x: np.ndarray, y: np.ndarray, starts: Sequence[np.ndarray], loss: str, f_scale: float) -> Any:
    best = None
    for start in starts:
        try:
            result = _solve(law, x, y, start, loss, f_scale)
        except ValueError:  # the residuals overflow at this start: the others decide
            continue
        if np.isfinite(result.cost) and (best is None or result.cost < best.cost):
            best = result
    if best is None:
        raise ScalingError(f"law {law.name}: no starting point gave finite residuals on {len(x)} points")
    return best


def fit_law(law: Law, x: np.ndarray, y: np.ndarray, f_scale: float | None = None,
            starts: Sequence[np.ndarray] | None = None) -> LawFit:
    """The Huber fit of `law` to (x, y) from `starts` (default: the law's, from the data). Without `f_scale`
    the scale comes from a plain least-squares fit, then from the Huber fit's own residuals until it settles
    (within 10%, at most _SCALE_ROUNDS fits)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    starts = law.starts(x, y) if starts is None else starts
    if f_scale is not None:
        result = _best(law, x, y, starts, "huber", f_scale)
        return LawFit(result.x, f_scale, float(result.cost))
    result = _best(law, x, y, starts, "linear", 1.0)
    for _ in range(_SCALE_ROUNDS):  # an outlier inflates the first scale: re-estimate it from the robust fit
        scale = huber_scale(result.fun, y)
        if f_scale is not None and abs(scale - f_scale) <= 0.1 * f_scale:
            break
        f_scale = scale
        result = _best(law, x, y, [result.x], "huber", f_scale)  # the optimum lies near the previous one
    return LawFit(result.x, f_scale, float(result.cost))


def r2(law: Law, theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """The coefficient of determination on (x, y); NaN when y is constant."""
    total = float(np.sum((y - np.mean(y)) ** 2))
    residual = float(np.sum((law.value(x, theta) - y) ** 2))
    return 1.0 - residual / total if total > 0 else float("nan")


def rmse(errors: Sequence[float]) -> float:
    """The root mean square of `errors`."""
    return float(np.sqrt(np.mean(np.square(errors))))


def loo_error(law: Law, x: np.ndarray, y: np.ndarray, f_scale: float, theta: np.ndarray) -> float:
    """Root mean squared error of each point predicted by the law fitted on all the others (started from
    `theta`, the fit on all points: one point moves the optimum little)."""
    errors = []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        theta_i = fit_law(law, x[keep], y[keep], f_scale, [theta]).theta
        errors.append(float(law.value(x[i:i + 1], theta_i)[0] - y[i]))
    return rmse(errors)


def extrapolation_error(law: Law, x: np.ndarray, y: np.ndarray, f_scale: float) -> float:
    """Root mean squared error at the largest amount (all its points, every seed) of the law fitted on the
    smaller amounts."""
    held = x == np.max(x)
    theta = fit_law(law, x[~held], y[~held], f_scale).theta
    return rmse(law.value(x[held], theta) - y[held])


def too_few(law: Law, x: np.ndarray) -> str:
    """Why `law` cannot be fitted and checked on amounts `x` ("" when it can)."""
    p, n, amounts = law.n_params, len(x), len(np.unique(x))
    if n >= p + 2 and amounts >= p + 1:
        return ""
    return (f"{n} points over {amounts} amounts; law {law.name} ({p} parameters) needs at least {p + 2} points "
            f"over {p + 1} amounts")


def resample(rng: np.random.Generator, x: np.ndarray, amounts: int) -> np.ndarray:
    """The indices of a resample of the points with replacement, with at least `amounts` distinct amounts where
    _REDRAWS draws find one (fewer amounts than parameters cannot determine a law)."""
    for _ in range(_REDRAWS):
        idx = rng.integers(0, len(x), len(x))
        if len(np.unique(x[idx])) >= amounts:
            break
    return idx


def bootstrap(law: Law, x: np.ndarray, y: np.ndarray, theta: np.ndarray, f_scale: float,
              n_resamples: int = DEFAULT_BOOTSTRAP, seed: int | Sequence[int] = 0) -> np.ndarray:
    """The parameters refitted on `n_resamples` resamples of the points (with replacement, seeded), each started
    from `theta` (the fit on all points) and from the law's first data start: shape (n_resamples, parameters)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_resamples, law.n_params))
    for k in range(n_resamples):
        idx = resample(rng, x, law.n_params)
        xs, ys = x[idx], y[idx]
        out[k] = fit_law(law, xs, ys, f_scale, [theta, law.starts(xs, ys)[0]]).theta
    return out


def intervals(samples: np.ndarray, confidence: float = DEFAULT_CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) percentile intervals of each column of `samples` at `confidence`."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
    return low, high


@dataclass(frozen=True)
class Candidate:
    """A law fitted to a group, with its checks."""

    law: Law
    fit: LawFit
    r2: float
    loo_error: float
    extrapolation_error: float

    def to_json(self) -> dict[str, Any]:
        return {"params": self.law.as_dict(self.fit.theta), "r2": self.r2, "loo_error": self.loo_error,
                "extrapolation_error": self.extrapolation_error}


def try_law(law: Law, x: np.ndarray, y: np.ndarray) -> Candidate:
    """`law` fitted to (x, y) with its R², leave-one-out and extrapolation errors."""
    fitted = fit_law(law, x, y)
    return Candidate(law, fitted, r2(law, fitted.theta, x, y), loo_error(law, x, y, fitted.f_scale, fitted.theta),
                     extrapolation_error(law, x, y, fitted.f_scale))


def select_law(candidates: Mapping[str, Candidate], tolerance: float = TIE_TOLERANCE) -> str:
    """The candidate with the smallest extrapolation error; errors within `tolerance` (relative) of the smallest
    are a tie, won by the smallest leave-one-out error."""
    best = min(c.extrapolation_error for c in candidates.values())
    tied = [name for name, c in candidates.items() if c.extrapolation_error <= best * (1 + tolerance)]
    return min(tied, key=lambda name: candidates[name].loo_error)


def group_seed(seed: int, group: str) -> list[int]:
    """The bootstrap seed of a group: the run's seed and the group's name, not its position in the file."""
    return [seed, zlib.crc32(group.encode("utf-8"))]


def fit_group(points: Points, laws: Sequence[Law], *, higher_is_better: bool = True,
              n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0, confidence: float = DEFAULT_CONFIDENCE) -> Fit:
    """Each of `laws` with enough points fitted and checked, the best by `select_law` bootstrapped. One law
    with too few points, or none of several, is an error naming the group and the counts."""
    x, y = points.x, points.y
    skipped = {law.name: reason for law in laws if (reason := too_few(law, x))}
    if len(skipped) == len(laws):
        raise ScalingError(f"group {points.group!r}: too few points to fit: " + "; ".join(skipped.values()),
                           hint="amount 0 (the baseline) is not fitted; add amounts or seeds, or choose a law with "
                                "fewer parameters (--law)")
    tried = {law.name: try_law(law, x, y) for law in laws if law.name not in skipped}
    chosen = tried[select_law(tried)]
    law, theta, f_scale = chosen.law, chosen.fit.theta, chosen.fit.f_scale
    samples = bootstrap(law, x, y, theta, f_scale, n_bootstrap, group_seed(seed, points.group))
    low, high = intervals(samples, confidence)
    candidates = {name: c.to_json() for name, c in tried.items()}
    candidates.update({name: {"skipped": reason} for name, reason in skipped.items()})
    return Fit(law=law.name, params=law.as_dict(theta),
               ci={name: [float(lo), float(hi)] for name, lo, hi in zip(law.params, low, high)},
               r2=chosen.r2, loo_error=chosen.loo_error, extrapolation_error=chosen.extrapolation_error, n=len(x),
               n_amounts=points.n_amounts, x_range=[float(np.min(x)), float(np.max(x))], fixed=dict(law.fixed),
               higher_is_better=higher_is_better, f_scale=f_scale, confidence=confidence,
               samples={name: samples[:, i].tolist() for i, name in enumerate(law.params)}, candidates=candidates)


def read_fits(path: PathLike, use_joint: bool = False) -> tuple[dict[str, Fit], dict[str, Any]]:
    """The groups' fits of a fits.json (the joint fit's with `use_joint`) and the whole record."""
    record = read_json(path)
    source = record.get("joint") if isinstance(record, dict) and use_joint else record
    if use_joint and source is None:
        raise ScalingError(f"{path}: no joint fit (run `fit --joint`)")
    groups = source.get("groups") if isinstance(source, dict) else None
    if not isinstance(groups, dict) or not groups:
        raise ScalingError(f"{path}: expected {{\"groups\": {{GROUP: FIT, ...}}}} as `fit` writes")
    prefix = "joint.groups" if use_joint else "groups"
    return {g: Fit.from_json(fit, f"{path}: {prefix}.{g}") for g, fit in groups.items()}, record
