"""Resuming predictions: every complete record is kept once, whatever its text holds (generation is faked)."""

from __future__ import annotations

import json

import pytest

from pivot_jax.errors import PivotError
from pivot_jax.eval import predict as predict_lib
from pivot_jax.eval.items import Item, render_prompt

# Generated text can hold any character; these are line breaks for `str.splitlines()`, not for JSON lines.
TEXT = "uno\u2028dos\u2029tres\x85cuatro"


class FakeTokenizer:
    add_bos_token = False
    stop_ids = {0}
    pad_id = 0

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        return [len(text)]

    def decode(self, row: list[int]) -> str:
        return f"{TEXT} {row[0]}"


@pytest.fixture
def generated(monkeypatch):
    """The prompts generation was asked for (one list per batch)."""
    calls: list[list[list[int]]] = []

    def fake_generate_ids(model, prompts, **kwargs):
        calls.append(prompts)
        return [[7] for _ in prompts]

    monkeypatch.setattr(predict_lib, "generate_ids", fake_generate_ids)
    return calls


ITEMS = [Item(f"id{i}", f"instruction {i}", "", ("ref",), "es") for i in range(3)]


def run(path, items=ITEMS):
    return predict_lib.predict(items, model=None, tokenizer=FakeTokenizer(), path=path, prompt_format="alpaca",
                               max_new_tokens=4, batch_size=2)


def run_prompt(item: Item) -> str:
    return render_prompt(item, "alpaca")


def lines(path):
    return path.read_text(encoding="utf-8").split("\n")


def test_records_with_unicode_line_separators_are_not_regenerated(tmp_path, generated):
    path = tmp_path / "predictions.jsonl"
    first = run(path)
    assert [r["output"] for r in first] == [f"{TEXT} 7"] * 3 and len(generated) == 2
    before = path.read_text(encoding="utf-8")
    assert run(path) == first
    assert len(generated) == 2  # nothing generated again
    assert path.read_text(encoding="utf-8") == before  # and nothing appended


def test_a_complete_last_record_without_newline_is_kept_and_ended(tmp_path, generated):
    path = tmp_path / "predictions.jsonl"
    done = [{"id": item.id, "prompt": "p", "output": f"{TEXT} kept", "answer": f"{TEXT} kept", "language": None,
             "new_tokens": 1} for item in ITEMS[:2]]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in done), encoding="utf-8")  # no final \n
    records = run(path)
    assert [r["output"] for r in records] == [f"{TEXT} kept", f"{TEXT} kept", f"{TEXT} 7"]
    assert generated == [[[len(run_prompt(ITEMS[2]))]]]  # only the third item
    stored = [json.loads(line) for line in lines(path)[:-1]]
    assert [r["id"] for r in stored] == ["id0", "id1", "id2"] and lines(path)[-1] == ""


def test_a_torn_last_record_is_regenerated_and_replaced(tmp_path, generated):
    path = tmp_path / "predictions.jsonl"
    run(path, ITEMS[:2])
    whole = lines(path)
    path.write_text(whole[0] + "\n" + whole[1][: len(whole[1]) // 2], encoding="utf-8")  # a write cut short
    records = run(path)
    assert [r["id"] for r in records] == ["id0", "id1", "id2"]
    stored = [json.loads(line) for line in lines(path)[:-1]]
    assert [r["id"] for r in stored] == ["id0", "id1", "id2"]


def test_a_corrupt_record_before_the_last_line_is_named(tmp_path, generated):
    path = tmp_path / "predictions.jsonl"
    run(path, ITEMS[:2])
    whole = lines(path)
    path.write_text(whole[0][:10] + "\n" + whole[1] + "\n", encoding="utf-8")
    with pytest.raises(PivotError, match=r"predictions\.jsonl: line 1: invalid JSON"):
        run(path)
    assert not generated[2:]


@pytest.mark.parametrize("record, message", [
    ([1, 2], r"line 2: expected a JSON object with a string 'id'"),
    ({"answer": "a"}, r"line 2: expected a JSON object with a string 'id'"),
    ({"id": 3, "answer": "a"}, r"line 2: expected a JSON object with a string 'id'"),
    ({"id": "id1"}, r"line 2: missing field 'answer'"),
    ({"id": "id1", "answer": ["a"]}, r"line 2: field 'answer' should be a string or null, got list"),
])
def test_records_of_the_wrong_shape_are_named(tmp_path, record, message):
    path = tmp_path / "predictions.jsonl"
    path.write_text(json.dumps({"id": "id0", "answer": None}) + "\n" + json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(PivotError, match=rf"predictions\.jsonl: {message}"):
        predict_lib.read_predictions(path)
