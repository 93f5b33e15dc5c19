"""What every benchmark script shares: the machine line, the printed table, and the `--json FILE` result that
`benchmarks/run.py` collects (one script per process, so each gets a fresh JAX and its own XLA flags).

A result file is `{"benchmark": NAME, "machine": LINE, "rows": [{COLUMN: VALUE}, ...], "notes": [LINE, ...]}`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """Where the figures were measured: CPU, cores, memory, and the accelerator JAX sees."""
    import jax

    memory = ""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages * page_size / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    device = jax.devices()[0]
    return (f"{cpu_model()}, {os.cpu_count()} cores{memory}; jax {jax.__version__} on {device.platform} "
            f"({device.device_kind}) x{jax.device_count()}")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file (run.py)")


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table (it reads in a terminal and pastes into a README)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def report(name: str, rows: list[dict[str, Any]], notes: Sequence[str] = (), json_path: Path | None = None,
           columns: Sequence[str] | None = None) -> None:
    """Print the machine, the table and its notes; write the result file when asked."""
    machine = machine_line()
    print(f"\n## {name}\nmachine: {machine}\n\n{format_table(rows, columns)}")
    for note in notes:
        print(f"  {note}")
    if json_path is not None:
        json_path.write_text(json.dumps({"benchmark": name, "machine": machine, "rows": rows,
                                         "notes": list(notes)}, indent=1) + "\n")
