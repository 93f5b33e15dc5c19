"""The scaling laws: each formula as its docstring and `formula` say, derivatives that match finite differences,
starting points inside the bounds, and amounts <= 0 refused where a law takes a log or a power."""

import numpy as np
import pytest

from pivot_jax.scaling import ScalingError
from pivot_jax.scaling.laws import LAWS, check_amounts, make_law, utility_is_concave

# A law, its fixed constants and parameters in a realistic range.
CASES = {
    "xllama": ({"gamma": 0.7}, [300.0, -0.3]),
    "power": ({}, [60.0, 200.0, 0.5]),
    "power_offset": ({}, [60.0, 200.0, 0.5, 50.0]),
    "loglinear": ({}, [5.0, 4.0]),
    "loss": ({}, [1.5, 8.0, 0.4]),
}
X = np.geomspace(10, 1e6, 25)


def test_every_law_has_a_case():
    assert set(CASES) == set(LAWS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_formula_string_is_the_function(name):
    fixed, theta = CASES[name]
    law = make_law(name, **fixed)
    expression = law.formula.split("=", 1)[1]
    scope = {"X": X, "log": np.log, **fixed, **law.as_dict(np.array(theta))}
    np.testing.assert_allclose(eval(expression, scope), law.value(X, np.array(theta)), rtol=1e-12)
    assert law.formula in " ".join(type(law).__doc__.split())  # defined once: the docstring says the same


@pytest.mark.parametrize("name", sorted(CASES))
def test_derivatives_match_finite_differences(name):
    fixed, theta = CASES[name]
    law, theta = make_law(name, **fixed), np.array(theta)
    jac = law.jacobian(X, theta)
    assert jac.shape == (len(X), law.n_params)
    for i in range(law.n_params):
        step = 1e-6 * max(1.0, abs(theta[i]))
        up, down = theta.copy(), theta.copy()
        up[i] += step
        down[i] -= step
        np.testing.assert_allclose(jac[:, i], (law.value(X, up) - law.value(X, down)) / (2 * step), rtol=1e-5,
                                   atol=1e-8)
    h = X * 1e-6
    np.testing.assert_allclose(law.slope(X, theta), (law.value(X + h, theta) - law.value(X - h, theta)) / (2 * h),
                               rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_shape_is_the_sign_of_the_derivatives(name):
    fixed, theta = CASES[name]
    law, theta = make_law(name, **fixed), np.array(theta)
    slope, curvature = law.shape(theta)
    first = law.slope(X, theta)
    second = np.diff(first)
    assert np.all(np.sign(first) == slope) and np.all(np.sign(second) == curvature)
    assert LAWS[name].direction in (0, slope)


@pytest.mark.parametrize("name", sorted(CASES))
def test_starts_are_inside_the_bounds(name):
    fixed, theta = CASES[name]
    law = make_law(name, **fixed)
    rng = np.random.default_rng(0)
    y = law.value(X, np.array(theta)) + rng.normal(0, 0.5, len(X))
    lower, upper = law.bounds()
    starts = law.starts(X, y)
    assert starts and all(np.all(np.isfinite(s)) and np.all((s > lower) & (s < upper)) for s in starts)
    assert np.all((np.array(theta) >= lower) & (np.array(theta) <= upper))


def test_parameters_by_name():
    law = make_law("power")
    assert law.as_dict(np.array([1.0, 2.0, 3.0])) == {"c": 1.0, "a": 2.0, "b": 3.0}
    np.testing.assert_array_equal(law.from_dict({"b": 3, "a": 2, "c": 1}), [1.0, 2.0, 3.0])
    with pytest.raises(ScalingError, match=r"fits.json: law 'power' needs parameters \['c', 'a', 'b'\]; missing"):
        law.from_dict({"c": 1, "a": 2}, "fits.json")


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("bad", [0.0, -5.0, float("nan"), float("inf")])
def test_amounts_at_or_below_zero_are_refused_by_every_law(name, bad):
    fixed, theta = CASES[name]
    law = make_law(name, **fixed)
    with pytest.raises(ScalingError, match=rf"amount {bad!r}: a scaling law needs amounts > 0"):
        law.value(np.array([100.0, bad]), np.array(theta))
    with pytest.raises(ScalingError, match="needs amounts > 0"):
        law.slope(np.array([bad]), np.array(theta))


def test_check_amounts_names_the_value():
    np.testing.assert_array_equal(check_amounts([1, 2]), [1.0, 2.0])
    with pytest.raises(ScalingError, match=r"--available -3.0: a scaling law needs amounts > 0"):
        check_amounts([-3], "--available")


def test_law_names_and_fixed_constants():
    with pytest.raises(ScalingError, match=r"unknown law 'cubic'; expected one of \["):
        make_law("cubic")
    with pytest.raises(ScalingError, match="gamma 0.0 should be a number > 0"):
        make_law("xllama", gamma=0.0)
    with pytest.raises(ScalingError, match="law 'power' has no fixed constants"):
        make_law("power", gamma=0.5)
    assert make_law("xllama").fixed == {"gamma": 1.0}


def test_gamma_scales_the_amount():
    theta = np.array([300.0, -0.3])
    np.testing.assert_allclose(make_law("xllama", gamma=0.5).value(X, theta), make_law("xllama").value(X / 2, theta))


def test_which_utilities_are_concave():
    assert utility_is_concave(make_law("xllama"), np.array([300.0, -0.3]), True)
    assert utility_is_concave(make_law("loss"), np.array([1.5, 8.0, 0.4]), False)  # -L rises, concave
    assert utility_is_concave(make_law("loglinear"), np.array([5.0, 4.0]), True)
    assert not utility_is_concave(make_law("loglinear"), np.array([5.0, -4.0]), True)  # falls: convex
    assert utility_is_concave(make_law("loglinear"), np.array([5.0, -4.0]), False)  # a loss that falls
    assert utility_is_concave(make_law("power"), np.array([60.0, 0.0, 0.5]), True)  # flat
