"""A results file as points to fit: the rows of one metric, grouped (by language), x and y as float arrays.

    groups = read_points("sweeps/xllama/results.csv", metric="chrf++", x="amount", group_by="language")
    groups["es"].x, groups["es"].y        # amounts > 0 and their values, one point per row (seeds apart)
    groups["es"].baseline                 # the values at amount 0: the no-translation baseline, plotted only

The file is what `python -m pivot_jax.sweep collect DIR` writes (DIR/results.csv or DIR/results.jsonl, or DIR
itself), or any CSV / JSON-lines file with the columns named: the x column, the group column, `metric` and
`value`. Every problem is an error naming the file, the line, the column and the value.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pivot_jax.jsonl import parse_lines, read_text, type_name
from pivot_jax.paths import PathLike, as_path
from pivot_jax.scaling import ScalingError

METRIC, VALUE = "metric", "value"
# The files of a `sweep collect` directory, the first one present read.
COLLECTED = ("results.jsonl", "results.csv")
# The group of every row when there is no group column (`--group_by ""`).
ALL = "all"


@dataclass(frozen=True)
class Row:
    """One row of a results file and where it is (`file: line N`)."""

    where: str
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Points:
    """One group's points: amounts x > 0 with their values y (a point per row), the amount-0 baseline apart."""

    group: str
    x: np.ndarray
    y: np.ndarray
    baseline: np.ndarray

    @property
    def n_amounts(self) -> int:
        return len(np.unique(self.x))


def results_file(path: PathLike) -> str:
    """`path`, or the collected results file inside it when it is a directory."""
    path = as_path(path)
    if path.is_dir():
        for name in COLLECTED:
            if (path / name).exists():
                return str(path / name)
        raise ScalingError(f"{path}: a directory without {' or '.join(COLLECTED)} (run `pivot_jax.sweep collect`)")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such results file")
    return str(path)


def read_rows(path: PathLike) -> list[Row]:
    """The rows of a CSV file (header first) or a JSON-lines file (one object a line, `.jsonl`, or any file whose
    first text is `{`)."""
    path = results_file(path)
    text = read_text(path)
    if path.endswith(".jsonl") or text.lstrip().startswith("{"):
        rows = []
        for line, record in parse_lines(text, path, "one JSON object per line"):
            if not isinstance(record, dict):
                raise ScalingError(f"{path}: line {line}: expected a JSON object, got {type_name(record)}")
            rows.append(Row(f"{path}: line {line}", record))
        return rows
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    for record in reader:
        if None in record:  # more fields than the header has names
            raise ScalingError(f"{path}: line {reader.line_num}: more fields than the header's {reader.fieldnames}")
        rows.append(Row(f"{path}: line {reader.line_num}", record))
    return rows


def number(row: Row, column: str) -> float:
    """The finite number in `column` of `row` (a JSON number, or its text in a CSV)."""
    value = row.values.get(column)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
    elif isinstance(value, str) and value.strip():
        try:
            result = float(value)
        except ValueError:
            raise ScalingError(f"{row.where}: column {column!r}: {value!r} is not a number") from None
    else:
        raise ScalingError(f"{row.where}: column {column!r}: expected a number, got {value!r}")
    if not math.isfinite(result):
        raise ScalingError(f"{row.where}: column {column!r}: {value!r} is not a finite number")
    return result


def read_points(path: PathLike, metric: str, x: str = "amount", group_by: str = "language") -> dict[str, Points]:
    """The points of `metric` in the results file `path`, by the value of `group_by` ("" for one group, "all").

    Amount 0 is the baseline (kept apart, never fitted); a negative amount, a non-finite value, a missing column
    or a metric with no rows is an error."""
    path = results_file(path)
    rows = read_rows(path)
    if not rows:
        raise ScalingError(f"{path}: no rows")
    columns = set().union(*(row.values for row in rows))
    needed = [c for c in (METRIC, VALUE, x, group_by) if c]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ScalingError(f"{path}: no column {', '.join(map(repr, missing))} (columns: {', '.join(sorted(columns))})",
                           hint="--x and --group_by name the columns to use")
    selected = [row for row in rows if str(row.values.get(METRIC)) == metric]
    if not selected:
        present = sorted({str(row.values.get(METRIC)) for row in rows})
        raise ScalingError(f"{path}: no rows with metric {metric!r} (metrics present: {', '.join(present)})")
    by_group: dict[str, list[tuple[float, float]]] = {}
    for row in selected:
        group = ALL if not group_by else row.values.get(group_by)
        if group is None or str(group).strip() == "":
            raise ScalingError(f"{row.where}: column {group_by!r} is empty")
        amount, value = number(row, x), number(row, VALUE)
        if amount < 0:
            raise ScalingError(f"{row.where}: column {x!r}: {amount!r} is negative")
        by_group.setdefault(str(group), []).append((amount, value))
    out = {}
    for group, pairs in sorted(by_group.items()):
        xs, ys = np.array(pairs).T
        out[group] = Points(group, xs[xs > 0], ys[xs > 0], ys[xs == 0])
    return out
