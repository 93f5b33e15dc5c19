"""AdamW with the papers' schedules, global-norm clipping and no weight decay on norms (all optax)."""

from __future__ import annotations

from typing import Any

import jax
import optax
from ml_collections import ConfigDict

SCHEDULES = ("cosine", "linear", "constant")


def learning_rate_schedule(cfg: ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup over `warmup_ratio * total_steps`, then cosine / linear decay to 0, or constant."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"optimizer.schedule must be one of {SCHEDULES}, got {cfg.schedule!r}")
    warmup = int(round(cfg.warmup_ratio * total_steps))
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(total_steps, warmup + 1), end_value=0.0)
    decay_steps = max(total_steps - warmup, 1)
    after = (optax.linear_schedule(cfg.lr, 0.0, decay_steps) if cfg.schedule == "linear"
             else optax.constant_schedule(cfg.lr))
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), after], [warmup])


def decay_mask(params: Any) -> Any:
    """True for matrices (projections, embeddings), False for norm scales: no decay on norms."""

    def is_decayed(path, leaf) -> bool:
        return not any(getattr(key, "key", None) == "scale" for key in path)

    return jax.tree_util.tree_map_with_path(is_decayed, params)


def make(cfg: ConfigDict, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer and its schedule (the schedule is also logged as `lr`)."""
    schedule = learning_rate_schedule(cfg, total_steps)
    chain = []
    if cfg.clip_norm:
        chain.append(optax.clip_by_global_norm(cfg.clip_norm))
    chain.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                             mask=decay_mask))
    return optax.chain(*chain), schedule
