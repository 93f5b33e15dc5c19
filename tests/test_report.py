"""Run reports: before/after tables from a trainer workdir's results index, side-by-side runs, plots, errors."""

import json

import pytest

from pivot_jax.errors import PivotError
from pivot_jax.eval import report
from pivot_jax.report import main as report_command
from pivot_jax.results import Result, append_results


def make_run(path, evals, losses=()):
    """A workdir as the trainer leaves it: one index line per (step, metric), one metrics line per log."""
    path.mkdir(parents=True)
    append_results(path / "results_index.jsonl", [
        Result(f"{path}@step{step}", metric, value, f"qa/es/{path.name}/greedy", 10, step=step)
        for step, values in evals.items() for metric, value in values.items()])
    with open(path / "metrics.jsonl", "w") as f:
        for row in losses:
            f.write(json.dumps(row) + "\n")
    return path


def table_rows(text):
    return {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| "))}


def test_one_run_before_and_after(tmp_path):
    run = make_run(tmp_path / "coit", {0: {"chrf++": 15.8, "language_fidelity": 0.91},
                                       80: {"chrf++": 31.25, "language_fidelity": 0.99}},
                   [{"step": 0, "eval_loss": 2.5, "gen/chrf++": 15.8}, {"step": 5, "loss": 2.0},
                    {"step": 80, "loss": 1.2, "eval_loss": 1.4}])
    md, png = report.write_report([run], run)
    rows = table_rows(md.read_text())
    assert rows["metric"] == ["coit @ step 0", "coit @ step 80", "change"]
    assert rows["chrf++"] == ["15.8", "31.25", "+15.45"]
    assert rows["language_fidelity"] == ["0.91", "0.99", "+0.08"]
    assert "train loss 2.0000 (step 5) -> 1.2000 (step 80)" in md.read_text()
    assert "held-out loss 2.5000 (step 0) -> 1.4000 (step 80)" in md.read_text()
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_runs_side_by_side_with_metrics_one_lacks(tmp_path, capsys):
    plug = make_run(tmp_path / "plug", {0: {"f1": 0.0, "plug_marker_not_found": 100.0},
                                        50: {"f1": 30.0, "plug_marker_not_found": 2.0}})
    mono = make_run(tmp_path / "mono", {0: {"f1": 5.0}, 50: {"f1": 25.0}})
    report_command([str(plug), str(mono), "--output", str(tmp_path / "cmp"), "--names", "PLUG,mono"])
    rows = table_rows((tmp_path / "cmp" / "report.md").read_text())
    assert rows["metric"] == ["PLUG @ step 0", "PLUG @ step 50", "mono @ step 0", "mono @ step 50", "mono − PLUG"]
    assert rows["f1"] == ["0", "30", "5", "25", "-5"]  # the runs' final numbers compared
    assert rows["plug_marker_not_found"] == ["100", "2", "—", "—", "—"]
    assert (tmp_path / "cmp" / "report.png").is_file()
    assert "wrote" in capsys.readouterr().out


def test_a_resumed_step_replaces_its_earlier_evaluation(tmp_path):
    run = make_run(tmp_path / "r", {0: {"bleu": 1.0}, 10: {"bleu": 2.0}})
    with open(run / "results_index.jsonl", "a") as f:
        f.write(json.dumps({"metric": "bleu", "value": 3.0, "samples": 10, "protocol": "p", "step": "10"}) + "\n")
    assert report.read_run(run).evals[10]["bleu"].value == 3.0


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent"):
        report.read_run(tmp_path / "absent")
    empty = make_run(tmp_path / "empty", {})
    with pytest.raises(ValueError, match="no generation evaluations in empty.*generate_at_start"):
        report.write_report([empty], tmp_path / "out")
    broken = make_run(tmp_path / "broken", {0: {"bleu": 1.0}})
    with open(broken / "results_index.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(ValueError, match=r"broken/results_index.jsonl: line 2: invalid JSON"):
        report.read_run(broken)
    standalone = make_run(tmp_path / "standalone", {})
    (standalone / "results_index.jsonl").write_text(json.dumps({"metric": "bleu", "value": 1.0}) + "\n")
    with pytest.raises(ValueError, match="without 'step'"):
        report.read_run(standalone)
    with pytest.raises(SystemExit):
        report_command([str(broken), str(empty)])  # several runs need --output


def test_index_lines_keep_unicode_line_separators_and_a_torn_tail_is_ignored(tmp_path):
    run = make_run(tmp_path / "u", {0: {"bleu": 1.0}})
    row = {"model": "run:\u2028x\u2029y\x85z", "metric": "chrf++", "value": 2.0, "samples": 10, "protocol": "p",
           "step": "0"}
    with open(run / "results_index.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n" + '{"metric": "bl')  # an evaluation cut short
    evals = report.read_run(run).evals[0]
    assert {m: (r.value, r.protocol, r.samples) for m, r in evals.items()} == {"bleu": (1.0, "qa/es/u/greedy", 10),
                                                                             "chrf++": (2.0, "p", 10)}


@pytest.mark.parametrize("row, message", [
    ({"metric": "bleu", "value": "high", "samples": 10, "protocol": "p", "step": "0"},
     r"line 2: field 'value' should be a number, got str"),
    ({"metric": ["bleu"], "value": 1.0, "samples": 10, "protocol": "p", "step": "0"},
     r"line 2: field 'metric' should be a string, got list"),
    ({"metric": "bleu", "value": 1.0, "samples": 10, "step": "0"}, r"line 2: missing field 'protocol'"),
    ({"metric": "bleu", "value": 1.0, "samples": 1.5, "protocol": "p", "step": "0"},
     r"line 2: field 'samples' should be an integer, got float"),
    ({"metric": "bleu", "value": 1.0, "samples": 10, "protocol": "p", "step": "last"},
     r"line 2: field 'step' should be a non-negative integer \(or its digits as a string\), got 'last'"),
    (["bleu", 1.0], r"line 2: expected a JSON object, got list"),
])
def test_index_lines_of_the_wrong_shape_are_named(tmp_path, row, message):
    run = make_run(tmp_path / "bad", {0: {"bleu": 1.0}})
    with open(run / "results_index.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    with pytest.raises(PivotError, match=rf"bad/results_index\.jsonl: {message}"):
        report.read_run(run)



def test_plot_groups_languages_into_one_panel_per_metric_on_shared_axes(tmp_path, monkeypatch):
    evals = {0: {"chrf++": 20.0, "chrf++/es": 30.0, "chrf++/zh": 10.0, "language_fidelity/es": 0.9,
                 "language_fidelity/zh": 0.5},
             100: {"chrf++": 20.05, "chrf++/es": 35.0, "chrf++/zh": 12.0, "language_fidelity/es": 0.95,
                   "language_fidelity/zh": 0.8}}
    runs = [report.read_run(make_run(tmp_path / "a", evals, [{"step": 10, "loss": 2.0}])),
            report.read_run(make_run(tmp_path / "b", {0: {"chrf++/es": 30.0, "bleu": 41.0}}))]
    panels = report._panels(runs)
    assert panels == [("chrf++", ["all", "es", "zh"]), ("language_fidelity", ["es", "zh"]), ("bleu", ["all"])]
    report.plot(runs, png := tmp_path / "report.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000

    import matplotlib.pyplot as plt  # the figure plot drew: one bar panel per base metric and the loss panel

    drawn = []
    monkeypatch.setattr(plt, "close", drawn.append)
    report.plot(runs, tmp_path / "again.png")
    monkeypatch.undo()
    (fig,) = drawn
    titles = [ax.get_title() for ax in fig.axes if ax.axison]
    assert titles == ["chrf++", "language_fidelity", "bleu", "loss"]
    chrf, fidelity, bleu = (ax for ax in fig.axes[:3])
    assert len(chrf.patches) == 3 * 2 + 1  # (all, es, zh) x run a's two evaluations + run b's chrf++/es
    assert chrf.get_ylim()[0] == bleu.get_ylim()[0] == fidelity.get_ylim()[0] == 0  # bars start at 0
    assert chrf.get_ylim() == bleu.get_ylim()  # one unit: one range
    assert "35" in [t.get_text() for t in chrf.texts] and "20.1" in [t.get_text() for t in chrf.texts]
    plt.close(fig)


def test_y_limits_are_shared_by_unit_and_start_at_zero():
    limits = report._y_limits({"chrf++": [20.0, 20.05, None], "bleu": [41.0], "language_fidelity": [0.5, 0.8],
                               "plug_marker_not_found": [3.0, 17.0], "comet": [float("nan")]})
    assert limits["chrf++"] == limits["bleu"] == (0.0, 50.0)  # the largest of the unit, rounded up: not zoomed in
    assert limits["language_fidelity"] == (0.0, 1.0)
    assert limits["plug_marker_not_found"] == (0.0, 20.0)  # a count of items, not a fraction
    assert limits["comet"] == (0.0, 1.0)  # nothing to show: a default range
    assert report._y_limits({"f1": [97.0], "exact_match": [12.0]}) == {"f1": (0.0, 100.0), "exact_match": (0.0, 100.0)}
    assert report._y_limits({"comet": [-0.3, 0.7]}) == {"comet": (-0.3, 0.8)}
    assert report._y_limits({"language_fidelity": [1.4]}) == {"language_fidelity": (0.0, 1.5)}  # never clipped
