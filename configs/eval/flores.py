"""FLORES-200 devtest translation (x-LLaMA protocol: template-0 instruction, greedy, BLEU / chrF++ / spBLEU).

  python -m pivot_jax.evaluate --config configs/eval/flores.py:src=en,tgt=es,limit=100 --model SPEC \\
      --config.flores_dir=PATH/flores200_devtest [--config.spm_model=flores200_sacrebleu_tokenizer_spm.model]
"""

from pivot_jax.config import parse_arg
from pivot_jax.evaluate import eval_config


def get_config(arg=None):
    a = parse_arg(arg, src="en", tgt="es", limit="0", format="alpaca")
    c = eval_config()
    c.set = "translation"
    c.source_lang, c.target_lang = a.src, a.tgt
    c.limit = int(a.limit)
    c.prompt_format = a.format  # max_new_tokens stays at x-LLaMA's 512
    return c
