"""Packed tokens/s of the seqio input pipeline beside the trainer's tokens/s for the same config, same run.

  python benchmarks/data_pipeline.py --config configs/quickstart.py [--batches 50] [--train_steps 3] [--json F]
  python benchmarks/data_pipeline.py --config configs/coit.py:lang=es,model=smollm2-135m \\
      --config.data.tokenizer=gguf:SmolLM2-135M-Instruct.Q4_1.gguf

The pipeline must stay well ahead of the step (ratio >> 1) for the accelerator never to wait on input; each
host runs its own pipeline for its rows, so the figure is per host.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax

from common import report


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
    rows_per_batch, seq_len = config.train.global_batch_size, config.train.seq_len
    stream = SeqioStream(s.data_name, "train", seq_len, rows_per_batch, config.seed, s.bos_id)
    start = time.perf_counter()
    first = next(stream)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(f.batches):
        next(stream)
    pipeline = f.batches * rows_per_batch * seq_len / (time.perf_counter() - start)

    with s.activate():
        state = s.init_fn()
        state, metrics = s.step_fn(state, global_batch(first, s.batch_sharding))
        jax.block_until_ready(metrics)
        batches = [next(stream) for _ in range(f.train_steps)]
        start = time.perf_counter()
        for batch in batches:
            state, metrics = s.step_fn(state, global_batch(batch, s.batch_sharding))
        jax.block_until_ready(metrics)
        trainer = f.train_steps * rows_per_batch * seq_len / (time.perf_counter() - start)

    rows = [{"mixture": s.data_name, "batch": f"{rows_per_batch}x{seq_len}",
             "model params": f"{s.model_cfg.num_params() / 1e6:.1f}M", "input pipeline tok/s": pipeline,
             "trainer tok/s": trainer, "pipeline / trainer": pipeline / trainer, "first batch s": first_s}]
    report("input pipeline beside the trainer", rows,
           ["packed tokens/s of one host's seqio pipeline; the first batch includes building the pipeline"],
           Path(f.json) if f.json else None)


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "config file (configs/FILE.py[:ARGS])", lock_config=True)
    flags.DEFINE_integer("batches", 50, "pipeline batches to time")
    flags.DEFINE_integer("train_steps", 3, "trainer steps to time")
    flags.DEFINE_string("json", None, "also write the rows to this file (run.py)")
    flags.mark_flags_as_required(["config"])
    app.run(main)
