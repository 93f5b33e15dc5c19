"""Multi-host robustness with two real local processes (`jax.distributed` over localhost): a job that does not
assemble ends with our error naming the coordinator and the missing process; a process that dies after joining
stops the other within a bounded time, and the log names the lost one. Also: train, evaluate and generate join a
job with the same flags."""

import importlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pivot_jax import distributed

REPO = Path(__file__).resolve().parents[1]
HEARTBEAT_S = 3
# Joins the job, says so, then idles: the heartbeats run in JAX's own threads.
CHILD = """
import sys, time
from pivot_jax import distributed
distributed.initialize(sys.argv[1], 2, int(sys.argv[2]), init_timeout_s=int(sys.argv[3]),
                       heartbeat_timeout_s=int(sys.argv[4]))
print("joined", flush=True)
while True:
    time.sleep(0.1)
"""


def _free_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


class _Child:
    """One process of the job, its output read as it comes."""

    def __init__(self, address: str, process_id: int, init_timeout_s: int):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, address, str(process_id), str(init_timeout_s), str(HEARTBEAT_S)],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self._reader.start()

    def wait_joined(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while "joined\n" not in self.lines:
            assert self.proc.poll() is None and time.monotonic() < deadline, self.output
            time.sleep(0.05)

    def finish(self, timeout: float) -> int:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.proc.kill()  # a no-op once it exited; never leave a hung child behind
        self._reader.join(timeout=10)
        return self.proc.returncode

    @property
    def output(self) -> str:
        return "".join(self.lines)


@pytest.mark.slow
@pytest.mark.parametrize("process_id, expected", [
    (0, "error: process 0 of 2 waited 3 s at coordinator {address}: process 1 did not join"),
    (1, "error: process 1 of 2 could not reach coordinator {address} within 3 s: process 0, which runs it, is missing"),
])
def test_a_job_that_does_not_assemble_ends_with_an_error_naming_the_coordinator_and_the_missing_process(
        process_id, expected):
    address = _free_address()
    child = _Child(address, process_id, init_timeout_s=3)
    assert child.finish(timeout=60) == distributed.INIT_TIMEOUT_EXIT_CODE, child.output
    assert expected.format(address=address) in child.output
    assert "hint: start" in child.output and "Traceback" not in child.output
    assert time.monotonic() - child.started < 45  # 3 s of waiting after starting Python and JAX, not JAX's abort


@pytest.mark.slow
@pytest.mark.parametrize("victim, names_the_lost_process", [
    (1, r"stopped sending heartbeats\):\s*1\b"),  # process 0 runs the coordination service: it names the task
    (0, r"the leader task was preempted/died"),  # process 0 is the leader: the others lose the service at once
])
def test_a_dead_process_stops_the_other_within_the_heartbeat_timeout(victim, names_the_lost_process):
    address = _free_address()
    children = [_Child(address, i, init_timeout_s=120) for i in range(2)]
    for child in children:
        child.wait_joined()
    children[victim].proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    survivor = children[1 - victim]
    assert survivor.finish(timeout=60) != 0, survivor.output  # JAX's fatal log aborts it (SIGABRT)
    assert time.monotonic() - killed < 30, survivor.output  # a few heartbeat timeouts at most, not a hang
    assert re.search(names_the_lost_process, survivor.output), survivor.output
    children[victim].finish(timeout=10)


MULTI_HOST_FLAGS = ["--coordinator_address=127.0.0.1:1", "--num_processes=2", "--process_id=1",
                    "--init_timeout_s=7", "--heartbeat_timeout_s=8", "--shutdown_timeout_s=9"]


class _Joined(Exception):
    """Raised by the stand-in for `distributed.initialize`: the command stops right after joining."""


@pytest.mark.parametrize("module, args", [
    ("pivot_jax.train", ["--config", str(REPO / "configs" / "tiny.py"), "--workdir", "{tmp}"]),
    ("pivot_jax.evaluate", ["--config", f"{REPO}/configs/eval/cldr.py:tgt=it,limit=4", "--model", "gguf:none.gguf",
                            "--output", "{tmp}"]),
    ("pivot_jax.generate", ["--model", "gguf:none.gguf", "--prompt", "hello"]),
])
def test_every_command_joins_a_job_with_the_same_flags(module, args, monkeypatch, tmp_path):
    calls = []

    def joined(*args, **kwargs):
        calls.append((args, kwargs))
        raise _Joined

    monkeypatch.setattr(distributed, "initialize", joined)
    command = importlib.import_module(module).COMMAND
    with pytest.raises(_Joined):
        command.main([arg.format(tmp=tmp_path) for arg in args] + MULTI_HOST_FLAGS)
    assert calls == [(("127.0.0.1:1", 2, 1), dict(init_timeout_s=7, heartbeat_timeout_s=8, shutdown_timeout_s=9))]
