"""The library calls behind `scaling fit | allocate` and the notebook: a results file to fits, fits to an
allocation, with their files, and the direction of a metric."""

import json

import pytest
from test_scaling_cli import _rows, _write

from pivot_jax.scaling import ScalingError
from pivot_jax.scaling.study import allocate_from_fits, fit_results, higher_is_better, write_allocation, write_fits


def test_fit_then_allocate_with_their_files(tmp_path):
    results = _write(tmp_path / "results.csv", _rows())
    study = fit_results(results, "chrf", n_bootstrap=40)
    assert study.higher_is_better and set(study.fits) == {"es", "zh"} and study.fits["es"].n == 12
    assert list(study.points["es"].baseline) and min(study.points["es"].x) > 0  # amount 0 kept apart
    fits_json, fits_png = write_fits(study, tmp_path / "fits")
    assert json.loads(fits_json.read_text())["groups"]["zh"]["law"] == study.fits["zh"].law
    assert fits_png.read_bytes()[:4] == b"\x89PNG"
    result, record = allocate_from_fits(fits_json, 20000)
    assert sum(result.amounts.values()) == 20000 and record["metric"] == "chrf"
    paths = write_allocation(result, record, tmp_path / "allocation")
    assert paths["muit_override.txt"].read_text().startswith("configs/muit.py:langs=es+zh,amounts=es:")
    assert json.loads(paths["allocation.json"].read_text())["amounts"] == result.amounts


def test_direction_of_a_metric():
    assert higher_is_better("chrf++") and not higher_is_better("eval_loss") and not higher_is_better("x", "loss")
    assert not higher_is_better("chrf++", lower_is_better=True)
    with pytest.raises(ScalingError, match="contradicts --lower_is_better"):
        higher_is_better("eval_loss", "loss", lower_is_better=False)
