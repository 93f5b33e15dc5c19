"""Generate with a model: `python -m pivot_jax.generate --model SPEC --prompt "..." [--max_new_tokens N] [--chat]`.

SPEC is hf:DIR, gguf:FILE, orbax:DIR or run:WORKDIR[@STEP]; decoding is `pivot_jax.decode`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from pivot_jax import distributed
from pivot_jax.cli import add_verbose_argument, exit_on_user_error
from pivot_jax.pretrained import load_pretrained


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pivot_jax.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="hf:DIR | gguf:FILE | orbax:DIR | run:WORKDIR[@STEP]")
    parser.add_argument("--prompt", action="append", required=True, help="repeat for a batch")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--chat", action="store_true", help="wrap each prompt in the model's chat template")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top_k", type=int, default=0)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default=None, help="compute dtype, e.g. bfloat16")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)

    distributed.initialize()  # auto-detected on TPU VM pods and SLURM jobs; the prompts go to every host
    pretrained = exit_on_user_error(lambda: load_pretrained(args.model, dtype=args.dtype), args.verbose)
    start = time.perf_counter()
    texts, counts = pretrained.generate_with_counts(
        args.prompt, max_new_tokens=args.max_new_tokens, greedy=args.temperature == 0,
        temperature=args.temperature or 1.0, top_k=args.top_k, top_p=args.top_p, seed=args.seed, chat=args.chat)
    elapsed = time.perf_counter() - start
    for prompt, text in zip(args.prompt, texts):
        print(f"### {prompt}\n{text}\n")
    print(f"[{sum(counts)} new tokens in {elapsed:.2f}s including compilation]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
