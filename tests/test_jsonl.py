"""The one JSON-lines reader and appender: records split on "\\n" only, torn tails told from corrupt lines."""

from __future__ import annotations

import json

import pytest

from pivot_jax import jsonl
from pivot_jax.errors import PivotError

# Characters `str.splitlines()` breaks on that `json.dumps(ensure_ascii=False)` leaves inside strings.
SEPARATORS = "\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e\r"


def dumps(record) -> str:
    return json.dumps(record, ensure_ascii=False)


def test_unicode_line_separators_stay_inside_their_record(tmp_path):
    records = [{"id": "a", "output": f"one{SEPARATORS}two"}, {"id": "b", "output": "\u2028"}]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(dumps(r) + "\n" for r in records), encoding="utf-8")
    assert jsonl.read_jsonl(path) == records
    assert jsonl.read_numbered(path) == [(1, records[0]), (2, records[1])]


def test_a_leading_bom_and_blank_lines_are_ignored(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"a": 1}\n\n  \n{"a": 2}\n')
    assert jsonl.read_numbered(path) == [(1, {"a": 1}), (4, {"a": 2})]


def test_a_missing_file_has_no_records(tmp_path):
    assert jsonl.read_jsonl(tmp_path / "absent.jsonl") == []


def test_a_complete_last_record_without_newline_is_kept(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}', encoding="utf-8")
    assert jsonl.read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert jsonl.read_jsonl(path, torn_tail_ok=True) == [{"a": 1}, {"a": 2}]


def test_a_torn_last_line_is_ignored_only_when_asked(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"a": 1}\n{"a": ', encoding="utf-8")
    assert jsonl.read_jsonl(path, torn_tail_ok=True) == [{"a": 1}]
    with pytest.raises(jsonl.DataError, match=r"p\.jsonl: line 2: invalid JSON") as info:
        jsonl.read_jsonl(path)
    assert isinstance(info.value, PivotError) and isinstance(info.value, ValueError)


def test_a_last_line_cut_inside_a_character_is_torn(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes('{"a": 1}\n{"a": "é'.encode("utf-8")[:-1])  # the write stopped between é's two bytes
    assert jsonl.read_jsonl(path, torn_tail_ok=True) == [{"a": 1}]
    with pytest.raises(jsonl.DataError, match=r"p\.jsonl: not UTF-8"):
        jsonl.read_jsonl(path)
    with jsonl.Appender(path) as out:
        out.write({"a": 2})
    assert jsonl.read_jsonl(path) == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize("text", ['{"a": 1}\n{"a": \n{"a": 3}\n', '{"a": 1}\n{"a": \n'])
def test_a_corrupt_line_that_ended_is_an_error_even_when_resuming(tmp_path, text):
    path = tmp_path / "p.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(jsonl.DataError, match=rf"{path.name}: line 2: invalid JSON"):
        jsonl.read_jsonl(path, torn_tail_ok=True)


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000, "invalid JSON"),  # deeper than the interpreter's stack
    ("1" * 5000, "invalid JSON"),  # an integer over Python's digit limit
    ("\ufeff{}", "invalid JSON"),  # a BOM inside the file
])
def test_decoder_failures_that_are_not_syntax_errors_are_named(tmp_path, text, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"a": 1}\n' + text + "\n", encoding="utf-8")
    with pytest.raises(jsonl.DataError, match=rf"p\.jsonl: line 2: {message}"):
        jsonl.read_jsonl(path)


def test_not_utf8_is_named(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes('{"a": "señal"}\n'.encode("latin-1"))
    with pytest.raises(jsonl.DataError, match=r"p\.jsonl: not UTF-8"):
        jsonl.read_jsonl(path)


def test_read_json_names_the_line(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{\n  "a": 1,\n  "b": \n}', encoding="utf-8")
    with pytest.raises(jsonl.DataError, match=r"c\.json: line 4: invalid JSON"):
        jsonl.read_json(path)
    path.write_text(" \n", encoding="utf-8")
    with pytest.raises(jsonl.DataError, match=r"c\.json: file is empty"):
        jsonl.read_json(path)
    path.write_text('\ufeff{"a": [1, "\u2028"]}', encoding="utf-8")
    assert jsonl.read_json(path) == {"a": [1, "\u2028"]}


@pytest.mark.parametrize("before, after", [
    ('{"a": 1}\n{"a": "x\u2028y"}', '{"a": 1}\n{"a": "x\u2028y"}\n{"a": 3}\n'),  # complete: its newline added
    ('{"a": 1}\n{"a": "x', '{"a": 1}\n{"a": 3}\n'),  # torn: cut
    ('{"a": 1}\n', '{"a": 1}\n{"a": 3}\n'),
])
def test_appending_first_ends_the_last_line(tmp_path, before, after):
    path = tmp_path / "p.jsonl"
    path.write_text(before, encoding="utf-8")
    with jsonl.Appender(path) as out:
        out.write({"a": 3})
    assert path.read_text(encoding="utf-8") == after


def test_appending_to_a_one_record_file_with_a_bom_keeps_the_record(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}')
    with jsonl.Appender(path) as out:
        out.write({"a": "\u00e9\u2029"})
    assert jsonl.read_jsonl(path) == [{"a": 1}, {"a": "\u00e9\u2029"}]


def test_appending_creates_the_file_and_its_folder(tmp_path):
    path = tmp_path / "new" / "p.jsonl"
    with jsonl.Appender(path) as out:
        out.write({"a": "ü"})
        out.flush()
        assert path.read_bytes() == '{"a": "ü"}\n'.encode("utf-8")  # UTF-8, not ASCII escapes
