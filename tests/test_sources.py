"""Readers of local data files: real files from shared/data and every error case on files made here."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from pivot_jax.data import formats as F
from pivot_jax.data import sources as S

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_path(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data {path} is absent (shared/data is not checked out next to the repository)")
    return path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Real files (counts from each folder's SOURCE.md)

def test_xquad_parallel_across_languages():
    by_lang = {lang: S.read_squad(data_path("xquad", f"xquad.{lang}.json")) for lang in ("en", "es", "zh")}
    for records in by_lang.values():
        assert len(records) == 1190
        assert all(set(r) == {"id", "context", "question", "answers", "article"} and r["answers"] for r in records)
        assert all(r["answers"][0] in r["context"] for r in records)
    assert [r["id"] for r in by_lang["es"]] == [r["id"] for r in by_lang["en"]] == [r["id"] for r in by_lang["zh"]]
    assert len({r["context"] for r in by_lang["en"]}) == 240
    assert [r["article"] for r in by_lang["es"]] == [r["article"] for r in by_lang["en"]]
    assert len({r["article"] for r in by_lang["en"]}) == 48


def test_squad_files_read_as_instruction_records(tmp_path):
    records = S.read_instruction_records(data_path("xquad", "xquad.es.json"))
    assert len(records) == 1190
    first = records[0]
    assert set(first) == {"id", "instruction", "input", "output", "group"} and first["group"] == "article:0"
    assert first["output"] in first["input"] and first["instruction"].endswith("?")
    lines = write(tmp_path / "r.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n')
    assert S.read_instruction_records(lines) == S.read_records(lines)  # JSON lines are not SQuAD
    single = write(tmp_path / "one.jsonl", '{"instruction": "a", "output": "b"}\n')
    assert S.read_instruction_records(single) == [{"instruction": "a", "output": "b"}]


def test_validation_split_is_stable_and_sized():
    keys = [f"article:{i}" for i in range(2000)]
    held = [k for k in keys if S.in_validation_split(k, 0.2)]
    assert 0.17 < len(held) / len(keys) < 0.23
    assert held == [k for k in keys if S.in_validation_split(k, 0.2)]
    assert set(held) <= {k for k in keys if S.in_validation_split(k, 0.5)}  # larger fractions hold out supersets
    assert not any(S.in_validation_split(k, 0.0) for k in keys)


def test_flores_devtest():
    directory = data_path("flores200_devtest")
    assert S.flores_path(directory, "es") == S.flores_path(directory, "spa_Latn") == directory / "spa_Latn.devtest"
    pairs = S.read_parallel(S.flores_path(directory, "en"), S.flores_path(directory, "es"))
    assert [index for index, _, _ in pairs] == list(range(1012))
    assert all(src == src.strip() and tgt == tgt.strip() and src and tgt for _, src, tgt in pairs)
    with pytest.raises(FileNotFoundError, match="fin_Latn.devtest"):
        S.flores_path(directory, "fi")


def test_tatoeba_pair_files():
    directory = data_path("tatoeba_parallel")
    en, es = directory / "tatoeba.en-es.en", directory / "tatoeba.en-es.es"
    forward, backward = S.read_parallel(en, es), S.read_parallel(es, en)
    assert len(forward) == 5000 and [(i, b, a) for i, a, b in forward] == backward


def test_alpaca_eval_files():
    davinci = S.read_alpaca_eval(data_path("alpaca_eval", "alpaca_eval.json"))
    english = S.read_alpaca_eval(data_path("alpaca_eval", "english_instructions.json"))
    assert len(davinci) == len(english) == 805
    assert [r["id"] for r in davinci] == [r["id"] for r in english] == list(range(1, 806))  # no id: 1-based order
    assert Counter(r["dataset"] for r in english) == {"selfinstruct": 252, "oasst": 188, "koala": 156,
                                                      "helpful_base": 129, "vicuna": 80}
    joined = S.join_by_id(english, davinci)
    assert len(joined.pairs) == 805 and joined.pivot_only == joined.target_only == []
    assert all(a["instruction"] == b["instruction"] for a, b in joined.pairs)


def test_alpaca_demo_and_field_mapping():
    en = S.read_records(data_path("alpaca_demo", "alpaca_en_demo.json"), required=("instruction", "input", "output"))
    zh = S.read_records(data_path("alpaca_demo", "alpaca_zh_demo.json"), required=("instruction", "input", "output"))
    assert (len(en), len(zh)) == (999, 1000)
    renamed = S.read_records(data_path("alpaca_demo", "alpaca_zh_demo.json"),
                             fields={"instruction": "prompt", "output": "response"}, required=("prompt", "response"))
    assert [(r["prompt"], r["input"], r["response"]) for r in renamed] == [
        (r["instruction"], r["input"], r["output"]) for r in zh]


def test_mgsm():
    rows = {lang: S.read_mgsm(data_path("mgsm", f"mgsm_{lang}.tsv")) for lang in ("en", "zh")}
    assert len(rows["en"]) == len(rows["zh"]) == 250
    assert [r["answer"] for r in rows["en"]] == [r["answer"] for r in rows["zh"]]  # parallel problems
    assert all(re.fullmatch(r"-?[\d,.]+", r["answer"]) for r in rows["en"])


# ---------------------------------------------------------------------------------------------------------------
# Template rotation depends on line indices that count skipped pairs

def test_translation_rotation_counts_skipped_lines(tmp_path):
    sources = [f"source {i}" for i in range(80)]
    targets = [f"target {i}" for i in range(80)]
    sources[5] = ""  # an empty pair on either side is skipped but keeps its line number
    targets[40] = "   "
    src = write(tmp_path / "train.en", "\n".join(sources) + "\n")
    tgt = write(tmp_path / "train.zh", "\r\n".join(targets) + "\r\n")
    pairs = S.read_parallel(src, tgt)
    assert [i for i, _, _ in pairs] == [i for i in range(80) if i not in (5, 40)]
    assert pairs[5] == (6, "source 6", "target 6")
    for index, source, target in pairs:
        instruction = F.TRANSLATION_TEMPLATES[index % 33].format(source_lang="English", target_lang="Chinese")
        example = F.translation(source, target, "en", "zh", index)
        assert example.inputs == F.alpaca(instruction, source, target).inputs
        assert example.targets == target
    # lines 33 and 66 come back to template 0, line 6 uses template 6 although it is the 6th kept pair
    assert F.translation("s", "t", "en", "zh", 66).inputs == F.translation("s", "t", "en", "zh", None).inputs
    assert "Change the given sentences from English to Chinese format." in F.translation(*pairs[5][1:], "en", "zh",
                                                                                          pairs[5][0]).inputs


def test_join_reports_one_sided_ids():
    pivot = [{"id": 1, "instruction": "one"}, {"id": 2, "instruction": "two"}, {"id": 3, "instruction": "three"}]
    target = [{"id": "3", "instruction": "三"}, {"id": "1", "instruction": "一"}, {"id": "9", "instruction": "九"}]
    joined = S.join_by_id(pivot, target)
    assert [(a["instruction"], b["instruction"]) for a, b in joined.pairs] == [("one", "一"), ("three", "三")]
    assert (joined.pivot_only, joined.target_only) == (["2"], ["9"])
    with pytest.raises(S.DataError, match="target record 4: duplicate id '3'"):
        S.join_by_id(pivot, target + [{"id": 3}])
    with pytest.raises(S.DataError, match="pivot record 1: missing field 'key'"):
        S.join_by_id(pivot, target, id_field="key")


# ---------------------------------------------------------------------------------------------------------------
# Errors name the file, the line and the field

def test_records_json_list_and_lines(tmp_path):
    records = [{"instruction": "i1", "output": "o1"}, {"instruction": "i2", "output": "o2", "extra": 1}]
    listed = write(tmp_path / "a.json", json.dumps(records, indent=2))
    lines = write(tmp_path / "a.jsonl", "\n".join(json.dumps(r) for r in records) + "\n\n")
    assert S.read_records(listed) == S.read_records(lines) == records
    assert S.read_records(write(tmp_path / "b.json", '[{"a": 1}]'), fields={"a": "b"}) == [{"b": 1}]


@pytest.mark.parametrize("text, message", [
    ('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": \n', r"bad\.jsonl: line 2: invalid JSON"),
    ('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "a" "output": "b"}\n]', r"line 3: invalid JSON"),
    ('[\n  {"instruction": "a", "output": "b"},\n]', r"line 3: invalid JSON \(trailing comma after record 1\)"),
    ('[\n  {"instruction": "a", "output": "b"}\n', r"line 3: invalid JSON \(the list is not closed"),
    ('[{"instruction": "a", "output": "b"}] x', r"line 1: invalid JSON \(the list is not closed"),
    ('{\n  "instruction": "a"\n}\n', r"line 1: invalid JSON .*one JSON object per line or a JSON list"),
    ('{"instruction": "a", "output": "b"}\n\n{"instruction": "a"}\n', r"line 3: missing required field 'output'"),
    ('[\n {"instruction": "a",\n  "output": "b"},\n {"instruction": "a",\n  "output": null}]',
     r"line 4 \(record 2\): missing required field 'output'"),
    ('["just a string"]', r"line 1 \(record 1\): expected a JSON object, got str"),
    ('', r"bad\.jsonl: file is empty"),
    (' \n\n', r"bad\.jsonl: file is empty"),
    ('[]', r"bad\.jsonl: no records"),
])
def test_records_errors(tmp_path, text, message):
    path = write(tmp_path / "bad.jsonl", text)
    with pytest.raises(S.DataError, match=message) as info:
        S.read_records(path, required=("instruction", "output"))
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_records_errors_name_the_source_field(tmp_path):
    path = write(tmp_path / "plug.jsonl", '{"instruction": "a", "response": "b"}\n{"instruction": "a"}\n')
    with pytest.raises(S.DataError, match=r"plug\.jsonl: line 2: missing required field 'response' \(read as 'output'"):
        S.read_records(path, fields={"response": "output"}, required=("instruction", "output"))
    clash = write(tmp_path / "clash.jsonl", '{"response": "a", "output": "b"}\n')
    with pytest.raises(S.DataError, match=r"clash\.jsonl: line 1: two fields would both be read as 'output'"):
        S.read_records(clash, fields={"response": "output"})
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('{"a": "señal"}\n'.encode("latin-1"))
    with pytest.raises(S.DataError, match=r"latin1\.jsonl: not UTF-8"):
        S.read_records(latin1)


def test_parallel_errors(tmp_path):
    src = write(tmp_path / "train.en", "a\nb\nc\n")
    tgt = write(tmp_path / "train.es", "A\nB\n")
    with pytest.raises(S.DataError) as info:
        S.read_parallel(src, tgt)
    assert re.search(rf"{re.escape(str(src))} has 3 lines but {re.escape(str(tgt))} has 2", str(info.value))
    empty_src, empty_tgt = write(tmp_path / "e.en", ""), write(tmp_path / "e.es", "")
    with pytest.raises(S.DataError, match=r"e\.en and .*e\.es: no non-empty sentence pairs"):
        S.read_parallel(empty_src, empty_tgt)


def test_squad_errors(tmp_path):
    good = {"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "q", "question": "?", "answers": []}]}]}]}
    assert S.read_squad(write(tmp_path / "ok.json", json.dumps(good))) == [
        {"id": "q", "context": "c", "question": "?", "answers": [], "article": 0}]
    bad = json.loads(json.dumps(good))
    del bad["data"][0]["paragraphs"][0]["qas"][0]["question"]
    with pytest.raises(S.DataError, match=r"bad\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\]: missing field 'question'"):
        S.read_squad(write(tmp_path / "bad.json", json.dumps(bad)))
    with pytest.raises(S.DataError, match=r"bad\.json: field 'data' should be a list, got dict"):
        S.read_squad(write(tmp_path / "bad.json", '{"data": {}}'))
    with pytest.raises(S.DataError, match=r"bad\.json: line 2: invalid JSON"):
        S.read_squad(write(tmp_path / "bad.json", '{"data":\n ]}'))
    with pytest.raises(S.DataError, match=r"bad\.json: file is empty"):
        S.read_squad(write(tmp_path / "bad.json", ""))


def test_alpaca_eval_and_mgsm_errors(tmp_path):
    mixed = write(tmp_path / "x.json", '[{"id": 1, "instruction": "a"},\n {"instruction": "b"}]')
    with pytest.raises(S.DataError, match=r"x\.json: line 2 \(record 2\): missing field 'id'"):
        S.read_alpaca_eval(mixed)
    duplicate = write(tmp_path / "x.json", '[{"id": 1, "instruction": "a"},\n {"id": 1, "instruction": "b"}]')
    with pytest.raises(S.DataError, match=r"line 2 \(record 2\): duplicate id 1 \(first at .*line 1 \(record 1\)\)"):
        S.read_alpaca_eval(duplicate)
    with pytest.raises(S.DataError, match=r"x\.json: line 1 \(record 1\): missing required field 'instruction'"):
        S.read_alpaca_eval(write(tmp_path / "x.json", '[{"id": 1}]'))
    with pytest.raises(S.DataError, match=r"m\.tsv: line 2: expected 2 tab-separated columns .*got 3"):
        S.read_mgsm(write(tmp_path / "m.tsv", "q?\t1\nq?\t2\t3\n"))
    with pytest.raises(S.DataError, match=r"m\.tsv: line 1: empty field 'answer'"):
        S.read_mgsm(write(tmp_path / "m.tsv", "q?\t \n"))
    with pytest.raises(S.DataError, match=r"m\.tsv: file is empty"):
        S.read_mgsm(write(tmp_path / "m.tsv", "\n"))


# ---------------------------------------------------------------------------------------------------------------
# Field types are checked when a file is read, not when TensorFlow or a prompt template meets them

@pytest.mark.parametrize("record, message", [
    ({"instruction": "a", "output": 123}, r"field 'output' should be a string, got int"),
    ({"instruction": ["a", "b"], "output": "c"}, r"field 'instruction' should be a string, got list"),
    ({"instruction": "a", "input": {"x": 1}, "output": "c"}, r"field 'input' should be a string or null, got dict"),
    ({"instruction": "a", "output": "b", "id": [1]}, r"field 'id' should be a string or an integer, got list"),
    ({"instruction": "a", "output": "b", "id": True}, r"field 'id' should be a string or an integer, got bool"),
    ({"instruction": "a", "output": "b", "id": 1.5}, r"field 'id' should be a string or an integer, got float"),
    ({"instruction": "a", "output": "b", "group": 3}, r"field 'group' should be a string, got int"),
])
def test_instruction_fields_of_the_wrong_type_are_named(tmp_path, record, message):
    good = {"instruction": "x", "output": "y"}
    lines = write(tmp_path / "a.jsonl", json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(S.DataError, match=rf"a\.jsonl: line 2: {message}"):
        S.read_instruction_records(lines, required=("instruction", "output"))
    listed = write(tmp_path / "a.json", "[\n" + json.dumps(good) + ",\n" + json.dumps(record) + "\n]")
    with pytest.raises(S.DataError, match=rf"a\.json: line 3 \(record 2\): {message}"):
        S.read_records(listed)


def test_type_errors_name_the_source_field_and_null_input_is_empty(tmp_path):
    path = write(tmp_path / "r.jsonl", '{"prompt": "a", "response": 7}\n')
    with pytest.raises(S.DataError, match=r"r\.jsonl: line 1: field 'response' \(read as 'output'\) should be a "
                                          r"string, got int"):
        S.read_records(path, fields={"prompt": "instruction", "response": "output"})
    # Alpaca writes "" for no input; exports through pandas write null, which means the same.
    path = write(tmp_path / "n.jsonl", '{"instruction": "a", "input": null, "output": "b", "id": 4}\n')
    assert S.read_records(path, required=("instruction", "output")) == [
        {"instruction": "a", "input": "", "output": "b", "id": 4}]


def test_alpaca_eval_field_types(tmp_path):
    with pytest.raises(S.DataError, match=r"x\.json: line 1 \(record 1\): field 'id' should be a string or an "
                                          r"integer, got list"):
        S.read_alpaca_eval(write(tmp_path / "x.json", '[{"id": [1], "instruction": "a"}]'))
    with pytest.raises(S.DataError, match=r"x\.json: line 1 \(record 1\): field 'dataset' should be a string, got int"):
        S.read_alpaca_eval(write(tmp_path / "x.json", '[{"instruction": "a", "dataset": 5}]'))
    with pytest.raises(S.DataError, match=r"x\.json: line 1 \(record 1\): field 'instruction' should be a string"):
        S.read_alpaca_eval(write(tmp_path / "x.json", '[{"instruction": {"text": "a"}}]'))
