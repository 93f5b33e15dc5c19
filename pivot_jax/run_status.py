"""WORKDIR/status.json: what a run is doing, for people, sweeps and launchers deciding whether to run it again.

    {"state": "running" | "preempted" | "failed" | "finished", "step": 120, "time": "2026-12-01T11:30:00+00:00",
     "host": "...", "pid": 1234}    (+ "error" when failed, "signal" when a signal was received)

`preempted` and `failed` runs are unfinished: the same command resumes them from their last checkpoint. The
file is replaced atomically (written beside, then renamed), so a reader never sees half of it.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from typing import Any

from pivot_jax.jsonl import read_json
from pivot_jax.paths import PathLike, as_path, write_text_atomic

STATES = ("running", "preempted", "failed", "finished")
FILENAME = "status.json"


def write_status(workdir: PathLike, state: str, step: int | None, **fields: Any) -> None:
    """Record the run's `state` at `step` (extra `fields`, e.g. error=..., are stored as given)."""
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}; one of {STATES}")
    record = dict(state=state, step=step, time=datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), host=socket.gethostname(), pid=os.getpid(), **fields)
    write_text_atomic(as_path(workdir) / FILENAME, json.dumps(record, indent=2) + "\n")


def read_status(workdir: PathLike) -> dict[str, Any] | None:
    """The last recorded status, or None for a workdir without one."""
    path = as_path(workdir) / FILENAME
    return read_json(path) if path.is_file() else None
