"""Readers that turn local data files into plain records (dicts and tuples) for `formats`.

Every problem with a file's content raises `DataError`, whose message names the file, the 1-based line (or,
inside one JSON document, the JSON path) and the field. Text is read as UTF-8 (a leading BOM is ignored) and split
on "\\n" only, so a stray carriage return inside a sentence cannot shift a parallel file by one line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pivot_jax.data.formats import FLORES_CODES
from pivot_jax.jsonl import (
    JSON_DECODE_ERRORS,
    DataError,
    invalid_json,
    parse_lines,
    read_json,
    read_text,
    text_lines,
    type_name,
)

PathLike = str | os.PathLike[str]
_WHITESPACE = re.compile(r"[ \t\n\r]*")


# ---------------------------------------------------------------------------------------------------------------
# Instruction records (JSON list or JSON lines)

def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _json_list_items(text: str, path: PathLike) -> Iterator[tuple[str, Any]]:
    """(location, value) of each element of a top-level JSON list, decoded one element at a time for line numbers."""
    decoder = json.JSONDecoder()
    pos = _WHITESPACE.match(text, text.index("[") + 1).end()
    line, counted, number = 1, 0, 0
    while pos < len(text) and text[pos] != "]":
        line, counted = line + text.count("\n", counted, pos), pos
        try:
            value, pos = decoder.raw_decode(text, pos)
        except JSON_DECODE_ERRORS as e:
            raise invalid_json(path, getattr(e, "lineno", line), e) from None
        number += 1
        yield f"{path}: line {line} (record {number})", value
        pos = _WHITESPACE.match(text, pos).end()
        if text.startswith(",", pos):
            pos = _WHITESPACE.match(text, pos + 1).end()
            if text.startswith("]", pos):
                raise DataError(f"{path}: line {_line_of(text, pos)}: invalid JSON (trailing comma after record "
                                f"{number})")
        elif pos < len(text) and text[pos] != "]":
            raise DataError(f"{path}: line {_line_of(text, pos)}: invalid JSON (expected ',' or ']' after record "
                            f"{number})")
    if pos >= len(text) or text[pos + 1:].strip():
        raise DataError(f"{path}: line {_line_of(text, pos)}: invalid JSON (the list is not closed by a final ']')")


def _json_lines_items(text: str, path: PathLike) -> Iterator[tuple[str, Any]]:
    for number, value in parse_lines(text, path, expected="one JSON object per line or a JSON list"):
        yield f"{path}: line {number}", value


def _named(name: str, fields: Mapping[str, str] | None) -> str:
    """A canonical field as the file spells it: `'response' (read as 'output')` when renamed."""
    source = next((key for key, canonical in (fields or {}).items() if canonical == name), name)
    return repr(source) + (f" (read as {name!r})" if source != name else "")


def _canonical(record: Any, fields: Mapping[str, str] | None, required: Sequence[str], where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type_name(record)}")
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = (fields or {}).get(key, key)
        if name in out:
            raise DataError(f"{where}: two fields would both be read as {name!r}")
        out[name] = value
    for name in required:
        if out.get(name) is None:
            raise DataError(f"{where}: missing required field {_named(name, fields)}")
    return out


# Fields with a meaning in instruction records hold text (null: absent); a missing "input" is "" and so is a null
# one, which exports through pandas write for Alpaca's "". Ids are compared as strings, so numbers are fine too.
_TEXT_FIELDS = ("instruction", "input", "output", "group", "dataset")


def _check_types(record: dict[str, Any], fields: Mapping[str, str] | None, where: str) -> dict[str, Any]:
    if "input" in record and record["input"] is None:
        record["input"] = ""
    for name in _TEXT_FIELDS:
        if record.get(name) is not None and not isinstance(record[name], str):
            either = " or null" if name == "input" else ""
            raise DataError(f"{where}: field {_named(name, fields)} should be a string{either}, got "
                            f"{type_name(record[name])}")
    if "id" in record and (isinstance(record["id"], bool) or not isinstance(record["id"], (str, int))):
        raise DataError(f"{where}: field {_named('id', fields)} should be a string or an integer, got "
                        f"{type_name(record['id'])}")
    return record


def _located_records(path: PathLike, fields: Mapping[str, str] | None,
                     required: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """(location, record) of a JSON-list or JSON-lines file of instruction records, field types checked."""
    text = read_text(path)
    stripped = text.lstrip()
    if not stripped:
        raise DataError(f"{path}: file is empty")
    items = _json_list_items(text, path) if stripped.startswith("[") else _json_lines_items(text, path)
    records = [(where, _check_types(_canonical(value, fields, required, where), fields, where))
               for where, value in items]
    if not records:
        raise DataError(f"{path}: no records")
    return records


def read_records(path: PathLike, fields: Mapping[str, str] | None = None,
                 required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Records of a JSON-list or JSON-lines file (told apart by the first non-blank character, `[` for a list).

    `fields` renames source fields to canonical names (e.g. `{"response": "output"}`; others keep their names);
    `required` lists canonical names that must be present and non-null in every record. `instruction`, `input`,
    `output`, `group` and `dataset` must be strings when present (a null `input` reads as ""), `id` a string or
    an integer.
    """
    return [record for _, record in _located_records(path, fields, required)]


def _squad_document(path: PathLike) -> Any:
    """The parsed document when `path` holds one SQuAD-layout JSON object (`{"data": [...]}`), else None."""
    text = read_text(path).lstrip()
    if not text.startswith("{"):
        return None
    try:
        document = json.loads(text)
    except JSON_DECODE_ERRORS:
        return None  # JSON lines
    return document if isinstance(document, dict) and "data" in document else None


def read_instruction_records(path: PathLike, fields: Mapping[str, str] | None = None,
                             required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Alpaca-style records from a JSON-list / JSON-lines file (`read_records`), or from a SQuAD-layout QA file
    (XQuAD, MLQA): one record per question, `{id, instruction: question, input: context, output: first answer,
    group: "article:N"}`. XQuAD's files are parallel (same ids and article order in every language), so two of
    them join by id into PLUG data; `group` keeps every question about one article in the same split."""
    document = _squad_document(path)
    if document is None:
        return read_records(path, fields, required)
    return [{"id": r["id"], "instruction": r["question"], "input": r["context"], "output": r["answers"][0],
             "group": f"article:{r['article']}"} for r in read_squad(path, document) if r["answers"]]


def in_validation_split(key: str, fraction: float) -> bool:
    """Whether the item with this key is held out at `fraction`: a stable hash, so the same item lands in the
    same split in every run, for training (`data.validation_fraction`) and evaluation (`held_out_fraction`)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


# ---------------------------------------------------------------------------------------------------------------
# Parallel text: (line_index, source, target), line_index 0-based over every line, empty pairs skipped

def _require_pairs(pairs: list[tuple[int, str, str]], *paths: PathLike) -> list[tuple[int, str, str]]:
    if not pairs:
        raise DataError(f"{' and '.join(map(str, paths))}: no non-empty sentence pairs")
    return pairs


def read_parallel(source_path: PathLike, target_path: PathLike) -> list[tuple[int, str, str]]:
    """Pairs of two line-aligned files, stripped; `line_index` also counts the skipped empty pairs.

    x-LLaMA rotates its translation templates by this index, so skipping must not renumber the pairs.
    """
    sources, targets = text_lines(source_path), text_lines(target_path)
    if len(sources) != len(targets):
        raise DataError(f"misaligned parallel files: {source_path} has {len(sources)} lines but {target_path} has "
                        f"{len(targets)}")
    pairs = [(index, source.strip(), target.strip()) for index, (source, target) in enumerate(zip(sources, targets))
             if source.strip() and target.strip()]
    return _require_pairs(pairs, source_path, target_path)


def flores_path(directory: PathLike, code: str, split: str = "devtest") -> Path:
    """The FLORES-200 file `{flores_code}.{split}` of a language given by ISO (`es`) or FLORES (`spa_Latn`) code."""
    path = Path(directory) / f"{FLORES_CODES.get(code, code)}.{split}"
    if not path.is_file():
        available = sorted(p.name for p in Path(directory).glob(f"*.{split}"))
        raise FileNotFoundError(f"no FLORES file for {code!r}: {path} does not exist (found: {available})")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Evaluation sets

def _get(obj: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type_name(obj)}")
    if key not in obj:
        raise DataError(f"{where}: missing field {key!r}")
    if not isinstance(obj[key], kind):
        raise DataError(f"{where}: field {key!r} should be a {kind.__name__}, got {type_name(obj[key])}")
    return obj[key]


def read_squad(path: PathLike, document: Any = None) -> list[dict[str, Any]]:
    """SQuAD-v1.1-layout QA (SQuAD, XQuAD, MLQA): one `{id, context, question, answers: [text, ...], article}` per
    question (`article`: the 0-based index of its article in the file).

    Errors name the position as a JSON path (e.g. `data[3].paragraphs[0].qas[2]`). `document`: the file's
    content when the caller has already parsed it.
    """
    document = read_json(path) if document is None else document
    examples = []
    for a, article in enumerate(_get(document, "data", list, f"{path}")):
        for p, paragraph in enumerate(_get(article, "paragraphs", list, f"{path}: data[{a}]")):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = _get(paragraph, "context", str, where)
            for q, qa in enumerate(_get(paragraph, "qas", list, where)):
                qa_where = f"{where}.qas[{q}]"
                answers = [_get(answer, "text", str, f"{qa_where}.answers[{n}]")
                           for n, answer in enumerate(_get(qa, "answers", list, qa_where))]
                examples.append({"id": _get(qa, "id", str, qa_where), "context": context,
                                 "question": _get(qa, "question", str, qa_where), "answers": answers, "article": a})
    if not examples:
        raise DataError(f"{path}: no questions")
    return examples


def read_alpaca_eval(path: PathLike) -> list[dict[str, Any]]:
    """AlpacaEval / X-AlpacaEval records (`id`, `dataset`, `instruction`, any other fields kept).

    The English AlpacaEval file has no `id`; its records get their 1-based position, which is how X-AlpacaEval
    numbers the same instructions. A file where only some records have an `id` is an error.
    """
    located = _located_records(path, None, ("instruction",))
    with_id = [where for where, record in located if "id" in record]
    if not with_id:
        return [{"id": number, **record} for number, (_, record) in enumerate(located, 1)]
    if len(with_id) != len(located):
        where = next(where for where, record in located if "id" not in record)
        raise DataError(f"{where}: missing field 'id' (other records of the file have one)")
    seen: dict[Any, str] = {}
    for where, record in located:
        if record["id"] in seen:
            raise DataError(f"{where}: duplicate id {record['id']!r} (first at {seen[record['id']]})")
        seen[record["id"]] = where
    return [record for _, record in located]


def read_mgsm(path: PathLike) -> list[dict[str, str]]:
    """MGSM TSV without header: `{question, answer}` per row (the answer is the numeric string as written)."""
    rows = []
    for number, line in enumerate(text_lines(path), 1):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != 2:
            raise DataError(f"{path}: line {number}: expected 2 tab-separated columns (question, answer), "
                            f"got {len(cells)}")
        question, answer = (cell.strip() for cell in cells)
        for field, value in (("question", question), ("answer", answer)):
            if not value:
                raise DataError(f"{path}: line {number}: empty field {field!r}")
        rows.append({"question": question, "answer": answer})
    if not rows:
        raise DataError(f"{path}: file is empty")
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Joining a pivot-language file with its translation (PLUG)

@dataclasses.dataclass(frozen=True)
class JoinResult:
    """Records joined by id, in pivot order, and the ids found on one side only (translation drops some)."""

    pairs: list[tuple[dict[str, Any], dict[str, Any]]]
    pivot_only: list[str]
    target_only: list[str]


def _by_id(records: Sequence[Mapping[str, Any]], id_field: str, side: str) -> dict[str, Mapping[str, Any]]:
    index: dict[str, Mapping[str, Any]] = {}
    for number, record in enumerate(records, 1):
        if record.get(id_field) is None:
            raise DataError(f"{side} record {number}: missing field {id_field!r}")
        key = str(record[id_field])
        if key in index:
            raise DataError(f"{side} record {number}: duplicate {id_field} {key!r}")
        index[key] = record
    return index


def join_by_id(pivot_records: Sequence[Mapping[str, Any]], target_records: Sequence[Mapping[str, Any]],
               id_field: str = "id") -> JoinResult:
    """Pair each pivot record with the target record of the same id (ids compared as strings).

    Ids present on one side only are returned, not raised: translation pipelines drop the records they fail on,
    so the caller decides how many losses are acceptable. A missing or duplicate id is a `DataError`.
    """
    pivots, targets = _by_id(pivot_records, id_field, "pivot"), _by_id(target_records, id_field, "target")
    pairs = [(dict(pivot), dict(targets[key])) for key, pivot in pivots.items() if key in targets]
    return JoinResult(pairs, [key for key in pivots if key not in targets],
                      [key for key in targets if key not in pivots])
