import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from pivot_jax import model as M
from pivot_jax.convert import hf
from pivot_jax.sharding import DEFAULT_RULES, axis_rules


@pytest.mark.parametrize("name,count", [("llama2-7b", 6_738_415_616), ("llama3-8b", 8_030_261_248),
                                        ("llama-7b", 6_738_415_616), ("smollm2-135m", 134_515_008)])
def test_param_counts_of_published_shapes(name, count):
    cfg = M.preset(name)
    abstract = nnx.eval_shape(lambda: M.create(cfg))  # shapes only, nothing allocated
    assert sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param))) == count
    assert cfg.num_params() == count


def test_every_param_has_logical_axes_matching_its_rank():
    model = nnx.eval_shape(lambda: M.create(M.preset("tiny")))
    known = {name for name, _ in DEFAULT_RULES}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        axes = var.get_metadata()["out_sharding"]
        assert len(axes) == len(var.shape), path
        assert set(axes) <= known, (path, axes)
    with axis_rules():
        specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    assert specs["layers"]["attn"]["q_proj"].value == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)


def test_unknown_preset_and_bad_options_are_named():
    with pytest.raises(KeyError, match="llama9"):
        M.preset("llama9")
    with pytest.raises(ValueError, match="remat_policy"):
        M.preset("tiny", remat_policy="sometimes")
    with pytest.raises(ValueError, match="num_kv_heads"):
        M.preset("tiny", num_kv_heads=3)


def test_logits_match_transformers(tiny_hf):
    name, directory, hf_model = tiny_hf
    cfg, params = hf.load_params(directory)
    model = M.create(cfg)
    nnx.update(model, params)
    tokens = np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 48))  # longer than llama3's original ctx
    with torch.no_grad():
        ref = hf_model(torch.tensor(tokens)).logits.numpy()
    ours, _ = model(jnp.asarray(tokens))
    assert ours.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def tiny():
    return M.create(M.preset("tiny-llama3"))


def test_scan_unrolled_and_remat_agree(tiny):
    tokens = jnp.asarray(np.random.RandomState(1).randint(0, 256, (2, 24)))
    ref, _ = tiny(tokens)
    for options in (dict(scan_layers=False), dict(remat_policy="full"), dict(scan_layers=False, remat_policy="dots")):
        other = M.create(tiny.cfg.replace(**options))
        nnx.update(other, nnx.state(tiny, nnx.Param))
        out, _ = other(tokens)
        np.testing.assert_allclose(out, ref, atol=1e-5)

    def loss(model):
        return model(tokens)[0].mean()

    g_ref = nnx.grad(loss)(tiny)
    remat = M.create(tiny.cfg.replace(remat_policy="qkv_proj"))
    nnx.update(remat, nnx.state(tiny, nnx.Param))
    g_remat = nnx.grad(loss)(remat)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g_ref, g_remat)


def test_packed_segments_attend_only_within_themselves(tiny):
    rng = np.random.RandomState(2)
    a, b = rng.randint(0, 256, 5), rng.randint(0, 256, 9)
    packed = np.concatenate([a, b, [0, 0]])[None]
    segments = np.array([[1] * 5 + [2] * 9 + [0, 0]])
    positions = np.array([list(range(5)) + list(range(9)) + [0, 0]])
    out, _ = tiny(jnp.asarray(packed), positions=jnp.asarray(positions), segment_ids=jnp.asarray(segments))
    alone_a, _ = tiny(jnp.asarray(a[None]))
    alone_b, _ = tiny(jnp.asarray(b[None]))
    assert not np.isnan(np.asarray(out)).any()
    np.testing.assert_allclose(out[:, :5], alone_a, atol=1e-5)
    np.testing.assert_allclose(out[:, 5:14], alone_b, atol=1e-5)


def test_kv_cache_prefill_then_steps_equals_full_forward(tiny):
    tokens = jnp.asarray(np.random.RandomState(3).randint(0, 256, (2, 12)))
    full, _ = tiny(tokens)
    cache = M.init_cache(tiny.cfg, batch_size=2, max_len=32)
    logits, cache = tiny(tokens[:, :7], cache=cache)
    pieces = [logits]
    for i in range(7, 12):
        step, cache = tiny(tokens[:, i:i + 1], positions=jnp.full((2, 1), i), cache=cache)
        pieces.append(step)
    assert int(cache.index) == 12
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=1e-5)


def test_bfloat16_compute_with_float32_params(tiny):
    bf16 = M.create(tiny.cfg.replace(dtype="bfloat16"))
    nnx.update(bf16, nnx.state(tiny, nnx.Param))
    tokens = jnp.asarray(np.random.RandomState(4).randint(0, 256, (1, 16)))
    out, _ = bf16(tokens)
    ref, _ = tiny(tokens)
    assert out.dtype == jnp.float32
    assert nnx.state(bf16, nnx.Param)["embed"].value.dtype == jnp.float32
    assert np.abs(np.asarray(out) - np.asarray(ref)).max() < 0.05
