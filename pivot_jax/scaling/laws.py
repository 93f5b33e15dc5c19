"""The candidate scaling laws: a metric against the number of translation pairs X > 0, one class per law, its
formula in its docstring.

    law = make_law("xllama", gamma=0.8)
    y = law.value(x, theta)              # theta: the fitted parameters, in the order of law.params

A law knows what fitting needs (bounds, data-driven starting points, the Jacobian in its parameters) and what
allocating needs (dy/dX, and whether its curve is monotone and concave or convex). Every law here keeps one sign
of dy/dX and one of d²y/dX² over all X > 0 for given parameters, so `shape` can answer for the whole axis.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np

from pivot_jax.scaling import ScalingError

# Exponents are bounded so that a fit cannot run to a degenerate corner (a step function) on a few points.
MAX_EXPONENT = 5.0
# Where a power of (c - y) is fitted on a log scale to find starting points, the gap is kept above this.
_TINY = 1e-9


def check_amounts(x: np.ndarray, what: str = "amount") -> np.ndarray:
    """`x` as a float array; an amount that is not finite or not > 0 (a law takes its log or a negative power)
    is an error naming the value."""
    x = np.asarray(x, dtype=float)
    bad = x[~(np.isfinite(x) & (x > 0))]
    if bad.size:
        raise ScalingError(f"{what} {float(bad[0])!r}: a scaling law needs amounts > 0 (it takes their log or a power)")
    return x


class Law(abc.ABC):
    """A law y(X; theta). Subclasses set the class attributes and the methods below."""

    name: ClassVar[str]
    params: ClassVar[tuple[str, ...]]
    # +1: y rises with X (a score such as chrF), -1: y falls (a loss), 0: either, as the parameters say.
    direction: ClassVar[int]
    # The parameter that one joint fit shares across groups (None: the law has no exponent to share).
    exponent: ClassVar[str | None] = None
    formula: ClassVar[str]

    def __init__(self, **fixed: float):
        if fixed:
            raise ScalingError(f"law {self.name!r} has no fixed constants; got {sorted(fixed)}")
        self.fixed: dict[str, float] = {}

    @property
    def n_params(self) -> int:
        return len(self.params)

    def as_dict(self, theta: np.ndarray) -> dict[str, float]:
        return {name: float(v) for name, v in zip(self.params, theta)}

    def from_dict(self, values: dict[str, float], where: str = "") -> np.ndarray:
        """The parameter vector of `values` ({name: value}); a missing name is an error naming `where`."""
        missing = [p for p in self.params if p not in values]
        if missing:
            raise ScalingError(f"{where}{': ' if where else ''}law {self.name!r} needs parameters "
                               f"{list(self.params)}; missing {missing}")
        return np.array([float(values[p]) for p in self.params])

    @abc.abstractmethod
    def value(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """y at the amounts x."""

    @abc.abstractmethod
    def jacobian(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """dy/dtheta at each x: shape (len(x), n_params)."""

    @abc.abstractmethod
    def slope(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """dy/dX at the amounts x."""

    @abc.abstractmethod
    def shape(self, theta: np.ndarray) -> tuple[int, int]:
        """(sign of dy/dX, sign of d²y/dX²) on all X > 0: (1, -1) rising and concave, (0, 0) flat."""

    @abc.abstractmethod
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) of each parameter, for scipy's bounded least squares."""

    @abc.abstractmethod
    def starts(self, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        """Starting points for a multistart fit, from the data (x > 0)."""

    def clip(self, theta: np.ndarray) -> np.ndarray:
        """`theta` moved strictly inside the bounds (scipy refuses a start on or outside them)."""
        lower, upper = self.bounds()
        span = np.where(np.isfinite(upper - lower), (upper - lower) * 1e-6, 1e-9)
        return np.clip(np.nan_to_num(theta, nan=0.0), lower + span, upper - span)


def _line(t: np.ndarray, z: np.ndarray) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line z = intercept + slope * t (slope 0 when t is constant)."""
    if np.ptp(t) == 0:
        return float(np.mean(z)), 0.0
    slope, intercept = np.polyfit(t, z, 1)
    return float(intercept), float(slope)


def _power_starts(x: np.ndarray, gaps: list[np.ndarray]) -> list[tuple[float, float]]:
    """(scale, exponent) of gap = scale * x ** (-exponent) fitted on log scales, for each candidate gap."""
    out = []
    for gap in gaps:
        intercept, slope = _line(np.log(x), np.log(np.maximum(gap, _TINY)))
        out.append((float(np.exp(intercept)), float(np.clip(-slope, 1e-3, MAX_EXPONENT))))
    return out


# The asymptote of a saturating law is tried at these multiples of the data's spread beyond its best point.
_ASYMPTOTE_MARGINS = (0.05, 0.3, 1.0, 3.0)


class XLlama(Law):
    """x-LLaMA's law: y = 100 - alpha * (gamma * X) ** beta, with alpha >= 0 and beta <= 0 (the paper's beta < 0).

    y is a 0-100 score (chrF, BLEU, COMET x 100) rising towards 100. gamma is a fixed similarity of the language to
    the pivot, given by the user (default 1): fitted together with alpha it would not be identifiable, since
    alpha * gamma ** beta is one number.
    """

    name = "xllama"
    params = ("alpha", "beta")
    direction = 1
    exponent = "beta"
    formula = "y = 100 - alpha * (gamma * X) ** beta"
    CEILING = 100.0

    def __init__(self, gamma: float = 1.0):
        if not (np.isfinite(gamma) and gamma > 0):
            raise ScalingError(f"xllama: gamma {gamma!r} should be a number > 0")
        self.fixed = {"gamma": float(gamma)}

    def _power(self, x: np.ndarray, beta: float) -> np.ndarray:
        return (self.fixed["gamma"] * check_amounts(x)) ** beta

    def value(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        alpha, beta = theta
        return self.CEILING - alpha * self._power(x, beta)

    def jacobian(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        alpha, beta = theta
        power = self._power(x, beta)
        return np.stack([-power, -alpha * power * np.log(self.fixed["gamma"] * x)], axis=-1)

    def slope(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        alpha, beta = theta
        return -alpha * beta * self._power(x, beta) / x

    def shape(self, theta: np.ndarray) -> tuple[int, int]:
        alpha, beta = theta
        return (1, -1) if alpha > 0 and beta < 0 else (0, 0)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([0.0, -MAX_EXPONENT]), np.array([np.inf, 0.0])

    def starts(self, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        gx = self.fixed["gamma"] * x
        scale, exponent = _power_starts(gx, [self.CEILING - y])[0]
        out = [np.array([scale, -exponent])]
        for beta in (-0.05, -0.3, -1.0):  # the log-scale line is poor when y nears 100 or is noisy
            alpha = np.mean(np.maximum(self.CEILING - y, _TINY)) / np.mean(gx**beta)
            out.append(np.array([alpha, beta]))
        return [self.clip(t) for t in out]


class Power(Law):
    """Saturating power law: y = c - a * X ** (-b), with a >= 0 and 0 <= b: y rises towards the ceiling c."""

    name = "power"
    params = ("c", "a", "b")
    direction = 1
    exponent = "b"
    formula = "y = c - a * X ** (-b)"

    def value(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        c, a, b = theta
        return c - a * check_amounts(x) ** (-b)

    def jacobian(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        c, a, b = theta
        power = x ** (-b)
        return np.stack([np.ones_like(power), -power, a * power * np.log(x)], axis=-1)

    def slope(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        c, a, b = theta
        return a * b * check_amounts(x) ** (-b - 1)

    def shape(self, theta: np.ndarray) -> tuple[int, int]:
        c, a, b = theta
        return (1, -1) if a > 0 and b > 0 else (0, 0)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([-np.inf, 0.0, 0.0]), np.array([np.inf, np.inf, MAX_EXPONENT])

    def starts(self, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        top, spread = float(np.max(y)), float(np.ptp(y)) or 1.0
        ceilings = [top + m * spread for m in _ASYMPTOTE_MARGINS]
        return [self.clip(np.array([c, a, b]))
                for c, (a, b) in zip(ceilings, _power_starts(x, [c - y for c in ceilings]))]


class PowerOffset(Law):
    """Saturating power law with an offset: y = c - a * (X + x0) ** (-b), with a >= 0, 0 <= b and x0 >= 0 (the
    pairs' worth of what the model knew before; x0 = 0 is the plain power law)."""

    name = "power_offset"
    params = ("c", "a", "b", "x0")
    direction = 1
    exponent = "b"
    formula = "y = c - a * (X + x0) ** (-b)"

    def value(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        c, a, b, x0 = theta
        return c - a * (check_amounts(x) + x0) ** (-b)

    def jacobian(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        c, a, b, x0 = theta
        power = (x + x0) ** (-b)
        return np.stack([np.ones_like(power), -power, a * power * np.log(x + x0), a * b * power / (x + x0)], axis=-1)

    def slope(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        c, a, b, x0 = theta
        return a * b * (check_amounts(x) + x0) ** (-b - 1)

    def shape(self, theta: np.ndarray) -> tuple[int, int]:
        c, a, b, x0 = theta
        return (1, -1) if a > 0 and b > 0 else (0, 0)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([-np.inf, 0.0, 0.0, 0.0]), np.array([np.inf, np.inf, MAX_EXPONENT, np.inf])

    def starts(self, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        plain = Power().starts(x, y)
        offsets = (0.0, float(np.min(x)), float(np.median(x)))
        return [self.clip(np.append(t, x0)) for t in plain for x0 in offsets]


class LogLinear(Law):
    """Log-linear law: y = a + b * log(X) (natural log); b > 0 for a score, b < 0 for a loss."""

    name = "loglinear"
    params = ("a", "b")
    direction = 0
    formula = "y = a + b * log(X)"

    def value(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        a, b = theta
        return a + b * np.log(check_amounts(x))

    def jacobian(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        return np.stack([np.ones_like(x, dtype=float), np.log(x)], axis=-1)

    def slope(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        a, b = theta
        return b / check_amounts(x)

    def shape(self, theta: np.ndarray) -> tuple[int, int]:
        b = float(np.sign(theta[1]))
        return int(b), int(-b)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([-np.inf, -np.inf]), np.array([np.inf, np.inf])

    def starts(self, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        return [np.array(_line(np.log(x), y))]


class Loss(Law):
    """Loss law (lower is better): L = E + A * X ** (-alpha), with E >= 0 (a loss is not negative), A >= 0 and
    0 <= alpha: L falls towards the irreducible loss E."""

    name = "loss"
    params = ("E", "A", "alpha")
    direction = -1
    exponent = "alpha"
    formula = "L = E + A * X ** (-alpha)"

    def value(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        e, a, alpha = theta
        return e + a * check_amounts(x) ** (-alpha)

    def jacobian(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        e, a, alpha = theta
        power = x ** (-alpha)
        return np.stack([np.ones_like(power), power, -a * power * np.log(x)], axis=-1)

    def slope(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        e, a, alpha = theta
        return -a * alpha * check_amounts(x) ** (-alpha - 1)

    def shape(self, theta: np.ndarray) -> tuple[int, int]:
        e, a, alpha = theta
        return (-1, 1) if a > 0 and alpha > 0 else (0, 0)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([0.0, 0.0, 0.0]), np.array([np.inf, np.inf, MAX_EXPONENT])

    def starts(self, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        bottom, spread = float(np.min(y)), float(np.ptp(y)) or 1.0
        floors = [max(bottom - m * spread, 0.0) for m in _ASYMPTOTE_MARGINS] + [0.0]
        return [self.clip(np.array([e, a, alpha]))
                for e, (a, alpha) in zip(floors, _power_starts(x, [y - e for e in floors]))]


LAWS: dict[str, type[Law]] = {law.name: law for law in (XLlama, Power, PowerOffset, LogLinear, Loss)}
# The candidates of `--law auto`, by the metric's direction (the laws; power_offset only when asked for).
AUTO = {True: ("xllama", "power", "loglinear"), False: ("loss", "loglinear")}


def make_law(name: str, **fixed: float) -> Law:
    """The law called `name`, with its fixed constants (xllama's gamma)."""
    if name not in LAWS:
        raise ScalingError(f"unknown law {name!r}; expected one of {sorted(LAWS)}")
    return LAWS[name](**fixed)


def utility_is_concave(law: Law, theta: np.ndarray, higher_is_better: bool) -> bool:
    """Whether the utility (y for a score, -y for a loss) is concave and never falls as X grows: then equal
    marginal gains give the exact optimum of an allocation."""
    slope, curvature = law.shape(theta)
    sign = 1 if higher_is_better else -1
    return sign * slope >= 0 and sign * curvature <= 0
