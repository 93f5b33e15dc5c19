"""Multi-host setup shared by every command that runs a model (train, evaluate, generate).

    define_flags()          # --coordinator_address --num_processes --process_id and the three timeouts (absl)
    initialize_from_flags(flags.FLAGS)
    initialize(coordinator, num_processes, process_id, init_timeout_s=300, heartbeat_timeout_s=60)

Explicit coordinator flags win; otherwise JAX's auto-detection runs on TPU VM pods and multi-task SLURM jobs,
and a single process stays single.

Failure behaviour, bounded in time:
- The job does not assemble within `init_timeout_s` (a process never started, a wrong address, a firewall):
  every waiting process prints `error: ...` naming the coordinator address and which processes it waited for,
  and exits with status 1.
- A process dies after joining: JAX's coordination service (in process 0) misses its heartbeats for
  `heartbeat_timeout_s` and every other process aborts (SIGABRT, status 134 in a shell) with JAX's log line
  `... absl::Status: UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats): <ids>`;
  if process 0 itself died the others abort at once with `... Either the leader task was preempted/died ...`.
  That abort is JAX's own: the hook that would let Python handle it (`missed_heartbeat_callback`) fails
  inside jaxlib 0.10.2 (std::bad_cast), so the abort's log line is what names the lost process.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from typing import Any

import jax
from absl import flags

log = logging.getLogger(__name__)

INIT_TIMEOUT_EXIT_CODE = 1  # as an error in the user's input: the fix is in how the job was started
# JAX's own initialisation deadline comes this much after ours: its abort names neither the address nor the
# missing processes, so ours must fire first.
_JAX_DEADLINE_MARGIN_S = 10


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               *, init_timeout_s: int = 300, heartbeat_timeout_s: int = 60, shutdown_timeout_s: int = 300) -> None:
    """Join the other processes of the job (no-op for a single process).

    init_timeout_s: how long to wait for every process to join before exiting with an error.
    heartbeat_timeout_s: a process silent this long counts as dead and stops the whole job.
    shutdown_timeout_s: how long a finished process waits at exit for the others to finish too."""
    # Cross-process collectives for CPU runs (multi-process tests); accelerators ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # A TPU pod names several workers; one name (a single-host VM, or libtpu's compile-only setup for AOT
    # planning in this process) is no multi-host job.
    pod = "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if not coordinator and not pod and int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    timeouts = dict(initialization_timeout=init_timeout_s + _JAX_DEADLINE_MARGIN_S,
                    heartbeat_timeout_seconds=heartbeat_timeout_s, shutdown_timeout_seconds=shutdown_timeout_s)
    # `jax.distributed.initialize` blocks in C++ with the GIL released, so a timer thread can still speak.
    watchdog = threading.Timer(init_timeout_s, _exit_not_assembled,
                               (coordinator, num_processes, process_id, init_timeout_s))
    watchdog.daemon = True
    watchdog.start()
    try:
        if coordinator:
            jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                       process_id=process_id, **timeouts)
        else:
            jax.distributed.initialize(**timeouts)
    finally:
        watchdog.cancel()
    log.info("joined the multi-host job; a process silent for %d s stops every process (JAX then logs "
             "'The following tasks are unhealthy (stopped sending heartbeats): <process ids>')", heartbeat_timeout_s)


def initialize_from_flags(f: Any) -> None:
    """`initialize` with the flags of `define_flags`: every command joins a job the same way."""
    initialize(f.coordinator_address, f.num_processes, f.process_id, init_timeout_s=f.init_timeout_s,
               heartbeat_timeout_s=f.heartbeat_timeout_s, shutdown_timeout_s=f.shutdown_timeout_s)


def define_flags() -> None:
    """The multi-host flags of the absl-flag commands."""
    flags.DEFINE_string("coordinator_address", None, "multi-host: HOST:PORT of process 0 (else auto-detect)")
    flags.DEFINE_integer("num_processes", None, "multi-host: number of processes")
    flags.DEFINE_integer("process_id", None, "multi-host: this process's index")
    flags.DEFINE_integer("init_timeout_s", 300, "multi-host: seconds to wait for every process to join",
                         lower_bound=1)
    flags.DEFINE_integer("heartbeat_timeout_s", 60, "multi-host: a process silent this long stops the job",
                         lower_bound=1)
    flags.DEFINE_integer("shutdown_timeout_s", 300, "multi-host: seconds a finished process waits for the others",
                         lower_bound=1)


def _exit_not_assembled(coordinator: str | None, num_processes: int | None, process_id: int | None,
                        timeout_s: int) -> None:
    """Say which processes were missing and where, then end this process (the main thread is stuck in C++)."""
    if not coordinator:
        problem = f"the auto-detected multi-host job (TPU pod or SLURM) did not assemble within {timeout_s} s"
        hint = "check that every host or task of the job started this command"
    elif process_id == 0:
        missing = "process 1" if num_processes == 2 else f"at least one of processes 1-{num_processes - 1}"
        problem = (f"process 0 of {num_processes} waited {timeout_s} s at coordinator {coordinator}: "
                   f"{missing} did not join")
        hint = (f"start every process with --coordinator_address={coordinator} --num_processes={num_processes} and "
                "its own --process_id, on hosts that can reach this address")
    elif _reachable(coordinator):
        problem = (f"process {process_id} of {num_processes} reached coordinator {coordinator}, but not every process "
                   f"joined within {timeout_s} s")
        hint = f"start every process with --num_processes={num_processes} and its own --process_id"
    else:
        problem = (f"process {process_id} of {num_processes} could not reach coordinator {coordinator} within "
                   f"{timeout_s} s: process 0, which runs it, is missing (or the address is wrong or blocked)")
        hint = "start process 0 with the same --coordinator_address, on the host that address names"
    print(f"error: {problem}\nhint: {hint}", file=sys.stderr, flush=True)
    os._exit(INIT_TIMEOUT_EXIT_CODE)


def _reachable(address: str) -> bool:
    """Whether something listens at HOST:PORT (is the coordinator up, or is the address wrong?)."""
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
        return True
    except OSError:
        return False
