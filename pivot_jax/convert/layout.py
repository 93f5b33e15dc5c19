"""Where every HF-named LLaMA tensor lives in our parameter tree, and how to turn one into the other.

HF checkpoints store one `[out, in]` matrix per layer; we store `[layers, ...]` stacks with heads as their
own axis. `params_from_tensors` fills our stacks tensor by tensor from any `TensorSource` (safetensors
shards, a GGUF file), so a model is never held in host memory twice; `tensors_from_params` goes back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from pivot_jax.errors import PivotError
from pivot_jax.model import LlamaConfig


class TensorSource(Protocol):
    """Tensors by HF name, loaded one at a time."""

    def keys(self) -> list[str]: ...

    def shape(self, name: str) -> tuple[int, ...]: ...

    def get(self, name: str) -> np.ndarray: ...


class WeightsError(PivotError, ValueError):
    """A checkpoint whose tensors do not fit the configured architecture."""


@dataclasses.dataclass(frozen=True)
class Slot:
    """One HF tensor <-> (our parameter path, layer index or None) with the reshapes between them."""

    hf_name: str
    path: tuple[str, ...]
    layer: int | None
    hf_shape: tuple[int, ...]
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


def _slots(cfg: LlamaConfig) -> Iterator[Slot]:
    e, h, n, k, m, v = cfg.embed_dim, cfg.head_dim, cfg.num_heads, cfg.num_kv_heads, cfg.mlp_dim, cfg.vocab_size
    same = lambda x: x  # noqa: E731
    yield Slot("model.embed_tokens.weight", ("embed",), None, (v, e), same, same)
    yield Slot("model.norm.weight", ("final_norm", "scale"), None, (e,), same, same)
    if not cfg.tie_embeddings:
        yield Slot("lm_head.weight", ("lm_head",), None, (v, e), lambda x: x.T, lambda x: x.T)
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        yield Slot(p + "input_layernorm.weight", ("layers", "attn_norm", "scale"), i, (e,), same, same)
        yield Slot(p + "post_attention_layernorm.weight", ("layers", "mlp_norm", "scale"), i, (e,), same, same)
        for proj, heads in (("q_proj", n), ("k_proj", k), ("v_proj", k)):
            yield Slot(p + f"self_attn.{proj}.weight", ("layers", "attn", proj), i, (heads * h, e),
                       lambda x, heads=heads: x.T.reshape(e, heads, h),
                       lambda x, heads=heads: x.reshape(e, heads * h).T)
        yield Slot(p + "self_attn.o_proj.weight", ("layers", "attn", "o_proj"), i, (e, n * h),
                   lambda x: x.T.reshape(n, h, e), lambda x: x.reshape(n * h, e).T)
        for proj in ("gate_proj", "up_proj"):
            yield Slot(p + f"mlp.{proj}.weight", ("layers", "mlp", proj), i, (m, e), lambda x: x.T, lambda x: x.T)
        yield Slot(p + "mlp.down_proj.weight", ("layers", "mlp", "down_proj"), i, (e, m), lambda x: x.T,
                   lambda x: x.T)


def param_shapes(cfg: LlamaConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Our parameter paths and their (stacked) shapes, computed from the config alone."""
    shapes: dict[tuple[str, ...], tuple[int, ...]] = {}
    for slot in _slots(cfg):
        if slot.path in shapes:
            continue
        one = slot.to_ours(np.empty(slot.hf_shape, np.uint8)).shape
        shapes[slot.path] = one if slot.layer is None else (cfg.num_layers, *one)
    return shapes


def _nest(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def _flatten(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    flat: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix + (key,)))
        else:
            flat[prefix + (key,)] = value
    return flat


def params_from_tensors(cfg: LlamaConfig, source: TensorSource, dtype: Any, origin: str,
                        place: Callable[[tuple[str, ...], np.ndarray], Any] | None = None) -> dict[str, Any]:
    """Fill our nested parameter dict from `source`, one parameter stack at a time.

    `place(path, array)` moves each finished stack to its device(s) (default: `jax.device_put`), so host memory
    holds at most one stack beyond what was already placed. Errors name the tensor and `origin`.
    """
    dtype = jnp.dtype(dtype)
    available = set(source.keys())
    by_name = {slot.hf_name: slot for slot in _slots(cfg)}
    by_path: dict[tuple[str, ...], list[Slot]] = {}
    for slot in by_name.values():
        by_path.setdefault(slot.path, []).append(slot)
    expected = set(by_name)
    missing = sorted(expected - available)
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise WeightsError(f"{origin}: missing tensor(s) {missing[:5]}{more} for a {cfg.num_layers}-layer model"
                           f"{' with untied embeddings' if not cfg.tie_embeddings else ''}")
    # Rotary tables some exporters add carry no weights.
    unexpected = sorted(n for n in available - expected if not n.endswith("rotary_emb.inv_freq"))
    if unexpected:
        raise WeightsError(f"{origin}: unexpected tensor(s) {unexpected[:5]}; the config does not match the "
                           "weights (layer count, tied embeddings?)")
    for name in sorted(expected):
        got = tuple(source.shape(name))
        want = by_name[name].hf_shape
        if got != want:
            raise WeightsError(f"{origin}: tensor {name} has shape {got}, the config expects {want}")

    placed: dict[tuple[str, ...], Any] = {}
    shapes = param_shapes(cfg)
    for path, slots in by_path.items():
        stack = np.empty(shapes[path], dtype)
        for slot in slots:
            ours = slot.to_ours(source.get(slot.hf_name))
            if slot.layer is None:
                stack[...] = ours
            else:
                stack[slot.layer] = ours
        placed[path] = jax.device_put(stack) if place is None else place(path, stack)
        del stack
    return _nest(placed)


def tensors_from_params(cfg: LlamaConfig, params: dict[str, Any], dtype: Any | None = None
                        ) -> Iterator[tuple[str, np.ndarray]]:
    """HF-named numpy tensors, produced lazily one at a time (in `dtype`, default the params' own)."""
    flat = _flatten(params)
    for slot in _slots(cfg):
        if slot.path not in flat:
            raise WeightsError(f"parameter {'/'.join(slot.path)} is missing from the checkpoint")
        value = flat[slot.path]
        if slot.layer is not None:
            value = value[slot.layer]
        array = np.asarray(jax.device_get(value))
        if dtype is not None:
            array = array.astype(dtype)
        yield slot.hf_name, np.ascontiguousarray(slot.to_hf(array))
