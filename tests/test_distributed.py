"""Multi-host setup: a single process stays single; the two-process runs are in test_train / test_evaluate /
test_preemption (real `jax.distributed` over gloo)."""

import jax

from pivot_jax import distributed


def test_single_process_is_left_alone(monkeypatch):
    for name in ("TPU_WORKER_HOSTNAMES", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "1")  # a one-task SLURM job is one process
    distributed.initialize()
    assert jax.process_count() == 1 and jax.process_index() == 0
