"""Logical-axis sharding: the names the model uses and the rules that map them onto the mesh.

Every parameter of `pivot_jax.model` carries logical axis names (`embed`, `mlp`, `heads`, ...); the trainer
turns those names into mesh axes with the rules below (overridable from the config), so the model code never
mentions a mesh. Activations are constrained at block boundaries with `constrain`, which is a no-op when no
rules are active (single device, tests, conversion).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import jax
from flax import linen, nnx
from jax.sharding import NamedSharding, PartitionSpec

from pivot_jax.errors import ConfigError

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
    """Constrain an activation's sharding by logical axis names; a no-op unless rules and a mesh are active."""
    rules = linen.get_logical_axis_rules()
    mesh = jax.sharding.get_abstract_mesh()
    if not rules or mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, _fit(logical_spec(axes, rules), x.shape, mesh))


def axis_rules(rules: AxisRules = DEFAULT_RULES):
    """Context manager that activates logical-axis rules for `constrain` and partition-spec lookups."""
    return linen.logical_axis_rules(tuple(rules))


@contextlib.contextmanager
def activate(mesh: jax.sharding.Mesh, rules: AxisRules = DEFAULT_RULES):
    """The mesh and the rules together: what tracing a sharded step needs."""
    with jax.set_mesh(mesh), axis_rules(rules):
        yield


MESH_AXES = ("data", "fsdp", "tensor")


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None
              ) -> jax.sharding.Mesh:
    """A (data, fsdp, tensor) mesh over all (global) devices; one axis may be -1 to take what is left."""
    devices = list(devices if devices is not None else jax.devices())
    shape = [data, fsdp, tensor]
    if shape.count(-1) > 1:
        raise ConfigError(f"mesh: at most one axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if len(devices) % known:
            raise ConfigError(f"mesh: {len(devices)} devices cannot be split into {shape}")
        shape[shape.index(-1)] = len(devices) // known
    if math.prod(shape) != len(devices):
        raise ConfigError(f"mesh: data x fsdp x tensor = {math.prod(shape)} but there are {len(devices)} devices")
    return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3, devices=devices)


def _fit(spec: PartitionSpec, shape: tuple[int, ...], mesh: jax.sharding.Mesh | jax.sharding.AbstractMesh
         ) -> PartitionSpec:
    """Drop mesh axes from dimensions they do not divide (e.g. 9 heads over tensor=2): replicate instead."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = math.prod(mesh.shape[n] for n in names)
        fitted.append(axes if size and dim % size == 0 else None)
    return PartitionSpec(*fitted)


def logical_spec(axes: LogicalAxes, rules: AxisRules) -> PartitionSpec:
    """Mesh axes for logical axis names; a name with no rule is replicated."""
    return PartitionSpec(*linen.logical_to_mesh_axes(axes, tuple(rules)))


def param_shardings(abstract_model: nnx.Module, mesh: jax.sharding.Mesh, rules: AxisRules = DEFAULT_RULES
                    ) -> dict[str, Any]:
    """NamedShardings for the model's parameters (a pure dict shaped like `nnx.to_pure_dict(params)`)."""
    state = nnx.state(abstract_model, nnx.Param)

    def shard(var: nnx.Variable) -> NamedSharding:
        spec = logical_spec(var.get_metadata()["out_sharding"], rules)
        return NamedSharding(mesh, _fit(spec, var.shape, mesh))

    return nnx.to_pure_dict(jax.tree.map(shard, state, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Batches are split over data x fsdp on their leading (row) axis."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
