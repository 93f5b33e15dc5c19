"""X-AlpacaEval (PLUG protocol): answers to the instructions in language X, for pairwise judging, with the
share of answers in X; `format=plug` extracts the X answer after its marker and counts missing markers.

  python -m pivot_jax.evaluate --config configs/eval/x_alpacaeval.py:lang=zh,format=plug --model SPEC \\
      --config.file=PATH/x_alpacaeval/zh.json
"""

from pivot_jax.config import eval_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, lang="zh", limit="0", format="plug")
    c = eval_config()
    c.set = "alpaca_eval"
    c.name = f"x_alpacaeval/{a.lang}/{a.format}/greedy"
    c.source_lang = c.target_lang = a.lang
    c.limit = int(a.limit)
    c.prompt_format = a.format
    c.max_new_tokens = 2048 if a.format == "plug" else 1024  # PLUG answers twice
    return c
