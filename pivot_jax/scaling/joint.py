"""One law fitted to every group at once with its exponent shared (x-LLaMA's beta: how fast quality saturates
is a property of the model and the method, the scale a property of the language), compared with the separate
fits of the same law.

    joint = fit_joint(groups, {"es": make_law("xllama"), "zh": make_law("xllama", gamma=0.5)}, n_bootstrap=1000)
    joint.shared                  # {"beta": ...}
    joint.groups["es"]            # a Fit, as the separate ones: the group's parameters with the shared exponent
    joint.preferred               # "joint" or "separate": the smaller mean extrapolation error (ties: LOO)

The fit minimises the Huber loss of each group's residuals over that group's own Huber scale (from its separate
fit), so a noisy group does not outweigh the others. Leave-one-out leaves out one point of one group;
extrapolation holds out every group's largest amount at once; the bootstrap resamples points within each group.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning, least_squares

from pivot_jax.scaling import ScalingError
from pivot_jax.scaling.fit import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_CONFIDENCE,
    MAX_EVALUATIONS,
    TIE_TOLERANCE,
    Candidate,
    Fit,
    fit_law,
    intervals,
    json_safe,
    r2,
    resample,
    rmse,
    too_few,
    try_law,
)
from pivot_jax.scaling.laws import Law
from pivot_jax.scaling.table import Points


@dataclass
class JointFit:
    """The joint fit: the shared exponent, each group's Fit under it, and its errors beside the separate fits'."""

    law: str
    shared: dict[str, float]
    shared_ci: dict[str, list[float]]
    groups: dict[str, Fit]
    separate: dict[str, dict[str, float]]  # group -> {"loo_error", "extrapolation_error"} of its separate fit

    def mean_errors(self) -> dict[str, dict[str, float]]:
        """{"joint" | "separate": {"loo_error", "extrapolation_error"}}, each the mean over the groups."""
        joint = {g: {"loo_error": f.loo_error, "extrapolation_error": f.extrapolation_error}
                 for g, f in self.groups.items()}
        return {name: {key: float(np.mean([e[key] for e in errors.values()]))
                       for key in ("loo_error", "extrapolation_error")}
                for name, errors in (("joint", joint), ("separate", self.separate))}

    @property
    def preferred(self) -> str:
        """"joint" or "separate", by the mean extrapolation error (within TIE_TOLERANCE: the mean LOO error)."""
        mean = self.mean_errors()
        joint, separate = mean["joint"]["extrapolation_error"], mean["separate"]["extrapolation_error"]
        if abs(joint - separate) <= TIE_TOLERANCE * min(joint, separate):
            return "joint" if mean["joint"]["loo_error"] <= mean["separate"]["loo_error"] else "separate"
        return "joint" if joint < separate else "separate"

    def to_json(self) -> dict[str, Any]:
        comparison = {g: {"joint": {"loo_error": f.loo_error, "extrapolation_error": f.extrapolation_error},
                          "separate": self.separate[g]} for g, f in self.groups.items()}
        return json_safe({"law": self.law, "shared": self.shared, "shared_ci": self.shared_ci,
                           "groups": {g: f.to_json() for g, f in self.groups.items()}, "comparison": comparison,
                           "mean": self.mean_errors(), "preferred": self.preferred})


class _Layout:
    """Where each group's parameters sit in the one vector: the shared exponent first, then each group's own."""

    def __init__(self, law: Law, groups: Sequence[str]):
        own = law.n_params - 1
        j = law.params.index(law.exponent)
        self.index = {g: np.insert(1 + k * own + np.arange(own), j, 0) for k, g in enumerate(groups)}
        self.size = 1 + own * len(groups)
        self.exponent = j

    def vector(self, thetas: Mapping[str, np.ndarray], shared: float) -> np.ndarray:
        v = np.empty(self.size)
        for g, idx in self.index.items():
            v[idx] = thetas[g]
        v[0] = shared
        return v


def _solve(laws: Mapping[str, Law], data: Mapping[str, tuple[np.ndarray, np.ndarray]], scales: Mapping[str, float],
           layout: _Layout, starts: Sequence[np.ndarray]) -> np.ndarray:
    """The joint Huber fit from the best of `starts`."""
    groups = list(data)
    rows = np.cumsum([0] + [len(data[g][0]) for g in groups])
    lower, upper = np.empty(layout.size), np.empty(layout.size)
    for g in groups:
        lower[layout.index[g]], upper[layout.index[g]] = laws[g].bounds()

    def residuals(v: np.ndarray) -> np.ndarray:
        return np.concatenate([(laws[g].value(x, v[layout.index[g]]) - y) / scales[g] for g, (x, y) in data.items()])

    def jacobian(v: np.ndarray) -> np.ndarray:
        out = np.zeros((rows[-1], layout.size))
        for k, g in enumerate(groups):
            idx = layout.index[g]
            out[rows[k]:rows[k + 1], idx] = laws[g].jacobian(data[g][0], v[idx]) / scales[g]
        return out

    best = None
    for start in starts:
        start = start.copy()
        for g in groups:
            start[layout.index[g]] = laws[g].clip(start[layout.index[g]])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            try:
                result = least_squares(residuals, start, jac=jacobian, bounds=(lower, upper), loss="huber",
                                       f_scale=1.0, x_scale="jac", method="trf", max_nfev=MAX_EVALUATIONS)
            except ValueError:  # residuals overflow at this start
                continue
        if np.isfinite(result.cost) and (best is None or result.cost < best.cost):
            best = result
    if best is None:
        raise ScalingError("joint fit: no starting point gave finite residuals")
    return best.x


def _starts(layout: _Layout, thetas: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The separate fits side by side, the shared exponent at their median, smallest and largest."""
    exponents = [float(t[layout.exponent]) for t in thetas.values()]
    return [layout.vector(thetas, e) for e in dict.fromkeys([float(np.median(exponents)), min(exponents),
                                                              max(exponents)])]


def fit_joint(points: Mapping[str, Points], laws: Mapping[str, Law], *, higher_is_better: bool = True,
              n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0, confidence: float = DEFAULT_CONFIDENCE) -> JointFit:
    """The groups' law (`laws[group]`: one law, each group's fixed constants) fitted with one shared exponent."""
    groups = sorted(points)
    law = laws[groups[0]]
    if law.exponent is None:
        raise ScalingError(f"law {law.name!r} has no exponent to share; a joint fit takes xllama, power, "
                           "power_offset or loss")
    if len(groups) < 2:
        raise ScalingError(f"a joint fit needs at least two groups; got {groups}")
    for g in groups:
        if reason := too_few(laws[g], points[g].x):
            raise ScalingError(f"joint fit: group {g!r}: {reason}")
    layout = _Layout(law, groups)
    data = {g: (points[g].x, points[g].y) for g in groups}
    separate: dict[str, Candidate] = {g: try_law(laws[g], *data[g]) for g in groups}
    scales = {g: separate[g].fit.f_scale for g in groups}
    vector = _solve(laws, data, scales, layout, _starts(layout, {g: c.fit.theta for g, c in separate.items()}))

    loo: dict[str, list[float]] = {g: [] for g in groups}
    for g in groups:
        x, y = data[g]
        for i in range(len(x)):
            keep = np.arange(len(x)) != i
            v = _solve(laws, {**data, g: (x[keep], y[keep])}, scales, layout, [vector])
            loo[g].append(float(laws[g].value(x[i:i + 1], v[layout.index[g]])[0] - y[i]))

    below = {g: (x[x < x.max()], y[x < x.max()]) for g, (x, y) in data.items()}
    starts = {g: fit_law(laws[g], *below[g], scales[g]).theta for g in groups}
    v = _solve(laws, below, scales, layout, _starts(layout, starts))
    extrapolation = {g: rmse(laws[g].value(x[x == x.max()], v[layout.index[g]]) - y[x == x.max()])
                     for g, (x, y) in data.items()}

    rng = np.random.default_rng([seed, zlib.crc32(b"joint")])
    samples = np.empty((n_bootstrap, layout.size))
    for k in range(n_bootstrap):
        resampled = {}
        for g, (x, y) in data.items():
            idx = resample(rng, x, law.n_params - 1)  # the shared exponent is determined by all groups
            resampled[g] = (x[idx], y[idx])
        samples[k] = _solve(laws, resampled, scales, layout, [vector])
    low, high = intervals(samples, confidence)

    fits = {}
    for g in groups:
        idx, x = layout.index[g], data[g][0]
        fits[g] = Fit(law=law.name, params=laws[g].as_dict(vector[idx]),
                      ci={name: [float(low[i]), float(high[i])] for name, i in zip(law.params, idx)},
                      r2=r2(laws[g], vector[idx], *data[g]), loo_error=rmse(loo[g]),
                      extrapolation_error=extrapolation[g], n=len(x), n_amounts=points[g].n_amounts,
                      x_range=[float(x.min()), float(x.max())], fixed=dict(laws[g].fixed),
                      higher_is_better=higher_is_better, f_scale=scales[g], confidence=confidence,
                      samples={name: samples[:, i].tolist() for name, i in zip(law.params, idx)})
    return JointFit(law=law.name, shared={law.exponent: float(vector[0])},
                    shared_ci={law.exponent: [float(low[0]), float(high[0])]}, groups=fits,
                    separate={g: {"loo_error": c.loo_error, "extrapolation_error": c.extrapolation_error}
                              for g, c in separate.items()})
