"""The one small interface every backend implements, so a sweep runs the same on each.

    job = executor.submit(name, command, log, env)   # a job id the sweep state keeps
    executor.poll(job)                                # JobState(running, returncode or None when not known)
    executor.cancel(job)
    executor.submit_batch([(name, command, log, env), ...])  # optional: several at once (SLURM: one job array)

A job id must survive the sweep command: a restarted sweep polls the jobs its state names and reattaches to
those still running instead of starting them again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Protocol

from etils import epath


@dataclasses.dataclass(frozen=True)
class JobState:
    running: bool
    returncode: int | None = None  # None: ended, but this process did not start it (the point's status.json says)


class Executor(Protocol):
    name: str
    slots: int  # points that may run at once

    def submit(self, name: str, command: Sequence[str], log: epath.Path, env: Mapping[str, str]) -> str: ...

    def poll(self, job: str) -> JobState: ...

    def cancel(self, job: str) -> None: ...
