"""Packed tokens/s of the seqio input pipeline beside the trainer's tokens/s for the same config, same run.

  python benchmarks/data_pipeline.py --config configs/coit.py:lang=es,model=smollm2-135m \\
      --config.data.tokenizer=gguf:SmolLM2-135M-Instruct.Q4_1.gguf [--batches 50] [--train_steps 3]

The pipeline must stay well ahead of the step (ratio >> 1) for the accelerator never to wait on input; each
host runs its own pipeline for its rows, so the figure is per host.
"""

from __future__ import annotations

import os
import platform
import time

import jax


def main(argv: list[str]) -> None:
    from absl import flags, logging

    from pivot_jax.data.tasks import SeqioStream
    from pivot_jax.trainer import loop
    from pivot_jax.trainer.data import global_batch

    logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    config = f.config
    with config.unlocked():
        config.train.epochs = 0.0
        config.train.steps = f.train_steps + 1
        config.model.dtype = "float32"  # bf16 matmuls are emulated on CPU
    s = loop.setup(config)
    rows, seq_len = config.train.global_batch_size, config.train.seq_len
    stream = SeqioStream(s.data_name, "train", seq_len, rows, config.seed, s.bos_id)
    start = time.perf_counter()
    first = next(stream)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(f.batches):
        next(stream)
    pipeline = f.batches * rows * seq_len / (time.perf_counter() - start)

    with s.activate():
        state = s.init_fn()
        state, metrics = s.step_fn(state, global_batch(first, s.batch_sharding))
        jax.block_until_ready(metrics)
        batches = [next(stream) for _ in range(f.train_steps)]
        start = time.perf_counter()
        for batch in batches:
            state, metrics = s.step_fn(state, global_batch(batch, s.batch_sharding))
        jax.block_until_ready(metrics)
        trainer = f.train_steps * rows * seq_len / (time.perf_counter() - start)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {jax.devices()[0].device_kind} x{s.mesh.size}; "
          f"mixture {s.data_name}, {rows} rows x {seq_len} tokens, model {s.model_cfg.num_params():,} params")
    print(f"input pipeline: {pipeline:12,.0f} packed tokens/s  (first batch incl. pipeline build {first_s:.1f}s)")
    print(f"trainer step:   {trainer:12,.0f} tokens/s")
    print(f"pipeline / trainer: {pipeline / trainer:.1f}x")


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "config file (configs/FILE.py[:ARGS])", lock_config=True)
    flags.DEFINE_integer("batches", 50, "pipeline batches to time")
    flags.DEFINE_integer("train_steps", 3, "trainer steps to time")
    flags.mark_flags_as_required(["config"])
    app.run(main)
