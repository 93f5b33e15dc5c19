"""The LLaMA family in Flax NNX: RMSNorm, RoPE (plain and LLaMA-3 scaled), SwiGLU, grouped-query attention.

Design points (see README "Design notes"):
- Decoder layers are always stored stacked, with a leading `layers` axis. `scan_layers=True` runs them with
  `jax.lax.scan` (one compiled layer, fast compiles for 80-layer models); `False` unrolls a Python loop over
  the same arrays. Checkpoints are therefore interchangeable between the two modes.
- Projection kernels keep heads as their own axis (`[embed, heads, head_dim]`) so tensor parallelism splits
  whole heads by a logical rule.
- Attention masks by segment and slot, so packed training rows (`segment_ids`, `positions`) and KV-cache decoding
  (the cache keeps the segment id of every slot; 0 means empty or padding) share one definition. Training
  rows go through `pivot_jax.attention` (`attention` picks XLA's masked reference or a fused kernel); decoding
  with a cache always uses the masked reference.
- `hidden_states` and `logits` split the forward pass, so a loss can project the final hidden states onto the
  vocabulary a block at a time (`pivot_jax.loss`) instead of holding the whole [batch, length, vocab] logits.
- Parameters are stored in `param_dtype`, computation runs in `dtype`; norms, softmax and logits run in
  float32.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct
from jax.ad_checkpoint import checkpoint_name

from pivot_jax import attention
from pivot_jax.sharding import constrain

Array = jax.Array


# Remat policies by name; "none" disables rematerialisation.
REMAT_POLICIES: dict[str, Callable | None] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "qkv_proj": jax.checkpoint_policies.save_only_these_names("query_proj", "key_proj", "value_proj"),
    "qkv_proj_and_attn_out": jax.checkpoint_policies.save_only_these_names(
        "query_proj", "key_proj", "value_proj", "attention_out"),
}



@dataclasses.dataclass(frozen=True)
class Llama3RopeScaling:
    """LLaMA-3.1 frequency-dependent RoPE scaling (HF `rope_type="llama3"`)."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Architecture plus the run-time options that change how (not what) the model computes."""

    vocab_size: int
    embed_dim: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    mlp_dim: int
    head_dim: int = 0  # 0 = embed_dim // num_heads
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: Llama3RopeScaling | None = None
    max_seq_len: int = 2048
    tie_embeddings: bool = False
    # Run-time options (not part of the architecture, not exported).
    param_dtype: str = "float32"
    dtype: str = "float32"
    scan_layers: bool = True
    remat_policy: str = "none"
    attention: str = "auto"  # see pivot_jax.attention: auto | xla | splash | pallas_gpu | cudnn

    def __post_init__(self):
        if self.head_dim == 0:
            if self.embed_dim % self.num_heads:
                raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
            object.__setattr__(self, "head_dim", self.embed_dim // self.num_heads)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"unknown remat_policy {self.remat_policy!r}; choose from {sorted(REMAT_POLICIES)}")
        if self.attention not in attention.IMPLEMENTATIONS:
            raise ValueError(f"unknown attention {self.attention!r}; choose from {attention.IMPLEMENTATIONS}")
        for name in ("param_dtype", "dtype"):
            jnp.dtype(getattr(self, name))  # raises a TypeError naming the bad dtype
        if isinstance(self.rope_scaling, dict):
            object.__setattr__(self, "rope_scaling", Llama3RopeScaling(**self.rope_scaling))

    def replace(self, **changes: Any) -> LlamaConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LlamaConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown LlamaConfig keys: {unknown}")
        return cls(**d)

    def num_params(self) -> int:
        """Parameter count from the shapes alone (checked against the built model in tests)."""
        e, h, q, kv, m = self.embed_dim, self.head_dim, self.num_heads, self.num_kv_heads, self.mlp_dim
        per_layer = e * h * (2 * q + 2 * kv) + 3 * e * m + 2 * e
        head = 0 if self.tie_embeddings else e * self.vocab_size
        return self.vocab_size * e + self.num_layers * per_layer + e + head


PRESETS: dict[str, LlamaConfig] = {
    # Published shapes (Meta model cards / HF configs).
    "llama-7b": LlamaConfig(vocab_size=32000, embed_dim=4096, num_layers=32, num_heads=32, num_kv_heads=32,
                        mlp_dim=11008, norm_eps=1e-6, max_seq_len=2048),
    "llama-13b": LlamaConfig(vocab_size=32000, embed_dim=5120, num_layers=40, num_heads=40, num_kv_heads=40,
                         mlp_dim=13824, norm_eps=1e-6, max_seq_len=2048),
    "llama2-7b": LlamaConfig(vocab_size=32000, embed_dim=4096, num_layers=32, num_heads=32, num_kv_heads=32,
                         mlp_dim=11008, norm_eps=1e-5, max_seq_len=4096),
    "llama2-13b": LlamaConfig(vocab_size=32000, embed_dim=5120, num_layers=40, num_heads=40, num_kv_heads=40,
                          mlp_dim=13824, norm_eps=1e-5, max_seq_len=4096),
    "llama2-70b": LlamaConfig(vocab_size=32000, embed_dim=8192, num_layers=80, num_heads=64, num_kv_heads=8,
                          mlp_dim=28672, norm_eps=1e-5, max_seq_len=4096),
    "llama3-8b": LlamaConfig(vocab_size=128256, embed_dim=4096, num_layers=32, num_heads=32, num_kv_heads=8,
                         mlp_dim=14336, norm_eps=1e-5, rope_theta=500000.0, max_seq_len=8192),
    "llama3-70b": LlamaConfig(vocab_size=128256, embed_dim=8192, num_layers=80, num_heads=64, num_kv_heads=8,
                          mlp_dim=28672, norm_eps=1e-5, rope_theta=500000.0, max_seq_len=8192),
    "llama3.1-8b": LlamaConfig(vocab_size=128256, embed_dim=4096, num_layers=32, num_heads=32, num_kv_heads=8,
                           mlp_dim=14336, norm_eps=1e-5, rope_theta=500000.0, max_seq_len=131072,
                           rope_scaling=Llama3RopeScaling()),
    "smollm2-135m": LlamaConfig(vocab_size=49152, embed_dim=576, num_layers=30, num_heads=9, num_kv_heads=3,
                            mlp_dim=1536, norm_eps=1e-5, rope_theta=100000.0, max_seq_len=8192,
                            tie_embeddings=True),
    # Small presets for the quickstart and tests.
    "quickstart": LlamaConfig(vocab_size=4096, embed_dim=128, num_layers=3, num_heads=4, num_kv_heads=2,
                              mlp_dim=384, max_seq_len=512, tie_embeddings=True),
    "tiny": LlamaConfig(vocab_size=256, embed_dim=64, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=128,
                    max_seq_len=256),
    "tiny-tied": LlamaConfig(vocab_size=256, embed_dim=64, num_layers=2, num_heads=4, num_kv_heads=4, mlp_dim=128,
                         max_seq_len=256, tie_embeddings=True),
    "tiny-llama3": LlamaConfig(vocab_size=256, embed_dim=64, num_layers=3, num_heads=4, num_kv_heads=1, mlp_dim=96,
                           rope_theta=500000.0, max_seq_len=256,
                           rope_scaling=Llama3RopeScaling(factor=8.0, original_max_position_embeddings=64)),
}


def preset(name: str, **overrides: Any) -> LlamaConfig:
    """A preset by name, with optional field overrides (`preset("llama2-7b", dtype="bfloat16")`)."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name].replace(**overrides)


# --------------------------------------------------------------------------------------------------------
# Rotary embeddings


def rope_inverse_frequencies(cfg: LlamaConfig) -> Array:
    """Per-pair inverse frequencies, with LLaMA-3 scaling applied when configured."""
    inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, cfg.head_dim, 2, dtype=jnp.float32) / cfg.head_dim))
    s = cfg.rope_scaling
    if s is None:
        return inv_freq
    low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = jnp.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return jnp.where(is_medium, smoothed, scaled)


def apply_rope(x: Array, positions: Array, inv_freq: Array) -> Array:
    """Rotate `x` [batch, length, heads, head_dim] by `positions` [batch, length] (rotate-half layout)."""
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [b, t, d/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x32 = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * cos + rotated * sin).astype(x.dtype)


# --------------------------------------------------------------------------------------------------------
# KV cache


@struct.dataclass
class KVCache:
    """Keys/values of every layer plus, per slot, the segment id of the token written there (0 = empty/pad).

    All rows of a batch write at the same slot `index`; rows shorter than others are left-padded, and their
    positions (for RoPE) are counted per row, so padding changes nothing but compute.
    """

    k: Array  # [layers, batch, max_len, kv_heads, head_dim]
    v: Array
    segment_ids: Array  # [batch, max_len] int32
    index: Array  # int32 scalar: next slot to write

    @property
    def max_len(self) -> int:
        return self.k.shape[2]


def init_cache(cfg: LlamaConfig, batch_size: int, max_len: int, dtype: Any | None = None) -> KVCache:
    dtype = jnp.dtype(dtype or cfg.dtype)
    shape = (cfg.num_layers, batch_size, max_len, cfg.num_kv_heads, cfg.head_dim)
    return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                   segment_ids=jnp.zeros((batch_size, max_len), jnp.int32), index=jnp.zeros((), jnp.int32))


# --------------------------------------------------------------------------------------------------------
# Modules


def _param(rngs: nnx.Rngs, shape: tuple[int, ...], axes: tuple[str, ...], dtype: Any, stddev: float | None):
    init = nnx.initializers.ones if stddev is None else nnx.initializers.normal(stddev)
    # Placement is the caller's job (jit with out_shardings from the logical rules); the model stays mesh-agnostic.
    return nnx.Param(init(rngs.params(), shape, dtype), out_sharding=axes, eager_sharding=False)


def project(x: Array, w: Array, contract: int = 1, out_dtype: Any = None) -> Array:
    """`x` [..., *w.shape[:contract]] times `w` -> [..., *w.shape[contract:]].

    On CPU as one flat [tokens, in] x [in, out] matmul: XLA:CPU lays out the backward of the batched product
    with transposing copies that doubled the MLP's backward time. Elsewhere as the batched product itself
    (on TPU the flat one raised llama2-7b's temporaries on v5p-8 by 1.3 GiB)."""
    lead, out = x.shape[:x.ndim - contract], w.shape[contract:]
    if attention.compile_platform() == "cpu":
        fan_in = math.prod(w.shape[:contract])
        y = jnp.dot(x.reshape(-1, fan_in), w.reshape(fan_in, -1), preferred_element_type=out_dtype)
        return y.reshape(*lead, *out)
    dims = ((tuple(range(x.ndim - contract, x.ndim)), tuple(range(contract))), ((), ()))
    return jax.lax.dot_general(x, w, dims, preferred_element_type=out_dtype)


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, param_dtype: Any, rngs: nnx.Rngs):
        self.scale = _param(rngs, (dim,), ("norm",), param_dtype, None)
        self.eps = eps

    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return normed.astype(x.dtype) * self.scale.value.astype(x.dtype)


class Attention(nnx.Module):
    def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
        e, h, pd = cfg.embed_dim, cfg.head_dim, jnp.dtype(cfg.param_dtype)
        std = 0.02
        self.q_proj = _param(rngs, (e, cfg.num_heads, h), ("embed", "heads", "head_dim"), pd, std)
        self.k_proj = _param(rngs, (e, cfg.num_kv_heads, h), ("embed", "kv_heads", "head_dim"), pd, std)
        self.v_proj = _param(rngs, (e, cfg.num_kv_heads, h), ("embed", "kv_heads", "head_dim"), pd, std)
        self.o_proj = _param(rngs, (cfg.num_heads, h, e), ("heads", "head_dim", "embed"), pd, std)
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, x: Array, positions: Array, inv_freq: Array, attend: attention.Attend,
                 kv: tuple[Array, Array] | None, cache_index: Array | None) -> tuple[Array, tuple[Array, Array] | None]:
        dt = self.dtype
        q = project(x, self.q_proj.value.astype(dt))
        k = project(x, self.k_proj.value.astype(dt))
        v = project(x, self.v_proj.value.astype(dt))
        q = checkpoint_name(q, "query_proj")
        k = checkpoint_name(k, "key_proj")
        v = checkpoint_name(v, "value_proj")
        q = apply_rope(q, positions, inv_freq)
        k = apply_rope(k, positions, inv_freq)
        q = constrain(q, ("activation_batch", "activation_length", "activation_heads", None))
        if kv is not None:
            cache_k, cache_v = kv
            start = (0, cache_index, 0, 0)
            k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), start)
            v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), start)
            kv = (k, v)
            k, v = k.astype(dt), v.astype(dt)
        out = attend(q, k, v)
        out = checkpoint_name(out, "attention_out")
        return project(out, self.o_proj.value.astype(dt), contract=2), kv


class MLP(nnx.Module):
    def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
        e, m, pd = cfg.embed_dim, cfg.mlp_dim, jnp.dtype(cfg.param_dtype)
        self.gate_proj = _param(rngs, (e, m), ("embed", "mlp"), pd, 0.02)
        self.up_proj = _param(rngs, (e, m), ("embed", "mlp"), pd, 0.02)
        self.down_proj = _param(rngs, (m, e), ("mlp", "embed"), pd, 0.02)
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, x: Array) -> Array:
        dt = self.dtype
        gate = project(x, self.gate_proj.value.astype(dt))
        up = project(x, self.up_proj.value.astype(dt))
        hidden = constrain(jax.nn.silu(gate) * up, ("activation_batch", "activation_length", "activation_mlp"))
        return project(hidden, self.down_proj.value.astype(dt))


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
        pd = jnp.dtype(cfg.param_dtype)
        self.attn_norm = RMSNorm(cfg.embed_dim, cfg.norm_eps, pd, rngs)
        self.attn = Attention(cfg, rngs)
        self.mlp_norm = RMSNorm(cfg.embed_dim, cfg.norm_eps, pd, rngs)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x: Array, positions: Array, inv_freq: Array, attend: attention.Attend,
                 kv: tuple[Array, Array] | None, cache_index: Array | None) -> tuple[Array, tuple | None]:
        attn_out, kv = self.attn(self.attn_norm(x), positions, inv_freq, attend, kv, cache_index)
        x = x + attn_out
        x = x + self.mlp(self.mlp_norm(x))
        return constrain(x, ("activation_batch", "activation_length", "activation_embed")), kv


class Llama(nnx.Module):
    """LLaMA-family decoder. `__call__(tokens)` returns float32 logits and the updated cache (if given);
    `hidden_states` and `logits` are its two halves."""

    def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        pd = jnp.dtype(cfg.param_dtype)
        self.embed = _param(rngs, (cfg.vocab_size, cfg.embed_dim), ("vocab", "embed"), pd, 0.02)

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_layers(rngs: nnx.Rngs) -> DecoderLayer:
            return DecoderLayer(cfg, rngs)

        self.layers = make_layers(rngs)
        self.final_norm = RMSNorm(cfg.embed_dim, cfg.norm_eps, pd, rngs)
        self.lm_head = None if cfg.tie_embeddings else _param(
            rngs, (cfg.embed_dim, cfg.vocab_size), ("embed", "vocab"), pd, 0.02)

    def __call__(self, tokens: Array, positions: Array | None = None, segment_ids: Array | None = None,
                 cache: KVCache | None = None) -> tuple[Array, KVCache | None]:
        hidden, cache = self.hidden_states(tokens, positions, segment_ids, cache)
        return self.logits(hidden), cache

    def logits(self, hidden: Array) -> Array:
        """Float32 logits [batch, length, vocab] of final hidden states [batch, length, embed] (from
        `hidden_states`; any length: a loss may pass a block of positions at a time)."""
        dt = jnp.dtype(self.cfg.dtype)
        if self.cfg.tie_embeddings:
            logits = project(hidden, self.embed.value.astype(dt).T, out_dtype=jnp.float32)
        else:
            logits = project(hidden, self.lm_head.value.astype(dt), out_dtype=jnp.float32)
        return constrain(logits.astype(jnp.float32), ("activation_batch", "activation_length", "activation_vocab"))

    def hidden_states(self, tokens: Array, positions: Array | None = None, segment_ids: Array | None = None,
                      cache: KVCache | None = None) -> tuple[Array, KVCache | None]:
        """The final-normed hidden states [batch, length, embed] and the updated cache (if given)."""
        cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
        b, t = tokens.shape
        if segment_ids is None:
            segment_ids = jnp.ones((b, t), jnp.int32)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        if cache is None:
            attend = attention.packed_rows(cfg.attention, segment_ids.astype(jnp.int32))
            cache_index, layer_caches = None, None
        else:
            cache_index = cache.index
            k_segments = jax.lax.dynamic_update_slice(cache.segment_ids, segment_ids.astype(jnp.int32),
                                                      (0, cache_index))
            q_slots = cache_index + jnp.arange(t, dtype=jnp.int32)
            mask = attention.attention_mask(segment_ids, q_slots, k_segments,
                                            jnp.arange(cache.max_len, dtype=jnp.int32))
            attend = functools.partial(attention.xla, mask=mask)
            layer_caches = (cache.k, cache.v)

        x = self.embed.value.astype(dt)[tokens]
        x = constrain(x, ("activation_batch", "activation_length", "activation_embed"))
        inv_freq = rope_inverse_frequencies(cfg)

        graphdef, layer_state = nnx.split(self.layers)

        def layer_fn(x, state, kv):
            return nnx.merge(graphdef, state)(x, positions, inv_freq, attend, kv, cache_index)

        policy = REMAT_POLICIES[cfg.remat_policy]
        if cfg.remat_policy != "none":
            layer_fn = jax.checkpoint(layer_fn, policy=policy, prevent_cse=not cfg.scan_layers)

        if cfg.scan_layers:
            def body(x, xs):
                state, kv = xs
                return layer_fn(x, state, kv)
            x, new_kv = jax.lax.scan(body, x, (layer_state, layer_caches))
        else:
            outs = []
            for i in range(cfg.num_layers):
                state_i = jax.tree.map(lambda a: a[i], layer_state)
                kv_i = None if layer_caches is None else (layer_caches[0][i], layer_caches[1][i])
                x, kv_i = layer_fn(x, state_i, kv_i)
                outs.append(kv_i)
            new_kv = None if layer_caches is None else tuple(jnp.stack(parts) for parts in zip(*outs))

        x = self.final_norm(x)
        if cache is None:
            return x, None
        return x, KVCache(k=new_kv[0], v=new_kv[1], segment_ids=k_segments, index=cache_index + t)


def create(cfg: LlamaConfig, seed: int = 0) -> Llama:
    """A randomly initialised model (use `nnx.eval_shape(lambda: create(cfg))` for shapes only)."""
    return Llama(cfg, rngs=nnx.Rngs(params=seed))
