"""Weight conversion between Hugging Face safetensors, GGUF and Orbax model directories.

  python -m pivot_jax.convert hf-to-orbax SRC_DIR DST [--dtype bfloat16]
  python -m pivot_jax.convert gguf-to-orbax FILE DST [--dtype bfloat16]
  python -m pivot_jax.convert orbax-to-hf SRC DST_DIR [--dtype bfloat16] [--max_shard_gb 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pivot_jax.cli import add_verbose_argument, exit_on_user_error
from pivot_jax.convert import model_dir


def _hf_to_orbax(args: argparse.Namespace) -> str:
    from pivot_jax.convert import hf
    from pivot_jax.pretrained import optional_tokenizer

    cfg, params = hf.load_params(args.src, dtype=args.dtype)
    cfg = cfg.replace(param_dtype=args.dtype or cfg.param_dtype)
    model_dir.save(args.dst, cfg, params, optional_tokenizer(Path(args.src)))
    return f"{cfg.num_params():,} parameters"


def _gguf_to_orbax(args: argparse.Namespace) -> str:
    from pivot_jax.convert import gguf
    from pivot_jax.tokenizer import Tokenizer

    cfg, params = gguf.load_params(args.src, dtype=args.dtype)
    cfg = cfg.replace(param_dtype=args.dtype or cfg.param_dtype)
    model_dir.save(args.dst, cfg, params, Tokenizer.from_gguf(args.src))
    return f"{cfg.num_params():,} parameters"


def _orbax_to_hf(args: argparse.Namespace) -> str:
    from pivot_jax.convert import hf
    from pivot_jax.pretrained import optional_tokenizer

    cfg, params = model_dir.load_params(args.src)
    tokenizer = optional_tokenizer(Path(args.src) / model_dir.TOKENIZER_DIR)
    token_ids = {}
    if tokenizer is not None:
        token_ids = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id}
        tokenizer.save(args.dst)
    hf.save_params(args.dst, cfg, params, dtype=args.dtype, max_shard_bytes=int(args.max_shard_gb * 2**30),
                   extra_config={k: v for k, v in token_ids.items() if v is not None})
    return f"{cfg.num_params():,} parameters"


COMMANDS = {"hf-to-orbax": _hf_to_orbax, "gguf-to-orbax": _gguf_to_orbax, "orbax-to-hf": _orbax_to_hf}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pivot_jax.convert", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--dtype", default=None, help="stored dtype (default: float32 / as in the source)")
    parser.add_argument("--max_shard_gb", type=float, default=5.0, help="orbax-to-hf: safetensors shard size")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    summary = exit_on_user_error(lambda: COMMANDS[args.command](args), args.verbose)
    print(f"{args.command}: {args.src} -> {args.dst} ({summary}, {time.perf_counter() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
