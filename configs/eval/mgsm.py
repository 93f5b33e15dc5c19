"""MGSM-style math: the question as an instruction, greedy; accuracy of the last number in the answer.

  python -m pivot_jax.evaluate --config configs/eval/mgsm.py:lang=es --model SPEC --config.file=PATH/mgsm_es.tsv
"""

from pivot_jax.config import eval_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, lang="es", limit="0", format="alpaca")
    c = eval_config()
    c.set = "math"
    c.name = f"mgsm/{a.lang}/{a.format}/greedy"
    c.source_lang = c.target_lang = a.lang
    c.limit = int(a.limit)
    c.prompt_format = a.format
    c.max_new_tokens = 256
    return c
