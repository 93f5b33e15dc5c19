"""Weight conversion between Hugging Face safetensors, GGUF and Orbax model directories.

  python -m pivot_jax.convert hf-to-orbax SRC_DIR DST [--dtype bfloat16]
  python -m pivot_jax.convert gguf-to-orbax FILE DST [--dtype bfloat16]
  python -m pivot_jax.convert orbax-to-hf SRC DST_DIR [--dtype bfloat16] [--max_shard_gb 5]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from absl import flags

from pivot_jax.cli import Command, Subcommand
from pivot_jax.convert import gguf, hf, model_dir
from pivot_jax.pretrained import optional_tokenizer
from pivot_jax.tokenizer import Tokenizer


def _define_flags() -> None:
    flags.DEFINE_string("dtype", None, "stored dtype, e.g. bfloat16 (default: float32 / as in the source)")
    flags.DEFINE_float("max_shard_gb", 5.0, "orbax-to-hf: safetensors shard size in GiB")


def _hf_to_orbax(f: Any, src_dir: str, dst: str) -> None:
    start = time.perf_counter()
    cfg, params = hf.load_params(src_dir, dtype=f.dtype)
    cfg = cfg.replace(param_dtype=f.dtype or cfg.param_dtype)
    model_dir.save(dst, cfg, params, optional_tokenizer(Path(src_dir)))
    _done("hf-to-orbax", src_dir, dst, cfg, start)


def _gguf_to_orbax(f: Any, file: str, dst: str) -> None:
    start = time.perf_counter()
    cfg, params = gguf.load_params(file, dtype=f.dtype)
    cfg = cfg.replace(param_dtype=f.dtype or cfg.param_dtype)
    model_dir.save(dst, cfg, params, Tokenizer.from_gguf(file))
    _done("gguf-to-orbax", file, dst, cfg, start)


def _orbax_to_hf(f: Any, src: str, dst_dir: str) -> None:
    start = time.perf_counter()
    cfg, params = model_dir.load_params(src)
    tokenizer = optional_tokenizer(Path(src) / model_dir.TOKENIZER_DIR)
    token_ids = {}
    if tokenizer is not None:
        token_ids = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id}
        tokenizer.save(dst_dir)
    hf.save_params(dst_dir, cfg, params, dtype=f.dtype, max_shard_bytes=int(f.max_shard_gb * 2**30),
                   extra_config={k: v for k, v in token_ids.items() if v is not None})
    _done("orbax-to-hf", src, dst_dir, cfg, start)


def _done(command: str, src: str, dst: str, cfg: Any, start: float) -> None:
    print(f"{command}: {src} -> {dst} ({cfg.num_params():,} parameters, {time.perf_counter() - start:.1f}s)")


COMMAND = Command("pivot_jax.convert", __doc__, _define_flags, [
    Subcommand("hf-to-orbax", _hf_to_orbax, "Hugging Face safetensors directory -> Orbax model directory"),
    Subcommand("gguf-to-orbax", _gguf_to_orbax, "GGUF file -> Orbax model directory (with its tokenizer)"),
    Subcommand("orbax-to-hf", _orbax_to_hf, "Orbax model directory -> Hugging Face safetensors directory"),
])
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.cli()
