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
from jax.experimental import mesh_utils
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


def active_spec(axes: LogicalAxes, shape: tuple[int, ...]) -> PartitionSpec | None:
    """The mesh axes for logical `axes` of an array of `shape` under the active rules and mesh (fitted: an axis
    that does not divide its dimension is dropped); None when no rules or no mesh are active."""
    rules = linen.get_logical_axis_rules()
    mesh = jax.sharding.get_abstract_mesh()
    if not rules or mesh.empty:
        return None
    return _fit(logical_spec(axes, rules), shape, mesh)


def constrain(x: jax.Array, axes: LogicalAxes) -> jax.Array:
    """Constrain an activation's sharding by logical axis names; a no-op unless rules and a mesh are active."""
    spec = active_spec(axes, x.shape)
    return x if spec is None else jax.lax.with_sharding_constraint(x, spec)


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
    """A (data, fsdp, tensor) mesh over all (global) devices; one axis may be -1 to take what is left. Over the
    devices of several slices (Multislice) the data axis spans the slices."""
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
    axis_types = (jax.sharding.AxisType.Auto,) * 3
    num_slices = len({getattr(d, "slice_index", 0) for d in devices})
    # Multislice: slices talk over the data-centre network, far slower than ICI, so only the data axis (one
    # gradient all-reduce per step) spans them; fsdp and tensor stay inside each slice.
    if shape[0] % num_slices:
        raise ConfigError(f"mesh.data={shape[0]}: must be a multiple of the {num_slices} slices (the data axis "
                          "spans the slices; fsdp and tensor stay within one)")
    try:
        if num_slices == 1:
            return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=axis_types, devices=devices)
        ici = (shape[0] // num_slices, shape[1], shape[2])
        # As jax.make_mesh does for one slice: v5e's 2D slices may split a physical axis across mesh axes.
        split = devices[0].device_kind in ("TPU v5 lite", "TPU v5e")
        grid = mesh_utils.create_hybrid_device_mesh(ici, (num_slices, 1, 1), devices, allow_split_physical_axes=split)
        return jax.sharding.Mesh(grid, MESH_AXES, axis_types=axis_types)
    except (NotImplementedError, ValueError) as e:  # mesh_utils found no assignment onto the physical axes
        raise ConfigError(f"mesh data={shape[0]} fsdp={shape[1]} tensor={shape[2]} does not map onto the devices' "
                          f"physical layout: {e}") from e


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
