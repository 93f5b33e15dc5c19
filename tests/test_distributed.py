"""Multi-host setup: a single process stays single; the two-process runs are in test_train / test_evaluate /
test_preemption (real `jax.distributed` over gloo)."""

import jax
import pytest

from pivot_jax import distributed


def test_single_process_is_left_alone(monkeypatch):
    for name in ("TPU_WORKER_HOSTNAMES", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "1")  # a one-task SLURM job is one process
    distributed.initialize()
    assert jax.process_count() == 1 and jax.process_index() == 0


def test_one_tpu_worker_name_is_no_multi_host_job(monkeypatch):
    """A single-host TPU VM, or libtpu's compile-only setup for AOT planning in this process, names one worker:
    no job to join (a pod names several)."""
    def refuse(*args, **kwargs):
        raise AssertionError("jax.distributed.initialize called for a single worker")

    monkeypatch.setattr(jax.distributed, "initialize", refuse)
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    distributed.initialize()
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.2,10.0.0.3")
    with pytest.raises(AssertionError, match="single worker"):
        distributed.initialize(init_timeout_s=30)
