"""The step maths: weighted cross-entropy over packed rows, gradients over micro-batches, one AdamW step.

Pure functions of (params or state, batch); `pivot_jax.train` jits them with shardings. The batch is the
seqio/t5x packed decoder contract (`decoder_input_tokens`, `decoder_target_tokens`, `decoder_loss_weights`,
`decoder_segment_ids`, `decoder_positions`). `loss_chunk` and `loss_positions` (`train.*`) shape how the loss
is computed, never its value (see `pivot_jax.loss`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from pivot_jax import loss as loss_lib


def loss_sum(graphdef: nnx.GraphDef, params: dict[str, Any], batch: dict[str, jax.Array], loss_chunk: int = 0,
             loss_positions: int = 0) -> jax.Array:
    """Sum over tokens of cross-entropy x `decoder_loss_weights` (float32).

    `loss_positions` > 0 keeps that many weighted positions per row (a row with more makes the loss NaN);
    `loss_chunk` > 0 projects that many positions onto the vocabulary at a time; 0 and 0: the full logits.
    """
    model = nnx.merge(graphdef, params)
    hidden, _ = model.hidden_states(batch["decoder_input_tokens"], positions=batch["decoder_positions"],
                                    segment_ids=batch["decoder_segment_ids"])
    targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
    if loss_positions:
        hidden, targets, weights = loss_lib.gather_loss_positions(hidden, targets, weights, loss_positions)
    if loss_chunk:
        return loss_lib.chunked_cross_entropy(hidden, model.logits, targets, weights, loss_chunk)
    return loss_lib.cross_entropy(model.logits(hidden), targets, weights)


def loss_and_grads(params: dict[str, Any], batch: dict[str, jax.Array], graphdef: nnx.GraphDef,
                   accum_steps: int = 1, loss_chunk: int = 0, loss_positions: int = 0
                   ) -> tuple[jax.Array, dict[str, Any]]:
    """Loss and gradients of the global batch, computed over `accum_steps` micro-batches.

    The loss is normalised by the number of weighted tokens in the whole global batch, so accumulating k
    micro-batches gives exactly the gradient of one big batch.
    """
    total_weight = jnp.maximum(jnp.sum(batch["decoder_loss_weights"].astype(jnp.float32)), 1.0)

    def loss_fn(params, micro):
        return loss_sum(graphdef, params, micro, loss_chunk, loss_positions) / total_weight

    grad_fn = jax.value_and_grad(loss_fn)
    if accum_steps == 1:
        return grad_fn(params, batch)
    # Micro-batch j takes rows j, j+k, j+2k, ...: every device keeps working on its own rows.
    micro = jax.tree.map(lambda x: x.reshape(-1, accum_steps, *x.shape[1:]).swapaxes(0, 1), batch)

    def accumulate(carry, mb):
        return jax.tree.map(jnp.add, carry, grad_fn(params, mb)), None

    zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
    return jax.lax.scan(accumulate, zeros, micro)[0]


def train_step(state: dict[str, Any], batch: dict[str, jax.Array], *, graphdef: nnx.GraphDef,
               optimizer: optax.GradientTransformation, schedule: optax.Schedule, accum_steps: int,
               loss_chunk: int = 0, loss_positions: int = 0) -> tuple[dict[str, Any], dict[str, jax.Array]]:
    """One optimizer step over the global batch."""
    loss, grads = loss_and_grads(state["params"], batch, graphdef, accum_steps, loss_chunk, loss_positions)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = dict(params=params, opt_state=opt_state, step=state["step"] + 1,
                     rng=jax.random.fold_in(state["rng"], state["step"]))
    metrics = dict(loss=loss, grad_norm=optax.global_norm(grads), lr=schedule(state["step"]))
    return new_state, metrics


def eval_step(params: dict[str, Any], batch: dict[str, jax.Array], *, graphdef: nnx.GraphDef, loss_chunk: int = 0,
              loss_positions: int = 0) -> tuple[jax.Array, jax.Array]:
    """Weighted loss sum and weight of one held-out batch."""
    return (loss_sum(graphdef, params, batch, loss_chunk, loss_positions),
            jnp.sum(batch["decoder_loss_weights"].astype(jnp.float32)))
