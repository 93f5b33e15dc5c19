"""Sweep files: the grid of points, their names, the overrides each point trains with, bad sweep files, and the
MuIT points that check an allocation."""

import json

import pytest

from pivot_jax.errors import ConfigError
from pivot_jax.jsonl import DataError
from pivot_jax.sweep.spec import load_sweep, point_name, train_config_of
from pivot_jax.sweep.state import SweepState

BODY = """
from pivot_jax.sweep.spec import sweep_config

def get_config(arg=None):
    s = sweep_config()
    s.name = "coit"
    s.train_config = "configs/quickstart.py:langs={language}"
    s.axes = [("language", ["es", "zh"]), ("amount", [0, 300]), ("seed", [0]), ("optimizer.lr", [0.001])]
    s.eval_config = "configs/eval/cldr.py:tgt={language},limit=8"
%s
    return s
"""


def sweep_file(tmp_path, extra=""):
    path = tmp_path / "sweep.py"
    path.write_text(BODY % extra)
    return str(path)


def test_grid_names_and_overrides(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path))
    assert [p.name for p in sweep.points] == ["coit-es-pairs0-seed0-lr0.001", "coit-es-pairs300-seed0-lr0.001",
                                              "coit-zh-pairs0-seed0-lr0.001", "coit-zh-pairs300-seed0-lr0.001"]
    trained = sweep.points[1]
    assert train_config_of(sweep, trained) == "configs/quickstart.py:langs=es"
    assert trained.overrides["data.langs"] == "es" and trained.overrides["data.translation_amount"] == "300"
    assert trained.overrides["optimizer.lr"] == "0.001" and trained.overrides["train.epochs"] == "3.0"
    assert trained.overrides["eval.tags"] == "language=es,amount=300,seed=0,optimizer.lr=0.001"
    assert trained.overrides["eval.generate_config"] == "configs/eval/cldr.py:tgt=es,limit=8"
    assert trained.overrides["eval.at_end"] == "true"
    baseline = sweep.points[0]  # amount 0, nothing else to train on: the starting weights are evaluated
    assert (baseline.overrides["train.steps"], baseline.overrides["train.epochs"]) == ("0", "0")
    assert sweep.axes == ["language", "amount", "seed", "optimizer.lr"]


def test_fixed_steps_and_a_baseline_that_trains_on_the_other_data(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path, '    s.compute, s.steps, s.zero_amount_trains = "steps", 50, True'))
    assert {(p.overrides["train.steps"], p.overrides["train.epochs"]) for p in sweep.points} == {("50", "0")}


def test_explicit_points_replace_the_grid(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path, '    s.points = [{"language": "es", "amount": 10}]'))
    assert [p.name for p in sweep.points] == ["coit-es-pairs10"]


@pytest.mark.parametrize("extra, message", [
    ('    s.compute = "flops"', "compute must be one of"),
    ('    s.compute, s.steps = "steps", 0', "needs steps > 0"),
    ('    s.axes = [("language", ["es"]), ("seed", [0, 0])]', "share the names"),
    ('    s.axes = [("seed", "01")]', "must be \\(name, \\[values...\\]\\)"),
    ('    s.eval_config = "cldr.py:tgt={lang}"', "names {lang}, which is not an axis"),
    ('    s.train_config = ""', "train_config is empty"),
])
def test_bad_sweep_files_are_named(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep(sweep_file(tmp_path, extra))


def test_a_training_config_is_not_a_sweep_file():
    with pytest.raises(ConfigError, match="not a sweep file"):
        load_sweep("configs/tiny.py")


def test_point_names_are_path_safe():
    assert point_name("s", {"language": "zh", "data.tfds_dir": "gs://b/x"}) == "s-zh-tfds_dirgs_b_x"


def _allocation(tmp_path, amounts, uniform):
    path = tmp_path / "allocation.json"
    path.write_text(json.dumps({"budget": 300, "amounts": amounts, "uniform_amounts": uniform, "metric": "chrf++"}))
    return str(path)


def test_an_allocation_check_trains_muit_on_both_splits_and_scores_every_language(tmp_path):
    allocation = _allocation(tmp_path, {"es": 300, "zh": 0}, {"es": 150, "zh": 150})
    sweep = load_sweep(sweep_file(tmp_path), allocation)
    assert sweep.allocation == allocation
    assert [p.name for p in sweep.points] == ["coit-check-allocated-seed0", "coit-check-uniform-seed0"]
    allocated, uniform = (p.overrides for p in sweep.points)
    assert allocated["data.method"] == "muit" and allocated["eval.tags"] == "split=allocated,seed=0"
    # a language given no pairs is left out of the mixture and still scored
    assert (allocated["data.langs"], allocated["data.translation_amount"]) == ("es", "es:300")
    assert (uniform["data.langs"], uniform["data.translation_amount"]) == ("es,zh", "es:150,zh:150")
    assert allocated["eval.generate_config"] == ("configs/eval/cldr.py:tgt=es,limit=8;"
                                                 "configs/eval/cldr.py:tgt=zh,limit=8")
    assert allocated["train.epochs"] == "3.0" and allocated["optimizer.lr"] == "0.001"


@pytest.mark.parametrize("amounts, uniform, message", [
    ({"es": 300}, None, "field 'uniform_amounts' should map languages to pair counts"),
    ({"es": -1}, {"es": 150}, "field 'amounts' should map"),
    ({"es": 300}, {"zh": 300}, "name different languages"),
])
def test_a_bad_allocation_file_is_named(tmp_path, amounts, uniform, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep(sweep_file(tmp_path), _allocation(tmp_path, amounts, uniform))


def test_a_check_and_its_sweep_never_share_a_directory(tmp_path):
    state = SweepState.load(tmp_path, "sweep.py")
    state.save()
    with pytest.raises(DataError, match="holds a sweep, not the check of a.json; give it its own --workdir"):
        SweepState.load(tmp_path, "sweep.py", "a.json")
    SweepState(tmp_path / "sweep.json", "sweep.py", {}, "a.json").save()
    assert SweepState.load(tmp_path, "sweep.py", "a.json").allocation == "a.json"


def test_an_allocation_check_needs_one_value_of_the_other_axes(tmp_path):
    extra = '    s.axes = [("language", ["es"]), ("amount", [10]), ("optimizer.lr", [0.1, 0.01])]'
    with pytest.raises(ConfigError, match="axis 'optimizer.lr' has 2 values; an allocation check trains at one"):
        load_sweep(sweep_file(tmp_path, extra), _allocation(tmp_path, {"es": 300}, {"es": 300}))
