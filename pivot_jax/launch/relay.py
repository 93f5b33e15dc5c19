"""A command's output appended to its log, also where the log is on an object store (gs://): no process can hold
an object open for appending, so the output comes through a pipe and the object is rewritten every `flush_s`
seconds (and at the end). A local log is the command's own stdout, as before.

    code = run_logged(["python", "-m", "pivot_jax.train", ...], "gs://b/sweep/points/p/train.log")
    python -m pivot_jax.launch.relay gs://b/sweep/points/p/train.log -- python -m pivot_jax.train ...

The relay ignores SIGTERM and SIGINT: they reach the command too (same process group), which saves and exits;
the relay keeps its output and exits with its exit code (128 + N when a signal N ended it).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from pivot_jax.paths import AppendFile, PathLike, as_path, is_url

_CHUNK = 1 << 16


def run_logged(command: Sequence[str], log: PathLike | None, env: Mapping[str, str] | None = None,
               flush_s: float = 10.0) -> int:
    """Run `command` with stdout and stderr appended to `log` (None: this process's own); its exit code."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        # A handler, not SIG_IGN: an ignored signal stays ignored in the command (exec keeps it), and the trainer
        # must see its SIGTERM.
        signal.signal(sig, _wait_for_the_command)
    env = dict(os.environ if env is None else env)
    if log is None:
        return _exit_code(subprocess.call(list(command), env=env))
    path = as_path(log)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not is_url(path):
        with open(path, "ab") as out:
            return _exit_code(subprocess.call(list(command), stdout=out, stderr=subprocess.STDOUT, env=env))
    out = AppendFile(path)
    process = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    fd, last = process.stdout.fileno(), time.monotonic()
    try:
        while True:
            # Output waiting longer than flush_s is saved even when the command then stays quiet for a while.
            if select.select([fd], [], [], max(0.0, last + flush_s - time.monotonic()))[0]:
                chunk = os.read(fd, _CHUNK)
                if not chunk:
                    break
                out.write(chunk)
            if time.monotonic() - last >= flush_s:
                out.flush()
                last = time.monotonic()
    finally:
        out.close()
    return _exit_code(process.wait())


def _wait_for_the_command(signum: int, frame: object) -> None:
    del signum, frame


def _exit_code(code: int) -> int:
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell reports it


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: python -m pivot_jax.launch.relay LOG -- COMMAND ...")
    sys.exit(run_logged(sys.argv[3:], sys.argv[1]))
