"""A random tiny model on the synthetic reverse task: seconds per run (tests, smoke checks).

  python -m pivot_jax.train --config configs/tiny.py --workdir runs/tiny
"""

from pivot_jax.config import base_config


def get_config(arg=None):
    del arg  # no arguments
    c = base_config()
    c.model.preset = "tiny"
    c.train.steps = 200
    c.train.global_batch_size = 16
    c.train.seq_len = 64
    c.train.log_every_steps = 20
    c.optimizer.lr = 3e-3
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_ratio = 0.05
    c.checkpoint.every_steps = 100
    c.eval.every_steps = 100
    return c
