"""The `local` backend: points as processes of this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

from etils import epath

from pivot_jax.launch.job import JobState
from pivot_jax.paths import is_url


class LocalExecutor:
    """Points as child processes of this machine, `slots` at a time. A job id is `PID:START` (the process start
    time from /proc), so a later sweep command recognises its processes and never a recycled PID."""

    name = "local"

    def __init__(self, slots: int = 1):
        self.slots = max(1, slots)
        self._children: dict[str, subprocess.Popen] = {}

    def submit(self, name: str, command: Sequence[str], log: epath.Path, env: Mapping[str, str]) -> str:
        log.parent.mkdir(parents=True, exist_ok=True)
        if is_url(log):  # an object cannot be a process's stdout: a relay appends the output there
            process = subprocess.Popen([sys.executable, "-m", "pivot_jax.launch.relay", os.fspath(log), "--",
                                        *command], env=dict(env), start_new_session=True)
        else:
            with open(log, "ab") as out:  # the child inherits the descriptor; appended across attempts
                process = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT, env=dict(env),
                                           start_new_session=True)  # a Ctrl-C of the sweep leaves points running
        job = f"{process.pid}:{_start_time(process.pid)}"
        self._children[job] = process
        return job

    def poll(self, job: str) -> JobState:
        if job in self._children:
            code = self._children[job].poll()
            return JobState(code is None, code)
        pid, _, start = job.partition(":")
        alive = _start_time(int(pid)) == start  # a process of an earlier sweep command: alive, or gone
        return JobState(alive, None)

    def cancel(self, job: str) -> None:
        if self.poll(job).running:
            os.killpg(int(job.partition(":")[0]), signal.SIGTERM)  # the trainer saves and exits 75


def _start_time(pid: int) -> str:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot), or "" when no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            stat = f.read()
    except OSError:
        return ""
    fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces
    return "" if fields[0] == "Z" else fields[19]
