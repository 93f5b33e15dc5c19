"""One process per worker (a `gcloud ... ssh --worker=i`), all at once: each one's output streams into its own
log file, one worker's also onto the terminal; the first to fail stops the others (fail fast), so a pod slice
never hangs with seven workers waiting in a collective for the eighth that died.

    result = run_workers([ssh_command(s, i, cmd) for i in range(s.tpu.hosts)], logdir, "worker", stop=stop_all)
    if result.failed is not None: ...   # result.codes[result.failed], result.logs[result.failed]
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("pivot_jax.launch")

GRACE_S = 5.0  # after SIGTERM, how long a stopped worker's ssh gets before SIGKILL


@dataclasses.dataclass
class WorkersResult:
    codes: list[int | None]  # None: stopped because another worker failed
    logs: list[Path]
    failed: int | None = None  # the first worker that exited non-zero

    @property
    def ok(self) -> bool:
        return self.failed is None


def run_workers(commands: Sequence[Sequence[str]], logdir: Path, label: str = "worker", show: int | None = 0,
                stop: Callable[[], None] | None = None, poll_s: float = 0.1, header: str = "") -> WorkersResult:
    """Run `commands[i]` for worker i, output appended to LOGDIR/LABEL-i.log (after `header`, when given) and
    worker `show`'s also printed. When one exits non-zero: terminate the others' processes, call `stop()` (which
    should stop the remote side too), and return with `failed` set. Ctrl-C does the same, then re-raises."""
    logdir.mkdir(parents=True, exist_ok=True)
    logs = [logdir / f"{label}-{i}.log" for i in range(len(commands))]
    files = [open(path, "ab") for path in logs]
    processes: list[subprocess.Popen] = []
    threads = []
    try:
        for i, argv in enumerate(commands):
            if header:
                files[i].write(f"=== {header}\n".encode())
                files[i].flush()
            log.info("%s %d: $ %s", label, i, shlex.join(argv))
            # Its own session: stopping it reaches gcloud's ssh child too (killpg), and a Ctrl-C on the terminal
            # reaches only us, so that we stop the workers in order.
            process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
            processes.append(process)
            thread = threading.Thread(target=_copy, args=(process.stdout, files[i], i == show), daemon=True)
            thread.start()
            threads.append(thread)
        codes: list[int | None] = [None] * len(processes)
        failed = None
        while failed is None and any(c is None for c in codes):
            for i, process in enumerate(processes):
                if codes[i] is None and (code := process.poll()) is not None:
                    codes[i] = code
                    if code and failed is None:
                        failed = i
            if failed is None:
                time.sleep(poll_s)
        if failed is not None:
            log.error("%s %d failed (exit status %d); stopping the others", label, failed, codes[failed])
            _terminate([p for i, p in enumerate(processes) if codes[i] is None])
            if stop is not None:
                stop()
        for thread in threads:
            thread.join(timeout=GRACE_S)
        return WorkersResult(codes, logs, failed)
    except KeyboardInterrupt:
        log.warning("interrupted: stopping the workers")
        _terminate([p for p in processes if p.poll() is None])
        if stop is not None:
            stop()
        raise
    finally:
        for f in files:
            f.close()


def _copy(stream: BinaryIO, out: BinaryIO, echo: bool) -> None:
    for line in iter(stream.readline, b""):
        out.write(line)
        out.flush()
        if echo:
            sys.stdout.write(line.decode(errors="replace"))
            sys.stdout.flush()


def _terminate(processes: Sequence[subprocess.Popen]) -> None:
    """SIGTERM to each process group, SIGKILL to those still there after GRACE_S."""
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
