"""Reading the user's text and JSON files, and the one reader and appender of JSON-lines files.

  records = read_jsonl(path)                          # [] while the file does not exist
  done = read_numbered(path, torn_tail_ok=True)       # (line number, record), for a run that resumes
  with Appender(path) as out: out.write(record)

Text is UTF-8 (a leading BOM is ignored) and JSON lines are split on "\\n" only: `str.splitlines()` would also
split on U+2028, U+2029, U+0085 and other characters that `json.dumps(..., ensure_ascii=False)` leaves inside
strings, cutting a record in two. A file appended record by record may end in a line without its "\\n": a
complete record (kept) or a write cut short, a "torn tail" (ignored by readers that resume, cut by `Appender`
before it appends). Any other line that is not JSON is a `DataError` naming the file and the line.
"""

from __future__ import annotations

import json
from typing import Any

from pivot_jax.errors import PivotError
from pivot_jax.paths import AppendFile, PathLike, as_path

# What `json` raises on text it cannot decode: JSONDecodeError (a ValueError), ValueError for an integer over
# Python's digit limit, RecursionError for nesting deeper than the stack.
JSON_DECODE_ERRORS = (ValueError, RecursionError)


class DataError(PivotError, ValueError):
    """A data file whose content does not have the expected layout."""


def read_text(path: PathLike) -> str:
    """The file's text: UTF-8, a leading BOM dropped, line ends as written (no newline translation)."""
    return _decode(as_path(path).read_bytes(), path)


def _decode(data: bytes, path: PathLike) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None


def text_lines(path: PathLike) -> list[str]:
    """The file's lines, split on "\\n" only; the final "\\n" ends the last line, it does not start a new one."""
    lines = read_text(path).split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def type_name(value: Any) -> str:
    """A decoded JSON value's type as errors name it: null, bool, int, float, str, list or dict."""
    return "null" if value is None else type(value).__name__


def invalid_json(path: PathLike, line: int, error: ValueError | RecursionError, expected: str = "") -> DataError:
    """The error for JSON that `json` could not decode at `line` of `path`."""
    if isinstance(error, json.JSONDecodeError):
        detail = f"{error.msg}, column {error.colno}"
    elif isinstance(error, RecursionError):
        detail = "nested too deeply"
    else:
        detail = str(error)
    return DataError(f"{path}: line {line}: invalid JSON ({detail})" + (f"; expected {expected}" if expected else ""))


def read_json(path: PathLike) -> Any:
    """The one JSON document in a file (a config, a SQuAD-layout set)."""
    text = read_text(path)
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    try:
        return json.loads(text)
    except JSON_DECODE_ERRORS as e:
        raise invalid_json(path, getattr(e, "lineno", 1), e) from None


def parse_lines(text: str, path: PathLike, expected: str = "") -> list[tuple[int, Any]]:
    """(1-based line number, value) of each non-blank line of JSON-lines `text`, the content of `path`; a line
    that is not JSON is an error that says `expected`."""
    values = []
    for number, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                values.append((number, json.loads(line)))
            except JSON_DECODE_ERRORS as e:
                raise invalid_json(path, number, e, expected) from None
    return values


def read_numbered(path: PathLike, *, torn_tail_ok: bool = False) -> list[tuple[int, Any]]:
    """(line number, record) of a JSON-lines file that is appended to ([] while it does not exist).

    `torn_tail_ok`: a last line without "\\n" that is not JSON (nor UTF-8) is a write cut short and is left out,
    as a run that resumes wants; without the flag, or with its newline, such a line is corrupt and an error.
    """
    path = as_path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    if torn_tail_ok:
        data = data[:_complete_end(data)]
    return parse_lines(_decode(data, path), path)


def read_jsonl(path: PathLike, *, torn_tail_ok: bool = False) -> list[Any]:
    """The records of a JSON-lines file that is appended to ([] while it does not exist)."""
    return [record for _, record in read_numbered(path, torn_tail_ok=torn_tail_ok)]


def _complete_end(data: bytes) -> int:
    """Where a JSON-lines file's complete lines end: before a torn last line, else at the end of the file.

    A last line without "\\n" that holds a JSON value is complete (only its newline was not written yet); one
    that is not JSON, or not even UTF-8 (a character cut in two), is a write cut short.
    """
    start = data.rfind(b"\n") + 1
    tail = data[start:]
    try:
        json.loads(tail.decode("utf-8-sig" if start == 0 else "utf-8"))
    except JSON_DECODE_ERRORS:  # UnicodeDecodeError is a ValueError too
        return start if tail.strip() else len(data)
    return len(data)


class Appender:
    """Appends records to a JSON-lines file, one UTF-8 line each (not ASCII-escaped), creating it if needed.

    Opening first ends the file's last line: a complete last record without "\\n" gets it, a torn one is cut,
    so every appended record starts on a line of its own and no complete record is lost.
    """

    def __init__(self, path: PathLike):
        path = as_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _end_last_line(path)
        self._file = AppendFile(path)  # bytes: "\n" is written as is on every platform

    def write(self, record: Any) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _end_last_line(path: PathLike) -> None:
    path = as_path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    end = _complete_end(data)
    if end < len(data):
        path.write_bytes(data[:end])  # rewritten whole: object stores can neither truncate nor append
    elif data and not data.endswith(b"\n"):
        path.write_bytes(data + b"\n")
