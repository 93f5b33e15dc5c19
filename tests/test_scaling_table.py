"""Results files as points: CSV and JSON lines alike, the metric selected, groups, the amount-0 baseline apart,
and every bad input an error naming the file, line, column or value."""

import csv
import json

import numpy as np
import pytest

from pivot_jax.jsonl import DataError
from pivot_jax.scaling import ScalingError
from pivot_jax.scaling.table import ALL, read_points, read_rows

COLUMNS = ["point", "language", "amount", "seed", "lr", "metric", "value", "samples", "steps", "tokens", "flops",
           "wall_s"]


def _rows():
    rows, point = [], 0
    for lang, base in (("es", 40.0), ("zh", 20.0)):
        for amount in (0, 100, 1000, 10000):
            for seed in (0, 1):
                point += 1
                for metric, scale in (("chrf", 1.0), ("bleu", 0.5)):
                    rows.append({"point": point, "language": lang, "amount": amount, "seed": seed, "lr": 2e-5,
                                 "metric": metric, "value": scale * (base + np.log1p(amount) + seed),
                                 "samples": 1012, "steps": 10, "tokens": 1000, "flops": 1e12, "wall_s": 1.5})
    return rows


def write_csv(path, rows, columns=COLUMNS):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_csv_and_jsonl_give_the_same_points(tmp_path):
    from_csv = read_points(write_csv(tmp_path / "results.csv", _rows()), "chrf")
    from_jsonl = read_points(write_jsonl(tmp_path / "results.jsonl", _rows()), "chrf")
    assert list(from_csv) == list(from_jsonl) == ["es", "zh"]
    for group in from_csv:
        for name in ("x", "y", "baseline"):
            np.testing.assert_allclose(getattr(from_csv[group], name), getattr(from_jsonl[group], name))
    es = from_csv["es"]
    np.testing.assert_array_equal(es.x, [100, 100, 1000, 1000, 10000, 10000])  # seeds are separate points
    np.testing.assert_allclose(es.y[:2], [40 + np.log1p(100), 41 + np.log1p(100)])
    np.testing.assert_allclose(es.baseline, [40.0, 41.0])  # amount 0: kept apart, never fitted
    assert es.n_amounts == 3


def test_other_columns_one_group_and_a_sweep_directory(tmp_path):
    rows = [{"pairs": r["amount"], "lang": r["language"], "metric": r["metric"], "value": r["value"]}
            for r in _rows()]
    path = write_csv(tmp_path / "mine.csv", rows, ["pairs", "lang", "metric", "value"])
    assert list(read_points(path, "bleu", x="pairs", group_by="lang")) == ["es", "zh"]
    single = read_points(path, "bleu", x="pairs", group_by="")
    assert list(single) == [ALL] and len(single[ALL].x) == 12
    write_jsonl(tmp_path / "results.jsonl", _rows())
    assert list(read_points(tmp_path, "chrf")) == ["es", "zh"]  # the collect directory itself


def test_a_missing_metric_lists_the_metrics_present(tmp_path):
    path = write_csv(tmp_path / "results.csv", _rows())
    with pytest.raises(ScalingError, match=rf"{path}: no rows with metric 'comet' \(metrics present: bleu, chrf\)"):
        read_points(path, "comet")


def test_a_missing_column_is_named_with_the_columns_present(tmp_path):
    path = write_csv(tmp_path / "results.csv", _rows())
    with pytest.raises(ScalingError, match=rf"{path}: no column 'pairs' \(columns: amount, flops, language"):
        read_points(path, "chrf", x="pairs")
    path = write_csv(tmp_path / "novalue.csv", _rows(), [c for c in COLUMNS if c != "value"])
    with pytest.raises(ScalingError, match="no column 'value'"):
        read_points(path, "chrf")


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_a_non_finite_value_names_the_line_and_column(tmp_path, bad):
    rows = _rows()
    rows[4]["value"] = bad
    path = write_csv(tmp_path / "results.csv", rows)
    with pytest.raises(ScalingError, match=rf"{path}: line 6: column 'value': '{bad}' is not a finite number"):
        read_points(path, "chrf")


def test_non_numbers_negative_amounts_and_empty_groups(tmp_path):
    rows = _rows()
    rows[2]["amount"] = "lots"
    with pytest.raises(ScalingError, match=r"line 4: column 'amount': 'lots' is not a number"):
        read_points(write_csv(tmp_path / "a.csv", rows), "chrf")
    rows = _rows()
    rows[2]["amount"] = -100
    with pytest.raises(ScalingError, match=r"line 4: column 'amount': -100.0 is negative"):
        read_points(write_csv(tmp_path / "b.csv", rows), "chrf")
    rows = _rows()
    rows[2]["language"] = ""
    with pytest.raises(ScalingError, match=r"line 4: column 'language' is empty"):
        read_points(write_csv(tmp_path / "c.csv", rows), "chrf")
    rows = _rows()
    rows[2]["value"] = None
    with pytest.raises(ScalingError, match=r"results.jsonl: line 3: column 'value': expected a number, got None"):
        read_points(write_jsonl(tmp_path / "results.jsonl", rows), "chrf")


def test_malformed_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such results file"):
        read_points(tmp_path / "missing.csv", "chrf")
    with pytest.raises(ScalingError, match="a directory without results.jsonl or results.csv"):
        read_points(tmp_path, "chrf")
    path = tmp_path / "x.jsonl"
    path.write_text('{"metric": "chrf"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(ScalingError, match=rf"{path}: line 2: expected a JSON object, got list"):
        read_rows(path)
    path.write_text('{"metric": "chrf"}\n{"metric": \n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}: line 2: invalid JSON"):  # the project's JSON-lines reader
        read_rows(path)
    path = tmp_path / "extra.csv"
    path.write_text("metric,value\nchrf,1,2\n", encoding="utf-8")
    with pytest.raises(ScalingError, match=r"line 2: more fields than the header's \['metric', 'value'\]"):
        read_rows(path)
    path = tmp_path / "empty.csv"
    path.write_text("metric,value,amount,language\n", encoding="utf-8")
    with pytest.raises(ScalingError, match="empty.csv: no rows"):
        read_points(path, "chrf")
