"""Jit-compiled KV-cache decoding: batched, left-padded per row, greedy or sampled, with stop tokens.

    new_ids = generate_ids(model, [prompt_ids, ...], max_new_tokens=64, sampling=Sampling(), stop_ids=[eos])

The command over it is `python -m pivot_jax.generate`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from pivot_jax import model as model_lib


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. `greedy=True` ignores the other fields."""

    greedy: bool = True
    temperature: float = 1.0
    top_k: int = 0  # 0 = no top-k filter
    top_p: float = 1.0  # 1.0 = no nucleus filter

    def __post_init__(self):
        if not self.greedy and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


def filter_logits(logits: jax.Array, sampling: Sampling) -> jax.Array:
    """Temperature, then top-k, then top-p (nucleus) on float32 logits [batch, vocab]."""
    logits = logits / sampling.temperature
    if sampling.top_k:
        kth = jax.lax.top_k(logits, sampling.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if sampling.top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token is always kept).
        cutoff_index = jnp.sum(cumulative < sampling.top_p, axis=-1, keepdims=True)
        cutoff = jnp.take_along_axis(sorted_logits, cutoff_index, axis=-1)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return logits


def _next_token(logits: jax.Array, sampling: Sampling, rng: jax.Array) -> jax.Array:
    if sampling.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(rng, filter_logits(logits, sampling), axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "sampling", "stop_ids", "pad_id"))
def _decode(graphdef: nnx.GraphDef, state: nnx.State, tokens: jax.Array, prompt_mask: jax.Array,
            rng: jax.Array, *, max_new_tokens: int, sampling: Sampling, stop_ids: tuple[int, ...],
            pad_id: int) -> tuple[jax.Array, jax.Array]:
    """Prefill the left-padded prompts, then decode in a `while_loop` until every row stopped."""
    model = nnx.merge(graphdef, state)
    batch, prompt_len = tokens.shape
    cache = model_lib.init_cache(model.cfg, batch, prompt_len + max_new_tokens)
    segments = prompt_mask.astype(jnp.int32)
    positions = jnp.maximum(jnp.cumsum(segments, axis=1) - 1, 0)
    logits, cache = model(tokens, positions=positions, segment_ids=segments, cache=cache)
    rng, step_rng = jax.random.split(rng)
    first = _next_token(logits[:, -1], sampling, step_rng)
    stops = jnp.asarray(stop_ids or (-1,), jnp.int32)

    out = jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
    done = jnp.isin(first, stops)
    next_pos = positions[:, -1] + 1

    def cond(carry):
        step, _, _, done, _, _, _ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        step, cache, last, done, pos, out, rng = carry
        logits, cache = model(last[:, None], positions=pos[:, None],
                              segment_ids=jnp.ones((batch, 1), jnp.int32), cache=cache)
        rng, step_rng = jax.random.split(rng)
        token = jnp.where(done, pad_id, _next_token(logits[:, -1], sampling, step_rng))
        out = jax.lax.dynamic_update_slice(out, token[:, None], (0, step))
        return step + 1, cache, token, done | jnp.isin(token, stops), pos + 1, out, rng

    carry = (jnp.int32(1), cache, first, done, next_pos, out, rng)
    steps, _, _, _, _, out, _ = jax.lax.while_loop(cond, body, carry)
    return out, steps


def _bucket(n: int, multiple: int = 16) -> int:
    """Round prompt lengths up so that nearby lengths share one compiled program."""
    return max(multiple, -(-n // multiple) * multiple)


def generate_ids(model: model_lib.Llama, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 32,
                 sampling: Sampling = Sampling(), stop_ids: Sequence[int] = (), pad_id: int = 0,
                 seed: int = 0, place: Callable[[np.ndarray], jax.Array] | None = None,
                 row_multiple: int = 1) -> list[list[int]]:
    """New token ids for each prompt, cut after the first stop token (which is kept).

    `place` puts the [rows, length] prompt arrays on devices (e.g. split over the mesh's data axes); rows are
    padded to a multiple of `row_multiple` with copies of the first prompt, whose outputs are discarded.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > model.cfg.max_seq_len:
        raise ValueError(f"prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                         f"max_seq_len {model.cfg.max_seq_len}")
    length = _bucket(longest)
    rows = -(-len(prompts) // row_multiple) * row_multiple
    padded = list(prompts) + [prompts[0]] * (rows - len(prompts))
    tokens = np.full((rows, length), pad_id, np.int32)
    mask = np.zeros((rows, length), np.int32)
    for row, prompt in enumerate(padded):
        tokens[row, length - len(prompt):] = prompt
        mask[row, length - len(prompt):] = 1
    graphdef, state = nnx.split(model)
    put = place or jnp.asarray
    out, _ = _decode(graphdef, state, put(tokens), put(mask), jax.random.key(seed),
                     max_new_tokens=max_new_tokens, sampling=sampling, stop_ids=tuple(sorted(set(stop_ids))),
                     pad_id=pad_id)
    if not out.is_fully_addressable:  # rows split over several hosts: every host gets all of them
        out = multihost_utils.process_allgather(out, tiled=True)
    results = []
    stops = set(stop_ids)
    for row in np.asarray(out).tolist()[:len(prompts)]:
        cut = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
        results.append(row[:cut])
    return results
