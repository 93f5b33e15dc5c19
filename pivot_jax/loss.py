"""Weighted next-token cross-entropy, from full logits or from final hidden states a block of positions at a time.

    total = loss.cross_entropy(model.logits(hidden), targets, weights)
    total = loss.chunked_cross_entropy(hidden, model.logits, targets, weights, chunk=512)
    hidden, targets, weights = loss.gather_loss_positions(hidden, targets, weights, 256)  # then either

Each returns the sum over positions of cross-entropy x weight, in float32. The chunked form never holds the
[batch, length, vocab] float32 logits: a `lax.scan` projects `chunk` positions at a time under `jax.checkpoint`,
so the backward pass recomputes one block's logits at a time instead of keeping them all. Shapes are fixed under
jit, so a block without weight is still computed; it adds exactly zero. `gather_loss_positions` shrinks the
work instead, for data whose loss covers few positions (answers after long prompts): it keeps a fixed number of
weighted positions per row.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def cross_entropy(logits: Array, targets: Array, weights: Array) -> Array:
    """Sum of cross-entropy x weight over all positions of `logits` [..., vocab] (float32)."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return jnp.sum(ce * weights.astype(jnp.float32))


def chunked_cross_entropy(hidden: Array, project: Callable[[Array], Array], targets: Array, weights: Array,
                          chunk: int) -> Array:
    """`cross_entropy(project(hidden), targets, weights)` computed `chunk` positions at a time along the length.

    `hidden` [batch, length, embed]; `project` maps [batch, n, embed] to float32 logits [batch, n, vocab]
    (`Llama.logits`). A length that `chunk` does not divide ends in a block padded with zero weight.
    """
    batch, length = targets.shape
    chunk = min(chunk, length)
    blocks = -(-length // chunk)
    pad = blocks * chunk - length
    if pad:
        hidden, targets, weights = (jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
                                    for x in (hidden, targets, weights))

    def split(x):  # [batch, length, ...] -> [blocks, batch, chunk, ...]: scan over the leading axis
        return x.reshape(batch, blocks, chunk, *x.shape[2:]).swapaxes(0, 1)

    @jax.checkpoint  # keep only each block's inputs; its logits are recomputed in the backward pass
    def block_loss(h, y, w):
        return cross_entropy(project(h), y, w)

    def body(total, block):
        return total + block_loss(*block), None

    return jax.lax.scan(body, jnp.zeros((), jnp.float32), (split(hidden), split(targets), split(weights)))[0]


def gather_loss_positions(hidden: Array, targets: Array, weights: Array, positions: int
                          ) -> tuple[Array, Array, Array]:
    """The first `positions` weighted positions of every row (in order): hidden [batch, positions, embed],
    targets and weights [batch, positions]. Slots a row does not fill get weight 0.

    A row with more weighted positions than `positions` cannot be represented: its weights become NaN, so the
    loss is NaN and training stops instead of silently dropping targets. Choose `positions` >= the most
    weighted positions of any row (e.g. the longest answer, times the examples packed per row).
    """
    positions = min(positions, targets.shape[1])
    weighted = weights > 0
    # A stable sort of "not weighted" puts the weighted positions first, in their order.
    order = jnp.argsort(~weighted, axis=1, stable=True)[:, :positions]
    overflow = jnp.sum(weighted, axis=1) > positions
    weights = jnp.take_along_axis(weights.astype(jnp.float32), order, axis=1)
    weights = jnp.where(overflow[:, None], jnp.nan, weights)
    return (jnp.take_along_axis(hidden, order[..., None], axis=1), jnp.take_along_axis(targets, order, axis=1),
            weights)
