"""The results index: one JSON line per metric of every evaluation, what `evaluate` and the trainer's evaluation
hook append and what reports (and the scaling-law tools) read.

    {"run": "run:runs/coit_es", "metric": "chrf++", "value": 41.3, "protocol": "translation/en-es/alpaca/greedy",
     "samples": 1012, "step": null, "tags": {"pairs": "1000"}, "time": "2026-12-01T11:30:00+00:00",
     "set": "translation", "source_lang": "en", "target_lang": "es", "output": "runs/coit_es/eval/flores"}

`run` names the weights evaluated (a model spec, or `WORKDIR@stepN` for the trainer's own evaluations), `step`
the training step of those (null outside a training run), `tags` the point's coordinates given with
`--tag KEY=VALUE` (e.g. the number of translation pairs a scaling-law point was trained on). Lines written
before this schema (the spec as `model`, tags and step at the top level) are read as the same records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pivot_jax.jsonl import Appender, DataError, read_numbered, type_name

FILENAME = "results_index.jsonl"


@dataclasses.dataclass(frozen=True)
class Result:
    """One metric of one evaluation."""

    run: str
    metric: str
    value: float
    protocol: str
    samples: int
    step: int | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    time: str = ""
    set: str = ""
    source_lang: str = ""
    target_lang: str = ""
    output: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, row: Any, where: str) -> Result:
        """The record of one index line; a field of the wrong kind is named with `where` (file and line)."""
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type_name(row)}")
        for key, (kind, check) in _REQUIRED.items():
            if key not in row:
                raise DataError(f"{where}: missing field {key!r} ({kind})")
            _check(row, key, kind, check, where)
        for key in _TEXT:
            if row.get(key) is not None:
                _check(row, key, "a string", _is_str, where)
        step = row.get("step")
        if step is not None and not (_is_int(step) and step >= 0 or _is_str(step) and step.isascii() and step.isdigit()):
            raise DataError(f"{where}: field 'step' should be a non-negative integer (or its digits as a string), got {step!r}")
        legacy = "tags" not in row and "run" not in row  # tags were top-level fields, the spec was `model`
        tags = ({k: v for k, v in row.items() if k not in _KNOWN} if legacy else row.get("tags") or {})
        if not isinstance(tags, dict) or not all(isinstance(v, (str, int, float)) for v in tags.values()):
            raise DataError(f"{where}: field 'tags' should map names to strings, got {tags!r}")
        return cls(run=row.get("run") or row.get("model") or "", metric=row["metric"], value=float(row["value"]),
                   protocol=row["protocol"], samples=row["samples"], step=None if step is None else int(step),
                   tags={k: str(v) for k, v in tags.items()},
                   **{key: row.get(key) or "" for key in ("time", "set", "source_lang", "target_lang", "output")})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _check(row: dict[str, Any], key: str, kind: str, check: Any, where: str) -> None:
    if not check(row[key]):
        raise DataError(f"{where}: field {key!r} should be {kind}, got {type_name(row[key])}")


_REQUIRED = {"metric": ("a string", _is_str), "protocol": ("a string", _is_str),
             "value": ("a number", lambda v: _is_int(v) or isinstance(v, float)), "samples": ("an integer", _is_int)}
_TEXT = ("run", "model", "time", "set", "source_lang", "target_lang", "output")
_KNOWN = {field.name for field in dataclasses.fields(Result)} | {"model"}


def append_results(index: Path, results: Iterable[Result]) -> None:
    """Add `results` to the index at `index` (a line cut short by an earlier kill is repaired first)."""
    with Appender(index) as f:
        for result in results:
            f.write(result.to_json())


def read_results(index: Path) -> list[Result]:
    """Every record of the index, in the order written; a last line cut short by a kill is ignored."""
    return [Result.from_json(row, f"{index}: line {number}") for number, row in read_numbered(index, torn_tail_ok=True)]


def read_training_results(index: Path) -> dict[int, dict[str, Result]]:
    """{step: {metric: result}} of a training run's evaluations (WORKDIR/results_index.jsonl); a later record of
    a step's metric replaces an earlier one, as when a resumed run evaluates the same step again."""
    by_step: dict[int, dict[str, Result]] = {}
    for number, row in read_numbered(index, torn_tail_ok=True):
        if isinstance(row, dict) and row.get("step") is None:
            raise DataError(f"{index}: line {number}: a line without 'step' ({row.get('metric')!r}); reports read "
                            "the trainer's generation evaluations")
        result = Result.from_json(row, f"{index}: line {number}")
        by_step.setdefault(result.step, {})[result.metric] = result
    return by_step
