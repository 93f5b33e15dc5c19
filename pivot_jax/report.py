"""Side-by-side reports of training runs: generation metrics before and after, and loss curves (Markdown + PNG).

  python -m pivot_jax.report runs/coit_es                                  # one run: its first vs last eval
  python -m pivot_jax.report runs/plug runs/plug_mono --output runs/plug_vs_mono   # runs side by side

A run is a trainer workdir (a directory or a gs:// URL): its generation evaluations come from
WORKDIR/results_index.jsonl, its losses from WORKDIR/metrics.jsonl (`pivot_jax.eval.report`).
"""

from __future__ import annotations

from typing import Any

from absl import app, flags

from pivot_jax.cli import Command
from pivot_jax.eval.report import write_report


def _define_flags() -> None:
    flags.DEFINE_string("output", None, "where report.md / report.png go (default: the only workdir)")
    flags.DEFINE_list("names", None, "comma-separated run names, one per workdir (default: directory names)")


def _report(f: Any, workdir: str, *workdirs: str) -> None:
    workdirs = (workdir, *workdirs)
    if not f.output and len(workdirs) > 1:
        raise app.UsageError("--output is required with several workdirs")
    if f.names and len(f.names) != len(workdirs):
        raise app.UsageError(f"--names gives {len(f.names)} names for {len(workdirs)} workdirs")
    md, png = write_report(workdirs, f.output or workdir, f.names)
    print(md.read_text(encoding="utf-8"))
    print(f"wrote {md} and {png}")


COMMAND = Command("pivot_jax.report", __doc__, _define_flags, _report)
main = COMMAND.main  # the command line in this process (tests)

if __name__ == "__main__":
    COMMAND.cli()
