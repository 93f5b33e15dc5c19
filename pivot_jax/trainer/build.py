"""The train step compiled for a config: mesh placement, abstract state and shardings, from the config alone.

    s = build(config, mesh, num_steps)              # no data read, no weights loaded
    with s.activate():
        compiled = s.step_fn.lower(s.abstract_state, s.abstract_batch()).compile()

`num_steps` is the schedule's length: `train.steps`, the count the trainer measures from `train.epochs`, or a
planner's own number. `trainer.loop.setup` registers the data, then calls this.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from ml_collections import ConfigDict

from pivot_jax import model as model_lib
from pivot_jax import optimizer as optimizer_lib
from pivot_jax import sharding
from pivot_jax.data import BATCH_KEYS
from pivot_jax.errors import ConfigError
from pivot_jax.pretrained import load_params_onto, model_config
from pivot_jax.trainer.step import eval_step, train_step


@dataclasses.dataclass
class Setup:
    """Everything jitted and placed for a run: what `build` returns, with the registered data once `loop.setup`
    has added it."""

    config: ConfigDict
    model_cfg: model_lib.LlamaConfig
    mesh: jax.sharding.Mesh
    graphdef: nnx.GraphDef
    state_shardings: dict[str, Any]
    batch_sharding: jax.sharding.NamedSharding
    step_fn: Callable
    eval_fn: Callable
    init_fn: Callable[[], dict[str, Any]]
    abstract_state: dict[str, Any]
    rules: list[tuple]
    data_name: str = ""  # the registered seqio mixture (data.source="seqio")
    bos_id: int = 0

    def activate(self) -> Any:
        """Mesh + logical rules: every call of the jitted functions (tracing included) runs inside this."""
        return sharding.activate(self.mesh, self.rules)

    def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
        """The global batch's shapes, dtypes and sharding (the seqio/t5x packed decoder batch)."""
        shape = (self.config.train.global_batch_size, self.config.train.seq_len)
        return {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=self.batch_sharding) for k in BATCH_KEYS}


def check_fits(config: ConfigDict, model_cfg: model_lib.LlamaConfig, mesh: jax.sharding.Mesh) -> None:
    """The sequence fits the model and the global batch splits over the mesh (and micro-batches)."""
    if config.train.seq_len > model_cfg.max_seq_len:
        raise ConfigError(f"train.seq_len {config.train.seq_len} exceeds the model's max_seq_len "
                          f"{model_cfg.max_seq_len} (set model.max_seq_len)")
    rows_per_shard = mesh.shape["data"] * mesh.shape["fsdp"] * config.train.grad_accum_steps
    if config.train.global_batch_size % rows_per_shard:
        raise ConfigError(f"train.global_batch_size {config.train.global_batch_size} must be a multiple of "
                          f"mesh data x fsdp x grad_accum_steps = {rows_per_shard}")


def build(config: ConfigDict, mesh: jax.sharding.Mesh, num_steps: int,
          model_cfg: model_lib.LlamaConfig | None = None) -> Setup:
    """The jitted train and eval steps with explicit shardings, the abstract (sharded) train state, and the
    function that creates the state (random or `model.init_from`'s weights) when called."""
    model_cfg = model_cfg or model_config(config.model)
    check_fits(config, model_cfg, mesh)
    rules = [tuple(rule) for rule in config.mesh.axis_rules]
    abstract_model = nnx.eval_shape(lambda: model_lib.create(model_cfg))
    graphdef = nnx.graphdef(abstract_model)
    param_shardings = sharding.param_shardings(abstract_model, mesh, rules)
    optimizer, schedule = optimizer_lib.make(config.optimizer, num_steps)
    replicated = sharding.replicated(mesh)

    def init_params():
        return nnx.to_pure_dict(nnx.state(model_lib.create(model_cfg, seed=config.seed), nnx.Param))

    abstract_params = jax.eval_shape(init_params)
    abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
    opt_shardings = optax.tree_map_params(optimizer, lambda _, s: s, abstract_opt, param_shardings,
                                          transform_non_params=lambda _: replicated)
    state_shardings = dict(params=param_shardings, opt_state=opt_shardings, step=replicated, rng=replicated)

    def init_state(params):
        return dict(params=params, opt_state=optimizer.init(params), step=jnp.zeros((), jnp.int32),
                    rng=jax.random.key_data(jax.random.key(config.seed)))

    if config.model.init_from:
        def init_fn():
            params = load_params_onto(config.model.init_from, model_cfg, param_shardings)
            return jax.jit(init_state, out_shardings=state_shardings)(params)
    else:
        init_fn = jax.jit(lambda: init_state(init_params()), out_shardings=state_shardings)
    abstract_state = jax.eval_shape(lambda: init_state(init_params()))
    abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                  abstract_state, state_shardings)
    batch_sharding = sharding.batch_sharding(mesh)
    batch_shardings = {k: batch_sharding for k in BATCH_KEYS}
    loss_options = dict(loss_chunk=config.train.loss_chunk, loss_positions=config.train.loss_positions)
    step_fn = jax.jit(functools.partial(train_step, graphdef=graphdef, optimizer=optimizer, schedule=schedule,
                                        accum_steps=config.train.grad_accum_steps, **loss_options),
                      in_shardings=(state_shardings, batch_shardings),
                      out_shardings=(state_shardings, replicated), donate_argnums=0)
    eval_fn = jax.jit(functools.partial(eval_step, graphdef=graphdef, **loss_options),
                      in_shardings=(param_shardings, batch_shardings), out_shardings=replicated)
    return Setup(config, model_cfg, mesh, graphdef, state_shardings, batch_sharding, step_fn, eval_fn, init_fn,
                 abstract_state, rules)
