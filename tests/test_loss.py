"""The loss computed a block of positions at a time, or on gathered loss positions, equals the full-logits loss
(value and gradients, micro-batches included), and the chunked step needs less memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pivot_jax import model as M
from pivot_jax.data import BATCH_KEYS
from pivot_jax.data.synthetic import SyntheticStream
from pivot_jax.trainer.step import loss_and_grads

# loss_and_grads(params, batch, graphdef, accum_steps, loss_chunk, loss_positions)
step = jax.jit(loss_and_grads, static_argnums=(2, 3, 4, 5))


def _setup(preset: str, rows: int = 4, seq_len: int = 48):
    graphdef, params = nnx.split(M.create(M.preset(preset)))
    batch = {k: jnp.asarray(v) for k, v in next(SyntheticStream(0, "train", rows, seq_len, 256)).items()}
    return graphdef, nnx.to_pure_dict(params), batch


def _assert_same(got, want):
    (loss_got, grads_got), (loss_want, grads_want) = got, want
    np.testing.assert_allclose(loss_got, loss_want, rtol=2e-6)
    # Relative to each tensor's scale: near-zero entries only differ by float32 summation order.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max()),
                 grads_got, grads_want)


@pytest.mark.parametrize("preset, chunks", [("tiny", (16, 20, 64)), ("tiny-tied", (20,))])
def test_chunked_loss_equals_full_logits(preset, chunks):
    graphdef, params, batch = _setup(preset)
    full = step(params, batch, graphdef, 1, 0, 0)
    for chunk in chunks:  # 16 divides the length 48, 20 leaves a padded last block, 64 exceeds it
        _assert_same(step(params, batch, graphdef, 1, chunk, 0), full)


def test_chunked_loss_with_micro_batches_equals_one_big_batch():
    graphdef, params, batch = _setup("tiny")
    _assert_same(step(params, batch, graphdef, 2, 20, 0), step(params, batch, graphdef, 1, 0, 0))


def test_gathered_loss_positions_equal_full_logits_and_overflow_is_nan():
    graphdef, params, batch = _setup("tiny")
    most = int(np.max(np.sum(np.asarray(batch["decoder_loss_weights"]) > 0, axis=1)))
    assert most < 48
    full = step(params, batch, graphdef, 1, 0, 0)
    _assert_same(step(params, batch, graphdef, 1, 0, most), full)
    _assert_same(step(params, batch, graphdef, 1, 8, most + 3), full)  # with chunks over the gathered positions
    assert np.isnan(step(params, batch, graphdef, 1, 0, most - 1)[0])  # a row with more: NaN, never truncated


def test_chunked_step_needs_less_temporary_memory():
    """Where the logits dominate (vocab 16384 over a 64-wide model), chunks of 32 positions cut the compiled
    step's temporary memory."""
    cfg = M.preset("tiny", vocab_size=16384, num_layers=1)
    abstract = nnx.eval_shape(lambda: M.create(cfg))
    graphdef, params = nnx.graphdef(abstract), nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
    batch = {k: jax.ShapeDtypeStruct((4, 256), jnp.int32) for k in BATCH_KEYS}

    def temp_bytes(chunk):
        lowered = jax.jit(loss_and_grads, static_argnums=(2, 3, 4, 5)).lower(params, batch, graphdef, 1, chunk, 0)
        return lowered.compile().memory_analysis().temp_size_in_bytes

    full, chunked = temp_bytes(0), temp_bytes(32)
    assert full > 4 * 256 * 16384 * 4 and chunked < full / 3, (full, chunked)  # measured: 153 MB and 40 MB
