"""Multi-host setup shared by every command that runs a model (train, evaluate, generate).

    define_flags()                      # --coordinator_address, --num_processes, --process_id (absl commands)
    initialize(coordinator, num_processes, process_id)

Explicit coordinator flags win; otherwise JAX's auto-detection runs on TPU VM pods and multi-task SLURM jobs,
and a single process stays single.
"""

from __future__ import annotations

import os

import jax
from absl import flags


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join the other processes of the job (no-op for a single process)."""
    # Cross-process collectives for CPU runs (multi-process tests); accelerators ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    elif "TPU_WORKER_HOSTNAMES" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()


def define_flags() -> None:
    """The multi-host flags of the absl-flag commands."""
    flags.DEFINE_string("coordinator_address", None, "multi-host: HOST:PORT of process 0 (else auto-detect)")
    flags.DEFINE_integer("num_processes", None, "multi-host: number of processes")
    flags.DEFINE_integer("process_id", None, "multi-host: this process's index")
