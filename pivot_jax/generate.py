"""Generate with a model: `python -m pivot_jax.generate --model SPEC --prompt "..." [--max_new_tokens N] [--chat]`.

SPEC is hf:DIR, gguf:FILE, orbax:DIR or run:WORKDIR[@STEP]; decoding is `pivot_jax.decode`.
On several hosts it takes the multi-host flags of `train` and `evaluate` (`pivot_jax.distributed`).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from absl import flags

from pivot_jax import distributed
from pivot_jax.cli import Command
from pivot_jax.pretrained import load_pretrained


def _define_flags() -> None:
    flags.DEFINE_string("model", None, "hf:DIR | gguf:FILE | orbax:DIR | run:WORKDIR[@STEP]")
    flags.DEFINE_multi_string("prompt", None, "a prompt; repeat for a batch")
    flags.DEFINE_integer("max_new_tokens", 64, "tokens to generate per prompt at most")
    flags.DEFINE_bool("chat", False, "wrap each prompt in the model's chat template")
    flags.DEFINE_float("temperature", 0.0, "sampling temperature; 0 = greedy")
    flags.DEFINE_integer("top_k", 0, "sample from the k most likely tokens (0 = all)")
    flags.DEFINE_float("top_p", 1.0, "sample from the smallest set of tokens with this much probability")
    flags.DEFINE_integer("seed", 0, "sampling seed")
    flags.DEFINE_string("dtype", None, "compute dtype, e.g. bfloat16 (default: the model's)")
    distributed.define_flags()
    flags.mark_flags_as_required(["model", "prompt"])


def _generate(f: Any) -> None:
    distributed.initialize_from_flags(f)  # the prompts go to every host
    pretrained = load_pretrained(f.model, dtype=f.dtype)
    start = time.perf_counter()
    texts, counts = pretrained.generate_with_counts(
        f.prompt, max_new_tokens=f.max_new_tokens, greedy=f.temperature == 0, temperature=f.temperature or 1.0,
        top_k=f.top_k, top_p=f.top_p, seed=f.seed, chat=f.chat)
    elapsed = time.perf_counter() - start
    for prompt, text in zip(f.prompt, texts):
        print(f"### {prompt}\n{text}\n")
    print(f"[{sum(counts)} new tokens in {elapsed:.2f}s including compilation]", file=sys.stderr)


COMMAND = Command("pivot_jax.generate", __doc__, _define_flags, _generate)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.cli()
