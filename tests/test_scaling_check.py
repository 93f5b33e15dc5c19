"""`scaling check`: an allocation's predictions beside what its MuIT runs measured (means over seeds, the measured
gain defined as the predicted one), the command's table and files, and results that cannot answer."""

import csv
import json

import pytest

from pivot_jax.scaling import ScalingError
from pivot_jax.scaling.__main__ import main
from pivot_jax.scaling.check import check_allocation

PNG = b"\x89PNG\r\n\x1a\n"


def _allocation(tmp_path, higher=True):
    record = {"budget": 400, "metric": "chrf++", "amounts": {"es": 300, "zh": 100},
              "uniform_amounts": {"es": 200, "zh": 200}, "predicted": {"es": 30.0, "zh": 10.0},
              "uniform_predicted": {"es": 27.0, "zh": 12.0}, "gain": 1.0, "gain_ci": [-0.5, 2.5],
              "weights": {"es": 1.0, "zh": 2.0}, "higher_is_better": higher}
    path = tmp_path / "allocation.json"
    path.write_text(json.dumps(record))
    return path


def _results(tmp_path, rows):
    """What `sweep collect` writes for a check sweep: the split column, language and amount per metric row."""
    path = tmp_path / "results.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["point", "language", "amount", "seed", "split", "metric", "value"])
        writer.writeheader()
        for split, lang, seed, value in rows:
            writer.writerow({"point": f"s-check-{split}-seed{seed}", "language": lang, "amount": 1, "seed": seed,
                             "split": split, "metric": "chrf++", "value": value})
        writer.writerow({"point": "s-check-allocated-seed0", "language": "", "amount": "", "seed": 0,
                         "split": "allocated", "metric": "eval_loss", "value": 2.5})  # the mixture's loss
    return path


ROWS = [("allocated", "es", 0, 31.0), ("allocated", "es", 1, 33.0), ("allocated", "zh", 0, 9.0),
        ("allocated", "zh", 1, 9.0), ("uniform", "es", 0, 28.0), ("uniform", "zh", 0, 11.5)]


def test_measured_means_over_seeds_and_the_measured_gain(tmp_path):
    check = check_allocation(_allocation(tmp_path), _results(tmp_path, ROWS))
    allocated, uniform = check.splits["allocated"], check.splits["uniform"]
    assert allocated.measured == {"es": 32.0, "zh": 9.0} and allocated.runs == {"es": 2, "zh": 2}
    assert uniform.measured == {"es": 28.0, "zh": 11.5} and uniform.amounts == {"es": 200, "zh": 200}
    assert allocated.predicted == {"es": 30.0, "zh": 10.0}
    # weights es 1, zh 2: (32 + 18) - (28 + 23) = -1
    assert check.measured_gain == pytest.approx(-1.0) and check.predicted_gain == 1.0


def test_a_lower_is_better_metric_gains_by_falling(tmp_path):
    check = check_allocation(_allocation(tmp_path, higher=False), _results(tmp_path, ROWS))
    assert check.measured_gain == pytest.approx(1.0)


def test_the_command_prints_both_splits_and_writes_json_and_png(tmp_path, capsys):
    out = tmp_path / "check"
    main(["check", str(_allocation(tmp_path)), str(_results(tmp_path, ROWS)), "--output", str(out)])
    text = capsys.readouterr().out
    assert "language  split      pairs  predicted  measured  measured - predicted  runs" in text
    assert "es        allocated  300    30         32        +2                    2" in text
    assert "gain of the allocation over the uniform split: predicted +1 [-0.5, 2.5], measured -1" in text
    record = json.loads((out / "check.json").read_text())
    assert record["splits"]["uniform"]["measured"] == {"es": 28.0, "zh": 11.5} and record["measured_gain"] == -1.0
    assert (out / "check.png").read_bytes().startswith(PNG)


def test_results_without_a_split_or_language_are_named(tmp_path):
    rows = [r for r in ROWS if r[:2] != ("uniform", "zh")]
    with pytest.raises(ScalingError, match="results.csv: no 'chrf\\+\\+' measured for uniform/zh"):
        check_allocation(_allocation(tmp_path), _results(tmp_path, rows))


def test_a_file_that_is_not_an_allocation_is_named(tmp_path):
    path = tmp_path / "fits.json"
    path.write_text(json.dumps({"groups": {}}))
    with pytest.raises(ScalingError, match="fits.json: no field 'metric'"):
        check_allocation(path, _results(tmp_path, ROWS))
