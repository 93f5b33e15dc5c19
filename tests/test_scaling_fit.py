"""Robust fits: each law recovers known parameters inside its bootstrap interval from noisy points, model
selection picks the generating law, the out-of-sample errors are what they say, and a fits.json round-trips."""

import json

import numpy as np
import pytest

from pivot_jax.scaling import ScalingError
from pivot_jax.scaling.fit import (
    Candidate,
    Fit,
    LawFit,
    bootstrap,
    extrapolation_error,
    fit_group,
    fit_law,
    loo_error,
    read_fits,
    select_law,
    too_few,
)
from pivot_jax.scaling.laws import make_law
from pivot_jax.scaling.table import Points

AMOUNTS = np.repeat(np.geomspace(100, 100_000, 8), 3)  # 8 amounts x 3 seeds
# The offset shows only in the bend at amounts below it: its law is checked from 10 pairs on.
WIDE = np.repeat(np.geomspace(10, 100_000, 9), 3)
# law -> (fixed constants, true parameters, noise sd)
TRUTH = {
    "xllama": ({"gamma": 0.8}, [300.0, -0.3], 1.0),
    "power": ({}, [60.0, 200.0, 0.5], 0.5),
    "power_offset": ({}, [60.0, 200.0, 0.5, 300.0], 0.3),
    "loglinear": ({}, [5.0, 4.0], 1.0),
    "loss": ({}, [1.5, 8.0, 0.4], 0.01),
}


def noisy(name: str, seed: int = 0, amounts: np.ndarray = AMOUNTS, group: str = "es") -> Points:
    fixed, theta, noise = TRUTH[name]
    rng = np.random.default_rng(seed)
    y = make_law(name, **fixed).value(amounts, np.array(theta)) + rng.normal(0, noise, len(amounts))
    return Points(group, amounts, y, np.array([]))


@pytest.mark.parametrize("name", sorted(TRUTH))
def test_each_law_recovers_its_parameters_inside_the_bootstrap_interval(name):
    fixed, theta, _ = TRUTH[name]
    amounts = WIDE if name == "power_offset" else AMOUNTS
    fit = fit_group(noisy(name, amounts=amounts), [make_law(name, **fixed)], higher_is_better=name != "loss",
                    n_bootstrap=200)
    assert fit.law == name and list(fit.params) == list(make_law(name, **fixed).params)
    for param, truth in zip(fit.params, theta):
        low, high = fit.ci[param]
        assert low <= truth <= high, (param, truth, fit.ci[param], fit.params[param])
        assert low <= fit.params[param] <= high
    assert fit.r2 > 0.95 and fit.n == len(amounts) and fit.n_amounts == len(set(amounts)) and fit.fixed == fixed
    assert all(len(values) == 200 for values in fit.samples.values())
    assert fit.loo_error > 0 and fit.extrapolation_error > 0


@pytest.mark.parametrize("name, candidates", [
    ("power", ("xllama", "power", "loglinear")),  # saturating at 60: neither other law can
    ("xllama", ("xllama", "loglinear")),  # (power nests xllama at c = 100: not told apart by design)
    ("loglinear", ("xllama", "loglinear")),
    ("loss", ("loss", "loglinear")),
])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_model_selection_picks_the_generating_law(name, candidates, seed):
    fit = fit_group(noisy(name, seed), [make_law(c) for c in candidates], higher_is_better=name != "loss",
                    n_bootstrap=10)
    assert fit.law == name, fit.candidates
    assert set(fit.candidates) == set(candidates)
    assert fit.candidates[name]["extrapolation_error"] == fit.extrapolation_error


def test_selection_by_extrapolation_error_with_ties_by_loo():
    law = make_law("loglinear")
    dummy = LawFit(np.zeros(2), 1.0, 0.0)

    def c(extrapolation, loo):
        return Candidate(law, dummy, 0.9, loo, extrapolation)

    assert select_law({"a": c(1.0, 5.0), "b": c(2.0, 1.0)}) == "a"
    assert select_law({"a": c(1.0, 5.0), "b": c(1.01, 1.0)}) == "b"  # within 5%: a tie, the smaller LOO wins
    assert select_law({"a": c(1.0, 5.0), "b": c(1.01, 1.0)}, tolerance=0.0) == "a"


def test_too_few_points_name_the_group_and_counts():
    three = Points("zh", np.array([100.0, 1000.0, 10000.0]), np.array([30.0, 40.0, 50.0]), np.array([]))
    with pytest.raises(ScalingError, match=r"group 'zh': too few points to fit: 3 points over 3 amounts; law power "
                                           r"\(3 parameters\) needs at least 5 points over 4 amounts"):
        fit_group(three, [make_law("power")])
    four = noisy("loglinear", amounts=np.array([100.0, 1000.0, 10000.0, 100000.0]))
    fit = fit_group(four, [make_law("xllama"), make_law("power"), make_law("loglinear")], n_bootstrap=10)
    assert "skipped" in fit.candidates["power"] and "4 points over 4 amounts" in fit.candidates["power"]["skipped"]
    assert fit.law in ("xllama", "loglinear")
    # seeds add points, not amounts: two amounts cannot leave one out and still determine two parameters
    assert too_few(make_law("loglinear"), np.repeat([100.0, 1000.0], 5)) != ""
    assert too_few(make_law("loglinear"), np.repeat([100.0, 1000.0, 10000.0], 2)) == ""


def test_extrapolation_holds_out_every_seed_at_the_largest_amount():
    law, theta = make_law("loglinear"), np.array([5.0, 4.0])
    x = np.repeat([100.0, 1000.0, 10000.0, 100000.0], 2)
    y = law.value(x, theta)
    y[-2:] += [1.0, -3.0]  # both seeds of the largest amount are off the line the others are on
    assert extrapolation_error(law, x, y, 1.0) == pytest.approx(np.sqrt((1 + 9) / 2), rel=1e-6)
    exact = law.value(x, theta)
    assert loo_error(law, x, exact, 1.0, theta) == pytest.approx(0.0, abs=1e-6)


def test_huber_keeps_an_outlier_from_moving_the_fit():
    law, theta = make_law("loglinear"), np.array([5.0, 4.0])
    x = np.repeat(np.geomspace(100, 100_000, 8), 2)
    clean = law.value(x, theta) + np.random.default_rng(0).normal(0, 0.3, len(x))
    y = clean.copy()
    y[3] += 40.0
    without, robust = fit_law(law, x, clean).theta, fit_law(law, x, y).theta
    plain = np.polyfit(np.log(x), y, 1)[::-1]  # least squares
    moved = {name: np.abs(law.value(x, t) - law.value(x, without)).max() for name, t in (("huber", robust),
                                                                                         ("plain", plain))}
    assert moved["huber"] < 0.2 < 5.0 < moved["plain"], moved  # 0.2: under the noise (sd 0.3)


def test_bootstrap_is_seeded():
    points = noisy("xllama")
    law = make_law("xllama", gamma=0.8)
    fitted = fit_law(law, points.x, points.y)
    one = bootstrap(law, points.x, points.y, fitted.theta, fitted.f_scale, 20, seed=[0, 1])
    assert one.shape == (20, 2)
    np.testing.assert_array_equal(one, bootstrap(law, points.x, points.y, fitted.theta, fitted.f_scale, 20, [0, 1]))
    assert not np.array_equal(one, bootstrap(law, points.x, points.y, fitted.theta, fitted.f_scale, 20, [0, 2]))


def test_a_fit_round_trips_through_json(tmp_path):
    fit = fit_group(noisy("xllama"), [make_law("xllama", gamma=0.8)], n_bootstrap=20)
    record = json.loads(json.dumps({"groups": {"es": fit.to_json()}}, allow_nan=False))
    assert list(record["groups"]["es"])[:7] == ["law", "params", "ci", "r2", "loo_error", "extrapolation_error",
                                                "n"]
    path = tmp_path / "fits.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    fits, _ = read_fits(path)
    x = np.array([50.0, 5000.0, 1e6])
    np.testing.assert_array_equal(fits["es"].predict(x), fit.predict(x))
    np.testing.assert_array_equal(fits["es"].sample_thetas(), fit.sample_thetas())
    flat = Fit(law="loglinear", params={"a": 1.0, "b": 0.0}, ci={}, r2=float("nan"), loo_error=0.0,
               extrapolation_error=0.0, n=4)
    assert flat.to_json()["r2"] is None  # JSON has no NaN


def test_bad_fits_files_are_named(tmp_path):
    path = tmp_path / "fits.json"
    path.write_text(json.dumps({"fits": {}}), encoding="utf-8")
    with pytest.raises(ScalingError, match=r"fits.json: expected \{\"groups\""):
        read_fits(path)
    path.write_text(json.dumps({"groups": {"es": {"law": "cubic", "params": {}, "n": 3}}}), encoding="utf-8")
    with pytest.raises(ScalingError, match="unknown law 'cubic'"):
        read_fits(path)
    path.write_text(json.dumps({"groups": {"es": {"law": "power", "params": {"c": 1}, "n": 3}}}), encoding="utf-8")
    with pytest.raises(ScalingError, match=r"fits.json: groups.es: law 'power' needs parameters"):
        read_fits(path)
    path.write_text(json.dumps({"groups": {"es": {"params": {}}}}), encoding="utf-8")
    with pytest.raises(ScalingError, match=r"groups.es: missing law, n"):
        read_fits(path)
    path.write_text(json.dumps({"groups": {"es": {"law": "loglinear", "params": {"a": 1, "b": 2}, "n": 3}}}),
                    encoding="utf-8")
    assert read_fits(path)[0]["es"].predict(np.array([1.0])) == pytest.approx(1.0)
    with pytest.raises(ScalingError, match=r"no joint fit \(run `fit --joint`\)"):
        read_fits(path, use_joint=True)
