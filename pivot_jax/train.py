"""The trainer: `python -m pivot_jax.train --config configs/FILE.py[:ARGS] --workdir DIR [--config.KEY=VALUE]`.

One jitted `train_step` with explicit shardings over a (data, fsdp, tensor) mesh; parameters and optimizer
state are created already sharded; Orbax checkpoints (periodic, on preemption, at the end) hold the state and
the data position, and a restarted run continues bit-identically. Logs a progress line, `metrics.jsonl` and
TensorBoard events under WORKDIR (a local directory or a gs:// URL). A preempted run saves and exits with
status 75; the same command resumes it.
"""

from __future__ import annotations

from typing import Any

from absl import flags
from ml_collections import config_flags

from pivot_jax import distributed
from pivot_jax.cli import Command
from pivot_jax.preemption import PREEMPTED_EXIT_CODE, Preempted
from pivot_jax.trainer.loop import train


def _define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "config file (configs/FILE.py[:ARGS])", lock_config=True)
    flags.DEFINE_string("workdir", None, "checkpoints, metrics and TensorBoard logs go here (a directory or gs://)")
    distributed.define_flags()
    flags.mark_flags_as_required(["config", "workdir"])


def _train(f: Any) -> None:
    distributed.initialize_from_flags(f)
    try:
        train(f.config, f.workdir)
    except Preempted:
        raise SystemExit(PREEMPTED_EXIT_CODE) from None  # not 0: schedulers and sweeps run it again


COMMAND = Command("pivot_jax.train", __doc__, _define_flags, _train)

if __name__ == "__main__":
    COMMAND.cli()
