"""Attention over packed rows behind one call; `model.attention` chooses the implementation.

    attend = attention.packed_rows("auto", segment_ids)  # once per forward pass; segment_ids [batch, length]
    out = attend(q, k, v)  # q [batch, length, heads, head_dim], k and v [batch, length, kv_heads, head_dim]

Every implementation computes the same thing: causal attention within a row, each token attending only to the
tokens of its own segment (the examples packed into the row). Segment 0 is padding: no real token attends to it
and its own outputs, which carry no loss, are left unspecified.

- "xla": `jax.nn.dot_product_attention` with a [batch, 1, length, length] boolean mask (`attention_mask`); the
  reference, and the only path of KV-cache decoding, whose mask is against the cache slots.
- "splash": Pallas splash attention on TPU: segment ids, and a causal mask whose fully masked blocks are
  skipped. The length must be a multiple of 128 (the kernel's blocks span whole 128-lane vregs).
- "pallas_gpu": the Pallas (Triton) flash-attention kernel on GPU, with segment ids; lengths a multiple of 16.
- "cudnn": cuDNN flash attention through `jax.nn.dot_product_attention(implementation="cudnn")`, causal with a
  length per row. It takes no segment ids, so each row must hold one example followed by padding; a row that
  packs several gets NaN outputs (a NaN loss stops training) rather than attention across examples. bfloat16
  or float16 only.
- "auto": splash on TPU, pallas_gpu on GPU, xla on CPU; xla as well where the length does not fit the kernel.

No fast path builds a [length, length] mask. Under a mesh, the Pallas kernels run per device in `shard_map`
(rows split like `activation_batch`, heads like `activation_heads`), since XLA cannot partition a Pallas call.
On CPU an explicit fast path runs in the Pallas interpreter (cudnn: the same call on XLA's implementation): slow,
but it checks a kernel's results without an accelerator, which is what the tests do.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.gpu import attention as triton_attention
from jax.experimental.pallas.ops.tpu import splash_attention as splash
from jax.sharding import PartitionSpec

from pivot_jax.sharding import active_spec

Array = jax.Array
Attend = Callable[[Array, Array, Array], Array]

IMPLEMENTATIONS = ("auto", "xla", "splash", "pallas_gpu", "cudnn")
_NATIVE_PLATFORM = {"splash": "tpu", "pallas_gpu": "gpu", "cudnn": "gpu"}
_AUTO = {"tpu": "splash", "gpu": "pallas_gpu"}
# Block sizes tried, largest first; the sequence length must be a multiple of the smallest.
_SPLASH_BLOCKS = (512, 256, 128)
_TRITON_BLOCKS = (128, 64, 32, 16)
_LENGTH_MULTIPLE = {"splash": _SPLASH_BLOCKS[-1], "pallas_gpu": _TRITON_BLOCKS[-1], "cudnn": 1}

log = logging.getLogger(__name__)


def attention_mask(q_segments: Array, q_slots: Array, k_segments: Array, k_slots: Array) -> Array:
    """[batch, 1, q_len, k_len] boolean: same non-zero segment and key slot not after the query slot."""
    same = (q_segments[:, :, None] == k_segments[:, None, :]) & (q_segments[:, :, None] != 0)
    causal = k_slots[None, None, :] <= q_slots[None, :, None]
    return (same & causal)[:, None]


def xla(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """The reference: XLA's attention under an explicit boolean mask (any query and key slots, e.g. a cache)."""
    return jax.nn.dot_product_attention(q, k, v, mask=mask)


def resolve(name: str, length: int, platform: str) -> str:
    """The implementation `name` means for rows of `length` on `platform` ("cpu", "gpu", "tpu")."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"model.attention={name!r}: must be one of {IMPLEMENTATIONS}")
    if name == "auto":
        fast = _AUTO.get(platform)
        if fast and length % _LENGTH_MULTIPLE[fast]:
            log.info("model.attention='auto': length %d is not a multiple of %d; %s falls back to xla",
                     length, _LENGTH_MULTIPLE[fast], fast)
            return "xla"
        return fast or "xla"
    if name == "xla":
        return name
    if platform not in (_NATIVE_PLATFORM[name], "cpu"):
        raise ValueError(f"model.attention={name!r} runs on {_NATIVE_PLATFORM[name]} (or interpreted on cpu), "
                         f"not on {platform}; 'auto' picks this platform's kernel")
    if length % _LENGTH_MULTIPLE[name]:
        raise ValueError(f"model.attention={name!r} needs a sequence length that is a multiple of "
                         f"{_LENGTH_MULTIPLE[name]}, got {length} (set train.seq_len; 'auto' falls back to xla)")
    return name


def packed_rows(name: str, segment_ids: Array) -> Attend:
    """Self-attention over rows with `segment_ids` [batch, length] by the implementation `name` (a
    `model.attention` value); on CPU an explicit fast path runs interpreted."""
    platform = compile_platform()
    name = resolve(name, segment_ids.shape[1], platform)
    if name == "xla":
        slots = jnp.arange(segment_ids.shape[1], dtype=jnp.int32)
        mask = attention_mask(segment_ids, slots, segment_ids, slots)
        return functools.partial(xla, mask=mask)
    interpret = platform == "cpu"
    if interpret:
        log.warning("model.attention=%r on cpu runs in the Pallas interpreter: slow, for checking kernels", name)
    kernel = {"splash": splash_attention, "pallas_gpu": pallas_gpu_attention, "cudnn": cudnn_attention}[name]
    return functools.partial(kernel, segment_ids=segment_ids, interpret=interpret)


def compile_platform() -> str:
    """The platform being compiled for: the active mesh's devices' (an AOT compile for a TPU slice runs on a CPU
    host), else JAX's default backend."""
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh.empty else mesh.abstract_device
    return device.platform if device is not None else jax.default_backend()


def splash_attention(q: Array, k: Array, v: Array, segment_ids: Array, *, interpret: bool = False) -> Array:
    """Pallas splash attention (TPU): causal, segment ids; GQA maps query head h to kv head h // (heads/kv)."""

    def local(q, k, v, segment_ids):
        kernel = _splash_kernel(q.shape[2], q.shape[1], interpret)

        def row(q, k, v, segments):
            return kernel(q, k, v, splash.SegmentIds(q=segments, kv=segments))

        def heads_first(x):
            return x.transpose(0, 2, 1, 3)

        # The kernel does not scale the logits.
        out = jax.vmap(row)(heads_first(q * q.shape[-1] ** -0.5), heads_first(k), heads_first(v), segment_ids)
        return heads_first(out)

    return _per_device(local, q, k, v, segment_ids)


def _splash_kernel(heads: int, length: int, interpret: bool) -> splash.splash_attention_kernel.SplashAttentionKernel:
    # Built per layer call; JAX caches the block-mask processing (the costly part) by mask and block shape.
    block = next(b for b in _SPLASH_BLOCKS if length % b == 0)
    sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                              block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    mask = splash.MultiHeadMask([splash.CausalMask((length, length))] * heads)
    return splash.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def pallas_gpu_attention(q: Array, k: Array, v: Array, segment_ids: Array, *, interpret: bool = False) -> Array:
    """The Pallas (Triton) flash-attention kernel (GPU): causal, segment ids."""

    def local(q, k, v, segment_ids):
        # The kernel wants one kv head per query head: query head h reads kv head h // (heads/kv), as in xla.
        repeats = q.shape[2] // k.shape[2]
        k, v = jnp.repeat(k, repeats, axis=2), jnp.repeat(v, repeats, axis=2)
        block = next(b for b in _TRITON_BLOCKS if q.shape[1] % b == 0)
        backward = min(block, 32)  # the kernel's default backward tiles
        sizes = triton_attention.BlockSizes(block_q=block, block_k=block, block_q_dkv=backward,
                                            block_kv_dkv=backward, block_q_dq=backward, block_kv_dq=backward)
        return triton_attention.mha(q, k, v, segment_ids, sm_scale=q.shape[-1] ** -0.5, causal=True,
                                    block_sizes=sizes, interpret=interpret)

    return _per_device(local, q, k, v, segment_ids)


def cudnn_attention(q: Array, k: Array, v: Array, segment_ids: Array, *, interpret: bool = False) -> Array:
    """cuDNN flash attention (GPU), causal with per-row lengths: rows of one example then padding only."""
    if not interpret and q.dtype not in (jnp.bfloat16, jnp.float16):
        raise ValueError(f"model.attention='cudnn' needs model.dtype bfloat16 or float16, got {q.dtype}")
    lengths = jnp.sum(segment_ids != 0, axis=1, dtype=jnp.int32)
    out = jax.nn.dot_product_attention(q, k, v, is_causal=True, query_seq_lengths=lengths,
                                       key_value_seq_lengths=lengths,
                                       implementation=None if interpret else "cudnn")
    # A segment starting after slot 0 (a second example, or one after left padding) is what lengths cannot say.
    packed = jnp.any((segment_ids[:, 1:] != segment_ids[:, :-1]) & (segment_ids[:, 1:] != 0), axis=1)
    return jnp.where(packed[:, None, None, None], jnp.nan, out)


def _per_device(local: Callable[..., Array], q: Array, k: Array, v: Array, segment_ids: Array) -> Array:
    """`local` on each device's rows and heads under the active mesh and rules (XLA cannot split a Pallas call);
    directly when none are active."""
    q_spec = active_spec(("activation_batch", None, "activation_heads", None), q.shape)
    if q_spec is None:
        return local(q, k, v, segment_ids)
    kv_spec = active_spec(("activation_batch", None, "activation_kv_heads", None), k.shape)
    if kv_spec[2] != q_spec[2]:
        # kv heads not split like the query heads (too few for the axis): give every query head its own copy.
        k, v = (jnp.repeat(x, q.shape[2] // k.shape[2], axis=2) for x in (k, v))
        kv_spec = q_spec
    rows = PartitionSpec(q_spec[0], None)
    return jax.shard_map(local, mesh=jax.sharding.get_abstract_mesh(), in_specs=(q_spec, kv_spec, kv_spec, rows),
                         out_specs=q_spec, check_vma=False)(q, k, v, segment_ids)
