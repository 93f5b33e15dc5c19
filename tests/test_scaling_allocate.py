"""Allocation: the amounts equal brute force over every whole-pair split (concave laws by equal marginal gains,
the others by SLSQP), the uniform baseline and the gain with its bootstrap interval, the bad inputs, and the MuIT
override the amounts become."""

import importlib.util
import itertools

import numpy as np
import pytest

from pivot_jax.data.mixtures import parse_amounts
from pivot_jax.scaling import ScalingError
from pivot_jax.scaling.allocate import allocate, muit_config, muit_override
from pivot_jax.scaling.fit import Fit
from pivot_jax.scaling.laws import make_law


def _fit(law: str, params: list[float], higher: bool = True, samples: np.ndarray | None = None, **fixed) -> Fit:
    obj = make_law(law, **fixed)
    return Fit(law=law, params=obj.as_dict(np.array(params)), ci={}, r2=1.0, loo_error=0.0, extrapolation_error=0.0,
               n=10, x_range=[10.0, 1e5], fixed=obj.fixed, higher_is_better=higher,
               samples={} if samples is None else {p: samples[:, i].tolist() for i, p in enumerate(obj.params)})


def brute_force(fits, budget, weights=None, available=None, minimums=None):
    """The best whole-pair split by enumeration: every language at least max(minimum, 1), at most available."""
    langs = sorted(fits)
    sign = 1 if fits[langs[0]].higher_is_better else -1
    grids, utilities = [], []
    for lang in langs:
        lo = max((minimums or {}).get(lang, 0), 1)
        hi = min((available or {}).get(lang, budget), budget)
        grid = np.arange(lo, hi + 1)
        grids.append(grid)
        utilities.append(sign * (weights or {}).get(lang, 1.0) * fits[lang].predict(grid))
    total = sum(np.ix_(*utilities))  # broadcast: one axis per language
    spent = sum(np.ix_(*grids))
    total = np.where(spent <= budget, total, -np.inf)
    best = np.unravel_index(np.argmax(total), total.shape)
    return {lang: int(grids[i][best[i]]) for i, lang in enumerate(langs)}, float(total[best])


def objective(fits, amounts, weights=None):
    sign = 1 if next(iter(fits.values())).higher_is_better else -1
    return sum(sign * (weights or {}).get(g, 1.0) * fits[g].predict(np.array([a]))[0] for g, a in amounts.items())


CASES = {
    "two xllama, weighted": (
        {"es": _fit("xllama", [300.0, -0.3]), "zh": _fit("xllama", [500.0, -0.4], gamma=0.5)}, 200,
        {"zh": 2.0}, None, None),
    "three laws, a cap and a minimum": (
        {"es": _fit("xllama", [300.0, -0.3]), "hi": _fit("power", [60.0, 200.0, 0.5]),
         "zh": _fit("loglinear", [5.0, 4.0])}, 150, None, {"zh": 40}, {"hi": 30}),
    "a loss, lower is better": (
        {"es": _fit("loss", [1.5, 8.0, 0.4], False), "zh": _fit("loss", [2.0, 20.0, 0.6], False)}, 120,
        {"es": 1.5}, None, None),
    "a falling law (not concave): SLSQP": (
        {"es": _fit("loglinear", [50.0, -2.0]), "zh": _fit("power", [60.0, 200.0, 0.5]),
         "hi": _fit("xllama", [300.0, -0.3])}, 90, None, None, None),
    "a budget the caps exhaust": (
        {"es": _fit("xllama", [300.0, -0.3]), "zh": _fit("power", [60.0, 200.0, 0.5])}, 100, None,
        {"es": 20, "zh": 30}, None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_allocation_equals_brute_force(case):
    fits, budget, weights, available, minimums = CASES[case]
    result = allocate(fits, budget, weights, available, minimums)
    best, best_value = brute_force(fits, budget, weights, available, minimums)
    assert objective(fits, result.amounts, weights) == pytest.approx(best_value, rel=1e-12, abs=1e-9)
    assert result.amounts == best, (result.method, result.amounts, best)
    assert sum(result.amounts.values()) <= budget
    if "SLSQP" in case:
        assert result.method.startswith("SLSQP") and result.amounts["es"] == 1  # falling: as little as allowed
    elif "exhaust" in case:
        assert result.amounts == {"es": 20, "zh": 30} and result.method.startswith("everything available")
    else:
        assert result.method.startswith("equal marginal gains")


def _random_fit(rng: np.random.Generator) -> Fit:
    kind = rng.choice(["xllama", "power", "power_offset", "loglinear"])
    if kind == "xllama":
        return _fit("xllama", [rng.uniform(50, 500), -rng.uniform(0.05, 1)], gamma=rng.uniform(0.3, 1))
    if kind == "loglinear":
        return _fit("loglinear", [rng.uniform(0, 20), rng.uniform(-3, 6)])  # falling a third of the time
    power = [rng.uniform(30, 90), rng.uniform(10, 500), rng.uniform(0.05, 1.5)]
    return _fit(kind, power + ([rng.uniform(0, 50)] if kind == "power_offset" else []))


@pytest.mark.parametrize("trial", range(20))
def test_random_problems_equal_brute_force(trial):
    rng = np.random.default_rng(trial)
    langs = ["es", "hi", "zh"][:rng.integers(2, 4)]
    fits = {lang: _random_fit(rng) for lang in langs}
    budget = int(rng.integers(len(langs), 120 if len(langs) == 3 else 400))
    weights = {lang: float(rng.uniform(0.2, 3)) for lang in langs if rng.random() < 0.5}
    available = {lang: int(rng.integers(1, budget + 1)) for lang in langs if rng.random() < 0.3}
    minimums = {lang: int(rng.integers(0, max(1, min(available.get(lang, budget), budget // len(langs)))))
                for lang in langs if rng.random() < 0.3}
    result = allocate(fits, budget, weights, available, minimums)
    _, best_value = brute_force(fits, budget, weights, available, minimums)
    assert objective(fits, result.amounts, weights) == pytest.approx(best_value, rel=1e-12, abs=1e-9), result.method


def test_large_budgets_stand_single_pair_moves():
    fits = {"es": _fit("xllama", [300.0, -0.3]), "hi": _fit("power", [60.0, 200.0, 0.5]),
            "zh": _fit("xllama", [500.0, -0.25], gamma=0.5)}
    weights = {"zh": 2.0}
    result = allocate(fits, 1_000_000, weights)
    assert sum(result.amounts.values()) == 1_000_000
    base = objective(fits, result.amounts, weights)
    for up, down in itertools.permutations(fits, 2):
        moved = {**result.amounts, up: result.amounts[up] + 1, down: result.amounts[down] - 1}
        assert objective(fits, moved, weights) <= base + 1e-12 * abs(base)


def test_the_uniform_split_and_the_gain_with_its_interval():
    rng = np.random.default_rng(0)
    es, zh = np.array([300.0, -0.3]), np.array([500.0, -0.4])
    fits = {"es": _fit("xllama", list(es), samples=es * (1 + rng.normal(0, 0.02, (300, 2)))),
            "zh": _fit("xllama", list(zh), samples=zh * (1 + rng.normal(0, 0.02, (300, 2))))}
    capped = allocate(fits, 10_001, available={"es": 3_000})
    assert capped.uniform_amounts == {"es": 3_000, "zh": 7_001}  # equal, as far as es's pairs allow
    assert allocate(fits, 10_001).uniform_amounts == {"es": 5_001, "zh": 5_000}  # the odd pair to the first
    result = allocate(fits, 10_000, {"zh": 3.0})
    assert result.uniform_predicted["es"] == pytest.approx(fits["es"].predict(np.array([5000.0]))[0])
    expected = objective(fits, result.amounts, {"zh": 3.0}) - objective(fits, result.uniform_amounts, {"zh": 3.0})
    assert result.gain == pytest.approx(expected) and result.gain > 0
    low, high = result.gain_ci
    assert low <= result.gain <= high and low < high
    record = result.to_json()
    assert list(record)[:6] == ["budget", "amounts", "predicted", "uniform_predicted", "gain", "gain_ci"]
    assert record["available"] == {"es": None, "zh": None} and record["weights"] == {"es": 1.0, "zh": 3.0}
    assert allocate({"es": _fit("xllama", list(es))}, 100).gain_ci is None  # no bootstrap samples


def test_bad_inputs_are_named():
    fits = {"es": _fit("xllama", [300.0, -0.3]), "zh": _fit("power", [60.0, 200.0, 0.5])}
    with pytest.raises(ScalingError, match=r"budget 100 is below the sum of the minimums, 150 \(es: 100, zh: 50\)"):
        allocate(fits, 100, minimums={"es": 100, "zh": 50})
    with pytest.raises(ScalingError, match=r"budget 1 is below 2: every language needs at least one pair"):
        allocate(fits, 1)
    with pytest.raises(ScalingError, match=r"zh: available 10 is below its minimum 20"):
        allocate(fits, 100, available={"zh": 10}, minimums={"zh": 20})
    with pytest.raises(ScalingError, match=r"available of es: 0.0 should be a whole number >= 1"):
        allocate(fits, 100, available={"es": 0.0})
    with pytest.raises(ScalingError, match=r"--weights names hi, which the fits do not have \(groups: es, zh\)"):
        allocate(fits, 100, weights={"hi": 2.0})
    with pytest.raises(ScalingError, match=r"weight of zh: -1.0 should be > 0"):
        allocate(fits, 100, weights={"zh": -1.0})
    with pytest.raises(ScalingError, match=r"minimum of es: 2.5 should be a whole number >= 0"):
        allocate(fits, 100, minimums={"es": 2.5})
    with pytest.raises(ScalingError, match="budget -5 should be a whole number"):
        allocate(fits, -5)
    with pytest.raises(ScalingError, match="mix higher-is-better and lower-is-better"):
        allocate({**fits, "hi": _fit("loss", [1.5, 8.0, 0.4], False)}, 100)


def test_the_muit_override_trains_the_amounts(tmp_path):
    override = muit_override({"es": 1200, "zh": 800})
    assert override == "configs/muit.py:langs=es+zh,amounts=es:1200+zh:800"
    path = tmp_path / "muit_allocated.py"
    path.write_text(muit_config(override, 2000, "fits/fits.json", str(path)), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("muit_allocated", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("model=llama-7b")
    assert config.data.method == "muit" and config.data.langs == "es,zh"
    assert parse_amounts(config.data.translation_amount, config.data.langs.split(",")) == {"es": 1200, "zh": 800}
