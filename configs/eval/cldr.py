"""The built-in CLDR test split (no files needed): translation of names, scored like FLORES.

  python -m pivot_jax.evaluate --config configs/eval/cldr.py:src=en,tgt=es --model SPEC
"""

from pivot_jax.config import eval_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, src="en", tgt="es", limit="0", format="alpaca")
    c = eval_config()
    c.set = "cldr"
    c.source_lang, c.target_lang = a.src, a.tgt
    c.limit = int(a.limit)
    c.prompt_format = a.format
    c.max_new_tokens = 32
    return c
