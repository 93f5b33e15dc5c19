"""The step maths: packed rows lose nothing to packing, and micro-batches add up to the big batch."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pivot_jax import model as M
from pivot_jax.data.synthetic import SyntheticStream, packed_row
from pivot_jax.trainer.step import loss_and_grads, loss_sum


def test_packed_loss_equals_unpacked_examples():
    model = M.create(M.preset("tiny"))
    graphdef, params = nnx.split(model)
    params = nnx.to_pure_dict(params)
    row = packed_row(seed=0, split="train", index=0, seq_len=48, vocab_size=256)
    assert row["decoder_segment_ids"].max() >= 2
    packed = {k: jnp.asarray(v[None]) for k, v in row.items()}
    packed_loss = loss_sum(graphdef, params, packed)
    separate = 0.0
    for seg in range(1, int(row["decoder_segment_ids"].max()) + 1):
        keep = row["decoder_segment_ids"] == seg
        example = {k: jnp.asarray(v[keep][None]) for k, v in row.items()}
        example["decoder_segment_ids"] = jnp.ones_like(example["decoder_segment_ids"])
        separate += loss_sum(graphdef, params, example)
    np.testing.assert_allclose(packed_loss, separate, rtol=1e-5)


def test_grad_accumulation_equals_one_big_batch():
    model = M.create(M.preset("tiny"))
    graphdef, params = nnx.split(model)
    params = nnx.to_pure_dict(params)
    stream = SyntheticStream(0, "train", 8, 32, 256)
    batch = {k: jnp.asarray(v) for k, v in next(stream).items()}
    loss, grads = loss_and_grads(params, batch, graphdef, accum_steps=1)
    for k in (2, 4, 8):
        acc_loss, acc_grads = jax.jit(loss_and_grads, static_argnums=(2, 3))(params, batch, graphdef, k)
        np.testing.assert_allclose(acc_loss, loss, rtol=1e-5)
        # Relative to each tensor's scale: near-zero entries only differ by float32 summation order.
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max()),
                     acc_grads, grads)
