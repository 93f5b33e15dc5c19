"""The results index: records written and read back, lines of the earlier layout, lines of the wrong shape."""

import json

import pytest

from pivot_jax.jsonl import DataError
from pivot_jax.results import Result, append_results, read_results, read_training_results


def test_records_round_trip_with_their_tags_and_step(tmp_path):
    index = tmp_path / "index.jsonl"
    written = [Result("run:runs/a", "chrf++", 41.25, "translation/en-es/alpaca/greedy", 1012,
                      tags={"pairs": "1000", "run": "sweep-3"}, time="2026-12-01T10:00:00+00:00", set="translation",
                      source_lang="en", target_lang="es", output="runs/a/eval"),
               Result("runs/b@step20", "bleu", 12.0, "cldr/en-es/alpaca/greedy", 4, step=20)]
    append_results(index, written[:1])
    append_results(index, written[1:])
    assert read_results(index) == written
    line = json.loads(index.read_text().splitlines()[0])
    assert line["run"] == "run:runs/a" and line["tags"] == {"pairs": "1000", "run": "sweep-3"}  # a tag may be "run"


def test_lines_of_the_earlier_layout_read_as_the_same_records(tmp_path):
    index = tmp_path / "index.jsonl"
    index.write_text(json.dumps({"model": "gguf:m.gguf", "set": "qa", "metric": "f1", "value": 3, "samples": 2,
                                 "protocol": "p", "output": "o", "time": "t", "pairs": "100", "step": "7"}) + "\n")
    assert read_results(index) == [Result("gguf:m.gguf", "f1", 3.0, "p", 2, step=7, tags={"pairs": "100"},
                                          time="t", set="qa", output="o")]


def test_a_torn_last_line_is_ignored_and_a_torn_middle_line_named(tmp_path):
    index = tmp_path / "index.jsonl"
    append_results(index, [Result("r", "bleu", 1.0, "p", 1, step=0)])
    with open(index, "a") as f:
        f.write('{"metric": "bl')
    assert [r.metric for r in read_results(index)] == ["bleu"]
    append_results(index, [Result("r", "chrf++", 2.0, "p", 1, step=0)])  # the torn line is repaired first
    assert [r.metric for r in read_results(index)] == ["bleu", "chrf++"]


@pytest.mark.parametrize("row, message", [
    ({"metric": "bleu", "value": True, "samples": 1, "protocol": "p"}, r"field 'value' should be a number"),
    ({"metric": "bleu", "value": 1.0, "samples": 1, "protocol": "p", "run": 3}, r"field 'run' should be a string"),
    ({"metric": "bleu", "value": 1.0, "samples": 1, "protocol": "p", "tags": ["a"]}, r"field 'tags' should map"),
    ({"metric": "bleu", "value": 1.0, "samples": 1, "protocol": "p", "step": -1}, r"field 'step' should be a non-negative integer"),
    ({"metric": "bleu", "value": 1.0, "protocol": "p"}, r"missing field 'samples' \(an integer\)"),
])
def test_lines_of_the_wrong_shape_are_named(tmp_path, row, message):
    index = tmp_path / "index.jsonl"
    index.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=rf"index\.jsonl: line 1: {message}"):
        read_results(index)


def test_training_results_latest_per_step_and_steps_required(tmp_path):
    index = tmp_path / "index.jsonl"
    append_results(index, [Result("w@step0", "bleu", 1.0, "p", 4, step=0), Result("w@step5", "bleu", 2.0, "p", 4, step=5),
                           Result("w@step5", "bleu", 3.0, "p", 4, step=5)])
    by_step = read_training_results(index)
    assert {step: {m: r.value for m, r in metrics.items()} for step, metrics in by_step.items()} == {
        0: {"bleu": 1.0}, 5: {"bleu": 3.0}}
    append_results(index, [Result("hf:x", "bleu", 1.0, "p", 4)])
    with pytest.raises(DataError, match=r"line 4: a line without 'step'"):
        read_training_results(index)
