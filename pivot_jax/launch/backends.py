"""The sweep backends by name, each built from `--parallel` and its `--backend_option KEY=VALUE` options.

    executor = make_executor("local", slots=2, options={})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pivot_jax.errors import ConfigError
from pivot_jax.launch.job import Executor
from pivot_jax.launch.local import LocalExecutor
from pivot_jax.launch.slurm import make_slurm_executor
from pivot_jax.launch.tpu_executor import TpuExecutor


def _local(slots: int, options: Mapping[str, str]) -> Executor:
    if options:
        raise ConfigError(f"--backend local takes no --backend_option, got {sorted(options)}")
    return LocalExecutor(slots)


BACKENDS: dict[str, Callable[[int, Mapping[str, str]], Executor]] = {"local": _local, "slurm": make_slurm_executor,
                                                                   "tpu": TpuExecutor}


def make_executor(backend: str, slots: int, options: Mapping[str, str] | None = None) -> Executor:
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    return BACKENDS[backend](slots, dict(options or {}))


def parse_options(items: list[str]) -> dict[str, str]:
    """`["partition=gpu", "gpus_per_node=8"]` -> a dict; an item without `=` is an error naming it."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--backend_option {item!r}: expected KEY=VALUE")
        options[key.strip()] = value
    return options
