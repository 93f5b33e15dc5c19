"""Logical-axis sharding: the names the model uses and the rules that map them onto the mesh.

Every parameter of `pivot_jax.model` carries logical axis names (`embed`, `mlp`, `heads`, ...); the trainer
turns those names into mesh axes with the rules below (overridable from the config), so the model code never
mentions a mesh. Activations are constrained at block boundaries with `constrain`, which is a no-op when no
rules are active (single device, tests, conversion).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import linen

LogicalAxes = tuple[str | None, ...]
AxisRules = Sequence[tuple[str, str | Sequence[str] | None]]

# MaxText-style defaults for a (data, fsdp, tensor) mesh: weights are split over `fsdp` on their embed axis
# and over `tensor` on heads / mlp / vocab; activations are split over data x fsdp on batch.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("layers", None),
    ("cache_batch", ("data", "fsdp")),
    ("cache_length", None),
)


def constrain(x: jax.Array, axes: LogicalAxes) -> jax.Array:
    """Constrain an activation's sharding by logical axis names (no-op outside `axis_rules`)."""
    return linen.with_logical_constraint(x, axes)


def axis_rules(rules: AxisRules = DEFAULT_RULES):
    """Context manager that activates logical-axis rules for `constrain` and partition-spec lookups."""
    return linen.logical_axis_rules(tuple(rules))
