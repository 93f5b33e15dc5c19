"""The joint fit: one exponent shared by every group (per-group scale) recovered inside its bootstrap interval, and
compared with the separate fits, which win when the groups' exponents differ."""

import json

import numpy as np
import pytest

from pivot_jax.scaling import ScalingError
from pivot_jax.scaling.joint import fit_joint
from pivot_jax.scaling.laws import make_law
from pivot_jax.scaling.table import Points

AMOUNTS = np.repeat(np.geomspace(100, 100_000, 8), 3)


def _groups(law_name: str, truths: dict, noise: float, fixed: dict | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    points, laws = {}, {}
    for group, theta in truths.items():
        laws[group] = make_law(law_name, **(fixed or {}).get(group, {}))
        y = laws[group].value(AMOUNTS, np.array(theta)) + rng.normal(0, noise, len(AMOUNTS))
        points[group] = Points(group, AMOUNTS, y, np.array([]))
    return points, laws


def test_a_shared_exponent_is_recovered_with_each_groups_scale():
    truths = {"es": [300.0, -0.3], "zh": [500.0, -0.3], "hi": [400.0, -0.3]}
    gammas = {"zh": {"gamma": 0.5}, "hi": {"gamma": 0.8}}
    points, laws = _groups("xllama", truths, 1.0, gammas)
    joint = fit_joint(points, laws, n_bootstrap=100)
    low, high = joint.shared_ci["beta"]
    assert joint.law == "xllama" and low <= -0.3 <= high and low <= joint.shared["beta"] <= high
    for group, (alpha, _) in truths.items():
        fit = joint.groups[group]
        assert fit.params["beta"] == joint.shared["beta"] and fit.fixed == gammas.get(group, {"gamma": 1.0})
        assert fit.ci["alpha"][0] <= alpha <= fit.ci["alpha"][1]
        assert len(fit.samples["alpha"]) == 100 and fit.r2 > 0.99
    record = json.loads(json.dumps(joint.to_json(), allow_nan=False))
    assert set(record) == {"law", "shared", "shared_ci", "groups", "comparison", "mean", "preferred"}
    assert set(record["comparison"]["es"]) == {"joint", "separate"}
    assert set(record["comparison"]["es"]["separate"]) == {"loo_error", "extrapolation_error"}
    assert record["preferred"] in ("joint", "separate")
    assert list(record["groups"]["es"])[:7] == ["law", "params", "ci", "r2", "loo_error", "extrapolation_error", "n"]


def test_separate_fits_win_when_the_exponents_differ():
    truths = {"es": [60.0, 200.0, 0.3], "hi": [60.0, 200.0, 0.9]}
    points, laws = _groups("power", truths, 0.3)
    joint = fit_joint(points, laws, n_bootstrap=10)
    mean = joint.mean_errors()
    assert mean["separate"]["extrapolation_error"] < mean["joint"]["extrapolation_error"]
    assert joint.preferred == "separate"


def test_what_a_joint_fit_refuses():
    points, laws = _groups("loglinear", {"es": [5.0, 4.0], "zh": [3.0, 4.0]}, 1.0)
    with pytest.raises(ScalingError, match="law 'loglinear' has no exponent to share"):
        fit_joint(points, laws)
    points, laws = _groups("xllama", {"es": [300.0, -0.3]}, 1.0)
    with pytest.raises(ScalingError, match=r"a joint fit needs at least two groups; got \['es'\]"):
        fit_joint(points, laws)
    points, laws = _groups("xllama", {"es": [300.0, -0.3], "zh": [300.0, -0.3]}, 1.0)
    points["zh"] = Points("zh", AMOUNTS[:3], points["zh"].y[:3], np.array([]))
    with pytest.raises(ScalingError, match=r"joint fit: group 'zh': 3 points over 1 amounts"):
        fit_joint(points, laws)
