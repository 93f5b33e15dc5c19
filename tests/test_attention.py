"""Every attention path computes the XLA reference's attention on packed rows (segments, causal, GQA).

On CPU the Pallas kernels run in the interpreter and cudnn's call runs on XLA's implementation, so these check
the kernels' results and our use of them (scaling, head layout, segment ids, block sizes, sharding), not the
speed or the compilation for a real TPU or GPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pivot_jax import attention
from pivot_jax import model as M
from pivot_jax.data.synthetic import packed_row
from pivot_jax.sharding import activate, make_mesh

KERNELS = {"splash": attention.splash_attention, "pallas_gpu": attention.pallas_gpu_attention}


def _inputs(batch=2, length=256, heads=4, kv_heads=2, head_dim=32, seed=0):
    rng = np.random.RandomState(seed)
    q, k, v = (jnp.asarray(rng.randn(batch, length, n, head_dim), jnp.float32) for n in (heads, kv_heads, kv_heads))
    segments = np.zeros((batch, length), np.int32)
    # Row 0: three examples, boundaries off the kernels' blocks, then padding. Other rows: two examples, no padding.
    first, second = length * 2 // 5, length * 4 // 5
    segments[0, :first], segments[0, first:second], segments[0, second:length - length // 16] = 1, 2, 3
    segments[1:, :] = 1
    segments[1:, length // 5:] = 2
    return q, k, v, jnp.asarray(segments)


def _reference(q, k, v, segments):
    return attention.packed_rows("xla", segments)(q, k, v)


def _real(segments):
    """Where outputs are defined: padding's own outputs are left to each implementation."""
    return np.asarray(segments != 0)[:, :, None, None]


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_equals_reference_with_gradients(name):
    q, k, v, segments = _inputs()
    kernel = jax.jit(lambda q, k, v: KERNELS[name](q, k, v, segments, interpret=True))
    np.testing.assert_allclose(np.where(_real(segments), kernel(q, k, v), 0),
                               np.where(_real(segments), _reference(q, k, v, segments), 0), atol=2e-6)

    probe = jnp.asarray(np.random.RandomState(1).randn(*q.shape), jnp.float32) * _real(segments)

    def grads(fn):
        return jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) * probe), argnums=(0, 1, 2)))(q, k, v)

    ours = grads(lambda q, k, v: KERNELS[name](q, k, v, segments, interpret=True))
    ref = grads(lambda q, k, v: _reference(q, k, v, segments))
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_cudnn_call_equals_reference_on_unpacked_rows_and_refuses_packed_ones():
    q, k, v, segments = _inputs(length=64)
    unpacked = jnp.asarray(np.where(np.arange(64) < [[40], [64]], 7, 0), jnp.int32)  # one example, then padding
    out = attention.cudnn_attention(q, k, v, unpacked, interpret=True)
    np.testing.assert_allclose(np.where(_real(unpacked), out, 0),
                               np.where(_real(unpacked), _reference(q, k, v, unpacked), 0), atol=2e-6)
    out = attention.cudnn_attention(q, k, v, segments.at[1].set(unpacked[1]), interpret=True)
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()  # row 0 packs three examples: refused loudly


@pytest.mark.parametrize("data, tensor", [(4, 2), (2, 4)])
def test_kernels_split_rows_and_heads_over_a_mesh(data, tensor):
    """Under a mesh the kernel runs per device in shard_map; with tensor=4 the 2 kv heads cannot be split like
    the 4 query heads, so each query head gets its own copy."""
    q, k, v, segments = _inputs(batch=4, length=64)
    mesh = make_mesh(data=data, fsdp=1, tensor=tensor, devices=jax.devices()[:data * tensor])
    with activate(mesh):
        out = jax.jit(lambda q, k, v: attention.pallas_gpu_attention(q, k, v, segments, interpret=True))(q, k, v)
    np.testing.assert_allclose(np.where(_real(segments), out, 0),
                               np.where(_real(segments), _reference(q, k, v, segments), 0), atol=2e-6)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_model_forward_with_a_kernel_equals_xla(name):
    cfg = M.preset("tiny", attention="xla")  # 4 query heads over 2 kv heads
    reference = M.create(cfg)
    row = packed_row(seed=0, split="train", index=1, seq_len=128, vocab_size=256)
    batch = {key: jnp.asarray(np.stack([value, np.roll(value, 40)])) for key, value in row.items()}
    inputs = (batch["decoder_input_tokens"], batch["decoder_positions"], batch["decoder_segment_ids"])
    fast = M.create(cfg.replace(attention=name))
    nnx.update(fast, nnx.state(reference, nnx.Param))
    real = np.asarray(batch["decoder_segment_ids"] != 0)[..., None]
    np.testing.assert_allclose(np.where(real, fast(*inputs)[0], 0), np.where(real, reference(*inputs)[0], 0),
                               atol=2e-5)


def test_auto_picks_the_platforms_kernel_where_the_length_fits():
    assert attention.resolve("auto", 256, "cpu") == "xla"
    assert attention.resolve("auto", 256, "tpu") == "splash"
    assert attention.resolve("auto", 200, "tpu") == "xla"  # not a multiple of 128
    assert attention.resolve("auto", 48, "gpu") == "pallas_gpu"
    assert attention.resolve("auto", 40, "gpu") == "xla"
    assert attention.resolve("cudnn", 40, "gpu") == "cudnn"
    with pytest.raises(ValueError, match=r"model.attention='splash' needs a sequence length that is a multiple "
                                         r"of 128, got 200"):
        attention.resolve("splash", 200, "tpu")
    with pytest.raises(ValueError, match="model.attention='splash' runs on tpu .* not on gpu"):
        attention.resolve("splash", 256, "gpu")
    with pytest.raises(ValueError, match="model.attention='flash'"):
        attention.resolve("flash", 256, "gpu")
    with pytest.raises(ValueError, match="unknown attention 'flash'"):
        M.preset("tiny", attention="flash")
