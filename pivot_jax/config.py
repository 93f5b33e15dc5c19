"""The trainer's configuration schema: every key a config file or `--config.KEY=VALUE` may set.

Config files in `configs/` start from `base_config()` and change what their method needs (big_vision style:
`--config configs/coit.py:lang=zh,model=llama2-7b`). The schema is locked, so an unknown override key or a
value of the wrong type stops before anything runs.
"""

from __future__ import annotations

from ml_collections import ConfigDict

from pivot_jax.sharding import DEFAULT_RULES


def base_config() -> ConfigDict:
    c = ConfigDict()
    c.seed = 0

    c.model = ConfigDict()
    c.model.preset = "tiny"
    c.model.init_from = ""  # "hf:DIR", "gguf:FILE", "orbax:DIR", or "" for random initialisation
    c.model.param_dtype = "float32"
    c.model.dtype = "float32"
    c.model.remat_policy = "none"
    c.model.scan_layers = True
    c.model.max_seq_len = 0  # 0 = the preset's / checkpoint's

    c.train = ConfigDict()
    c.train.steps = 100
    c.train.global_batch_size = 8
    c.train.seq_len = 128
    c.train.grad_accum_steps = 1
    c.train.log_every_steps = 10

    c.optimizer = ConfigDict()
    c.optimizer.lr = 1e-3
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_ratio = 0.03
    c.optimizer.weight_decay = 0.0
    c.optimizer.clip_norm = 1.0
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8

    c.mesh = ConfigDict()
    c.mesh.data = -1  # -1 = all devices left after the other axes
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.axis_rules = [(name, rule) for name, rule in DEFAULT_RULES]

    c.checkpoint = ConfigDict()
    c.checkpoint.every_steps = 0  # 0 = only at the end (and on SIGTERM)
    c.checkpoint.keep = 3
    c.checkpoint.async_save = True

    c.eval = ConfigDict()
    c.eval.every_steps = 0  # held-out loss every N steps when the data has a validation split (0 = off)
    c.eval.steps = 4  # batches per held-out evaluation

    c.data = ConfigDict()
    c.data.source = "synthetic"  # the synthetic copy/reverse task needs no files (tests, smoke runs)
    c.data.vocab_size = 256  # synthetic: token ids are drawn below this
    return c
