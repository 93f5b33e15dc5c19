"""`python -m pivot_jax.scaling fit | allocate` end to end on a generated results.csv and results.jsonl: the
fits.json and allocation.json shapes, the PNGs, the MuIT override, and bad input as one-line errors."""

import csv
import json
import re

import numpy as np
import pytest
from absl import flags

from pivot_jax.scaling.__main__ import COMMAND, main
from pivot_jax.scaling.laws import LAWS, make_law

PNG = b"\x89PNG\r\n\x1a\n"
COLUMNS = ["point", "language", "amount", "seed", "lr", "metric", "value", "samples", "steps", "tokens", "flops",
           "wall_s"]
TRUTH = {"es": ("xllama", [300.0, -0.3]), "zh": ("power", [60.0, 200.0, 0.5])}
AMOUNTS = [0, 100, 300, 1000, 3000, 10000, 30000]


def _rows():
    """What `sweep collect` writes: a row per point and metric, two seeds per amount, amount 0 the baseline."""
    rng = np.random.default_rng(0)
    rows, point = [], 0
    for lang, (law, theta) in TRUTH.items():
        for amount in AMOUNTS:
            for seed in (0, 1):
                point += 1
                y = make_law(law).value(np.array([amount or 1.0]), np.array(theta))[0] if amount else 15.0
                y += rng.normal(0, 0.5)
                for metric, value in (("chrf", y), ("bleu", y / 2)):
                    rows.append({"point": point, "language": lang, "amount": amount, "seed": seed, "lr": 2e-5,
                                 "metric": metric, "value": value, "samples": 1012, "steps": 50, "tokens": 51200,
                                 "flops": 1.2e15, "wall_s": 30.5})
    return rows


def _write(path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sweep")
    return {kind: _write(directory / f"results.{kind}", _rows()) for kind in ("csv", "jsonl")}


def _fit(results_file, output, *more):
    return main(["fit", str(results_file), "--metric", "chrf", "--output", str(output), "--bootstrap", "40", *more])


def _no_temporary_files(directory):
    assert not [p.name for p in directory.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def fitted(results, tmp_path_factory):
    """fits.json of the CSV and of the JSON lines."""
    out = {}
    for kind, path in results.items():
        out[kind] = tmp_path_factory.mktemp(f"fits_{kind}")
        _fit(path, out[kind])
    return out


def test_fit_writes_fits_json_in_the_issue_shape_and_a_png(fitted):
    for directory in fitted.values():
        record = json.loads((directory / "fits.json").read_text(encoding="utf-8"))
        assert set(record["groups"]) == {"es", "zh"}
        for group in ("es", "zh"):
            fit = record["groups"][group]
            assert list(fit)[:7] == ["law", "params", "ci", "r2", "loo_error", "extrapolation_error", "n"]
            assert fit["law"] in ("xllama", "power", "loglinear")
            assert list(fit["params"]) == list(LAWS[fit["law"]].params)  # names as in the formulas
            assert list(fit["ci"]) == list(fit["params"])
            for name, (low, high) in fit["ci"].items():
                assert low <= high and all(isinstance(v, float) for v in (low, high, fit["params"][name]))
            assert isinstance(fit["r2"], float) and fit["r2"] > 0.9
            assert fit["loo_error"] > 0 and fit["extrapolation_error"] > 0
            assert fit["n"] == 2 * (len(AMOUNTS) - 1)  # seeds are points; amount 0 is not fitted
            assert all(len(v) == 40 for v in fit["samples"].values())
        assert record["metric"] == "chrf" and record["x"] == "amount" and record["group_by"] == "language"
        assert (directory / "fits.png").read_bytes()[:8] == PNG
        _no_temporary_files(directory)
    assert record["groups"]["zh"]["law"] == "power"  # saturating at 60: told apart from the others


def test_csv_and_jsonl_give_the_same_fits(fitted):
    records = [json.loads((d / "fits.json").read_text(encoding="utf-8")) for d in fitted.values()]
    for group in ("es", "zh"):
        first, second = (r["groups"][group] for r in records)
        assert first["law"] == second["law"]
        for name in first["params"]:
            assert first["params"][name] == pytest.approx(second["params"][name], rel=1e-9)
            assert first["ci"][name] == pytest.approx(second["ci"][name], rel=1e-9)


def test_fit_prints_a_table(results, tmp_path, capsys):
    _fit(results["csv"], tmp_path, "--law", "power", "--bootstrap", "10")
    out = capsys.readouterr().out
    assert re.search(r"^group\s+law\s+n\s+R²\s+LOO\s+extrap\s+parameters \[95% bootstrap CI\]$", out, re.MULTILINE)
    assert re.search(r"^es\s+power\s+12\s+0\.\d+", out, re.MULTILINE) and "c=" in out and "b=" in out


def test_allocate_writes_allocation_json_the_override_and_a_png(fitted, tmp_path, capsys):
    fits = fitted["csv"] / "fits.json"
    main(["allocate", str(fits), "--budget", "20000", "--weights", "es:1,zh:2", "--available", "es:5000",
          "--minimums", "zh:100", "--output", str(tmp_path)])
    record = json.loads((tmp_path / "allocation.json").read_text(encoding="utf-8"))
    assert list(record)[:6] == ["budget", "amounts", "predicted", "uniform_predicted", "gain", "gain_ci"]
    assert record["budget"] == 20000 and set(record["amounts"]) == {"es", "zh"}
    assert all(isinstance(v, int) for v in record["amounts"].values())
    assert sum(record["amounts"].values()) <= 20000 and record["amounts"]["es"] <= 5000
    assert record["amounts"]["zh"] >= 100
    assert set(record["predicted"]) == set(record["uniform_predicted"]) == {"es", "zh"}
    low, high = record["gain_ci"]
    assert low <= high and isinstance(record["gain"], float)
    es, zh = record["amounts"]["es"], record["amounts"]["zh"]
    line = f"configs/muit.py:langs=es+zh,amounts=es:{es}+zh:{zh}"
    assert (tmp_path / "muit_override.txt").read_text(encoding="utf-8") == line + "\n"
    assert record["override"] == line
    assert "ARGUMENT = 'langs=es+zh,amounts=" in (tmp_path / "muit_allocated.py").read_text(encoding="utf-8")
    assert (tmp_path / "allocation.png").read_bytes()[:8] == PNG
    _no_temporary_files(tmp_path)
    out = capsys.readouterr().out
    assert re.search(rf"^es\s+1\s+{es:,}\s+", out, re.MULTILINE) and "predicted gain over the uniform split" in out
    assert f"--config {line}" in out


def test_joint_fit_and_allocation_by_it(results, tmp_path, capsys):
    _fit(results["jsonl"], tmp_path / "fits", "--law", "xllama", "--joint", "--gamma", "zh:0.5", "--bootstrap",
         "10")
    record = json.loads((tmp_path / "fits" / "fits.json").read_text(encoding="utf-8"))
    assert record["groups"]["zh"]["fixed"] == {"gamma": 0.5} and record["groups"]["es"]["fixed"] == {"gamma": 1.0}
    joint = record["joint"]
    assert joint["law"] == "xllama" and set(joint["shared"]) == {"beta"} and joint["preferred"] in ("joint",
                                                                                                       "separate")
    assert joint["groups"]["es"]["params"]["beta"] == joint["groups"]["zh"]["params"]["beta"]
    assert "preferred:" in capsys.readouterr().out
    main(["allocate", str(tmp_path / "fits" / "fits.json"), "--budget", "9000", "--use_joint", "--output",
          str(tmp_path / "alloc")])
    assert sum(json.loads((tmp_path / "alloc" / "allocation.json").read_text())["amounts"].values()) == 9000


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_bad_input_is_one_line_naming_what(results, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PIVOT_JAX_VERBOSE", raising=False)
    out = tmp_path / "out"
    err = _error(capsys, ["fit", str(results["csv"]), "--metric", "comet", "--output", str(out)])
    assert f"error: {results['csv']}: no rows with metric 'comet' (metrics present: bleu, chrf)" in err
    rows = _rows()
    rows[4]["value"] = "nan"  # a chrf row (rows alternate chrf, bleu)
    bad = _write(tmp_path / "nan.csv", rows)
    assert "nan.csv: line 6: column 'value': 'nan' is not a finite number" in _error(
        capsys, ["fit", str(bad), "--metric", "chrf", "--output", str(out)])
    few = _write(tmp_path / "few.csv", [r for r in _rows() if r["amount"] in (0, 100, 1000, 10000)])
    assert "group 'es': too few points to fit: 6 points over 3 amounts; law power (3 parameters) needs at least 5 " \
           "points over 4 amounts" in _error(capsys, ["fit", str(few), "--metric", "chrf", "--law", "power",
                                                      "--output", str(out)])
    assert "no column 'pairs'" in _error(capsys, ["fit", str(results["csv"]), "--metric", "chrf", "--x", "pairs",
                                                  "--output", str(out)])
    assert not out.exists()  # nothing written before the input is known good
    fits = tmp_path / "fits"
    _fit(results["csv"], fits, "--law", "loglinear", "--bootstrap", "5")
    err = _error(capsys, ["allocate", str(fits / "fits.json"), "--budget", "100", "--minimums", "es:80,zh:50",
                          "--output", str(out)])
    assert "error: budget 100 is below the sum of the minimums, 130 (es: 80, zh: 50)" in err
    assert "--weights: 'es=2' should be NAME:NUMBER" in _error(
        capsys, ["allocate", str(fits / "fits.json"), "--budget", "100", "--weights", "es=2", "--output", str(out)])
    assert "--gamma names fr" in _error(capsys, ["fit", str(results["csv"]), "--metric", "chrf", "--gamma", "fr:0.5",
                                                 "--output", str(out)])
    assert not out.exists()


def test_usage_errors_and_help(results, tmp_path, capsys):
    assert "python -m pivot_jax.scaling fit needs --metric" in _error(
        capsys, ["fit", str(results["csv"]), "--output", str(tmp_path)])
    assert "needs --budget" in _error(capsys, ["allocate", "fits.json", "--output", str(tmp_path)])
    assert "contradicts --lower_is_better" in _error(
        capsys, ["fit", str(results["csv"]), "--metric", "chrf", "--law", "loss", "--nolower_is_better", "--output",
                 str(tmp_path)])
    with COMMAND.defined() as names:
        assert all(flags.FLAGS[name].help for name in names)
        assert flags.FLAGS["bootstrap"].default >= 1000
    text = COMMAND.help()
    assert re.search(r"^  fit RESULTS --metric=\.\.\. --output=\.\.\.\s+\S", text, re.MULTILINE)
    assert re.search(r"^  allocate FITS --budget=\.\.\. --output=\.\.\.\s+\S", text, re.MULTILINE)
