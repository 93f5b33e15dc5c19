"""FLORES-200 devtest translation (x-LLaMA protocol: template-0 instruction, greedy, BLEU / chrF++ / spBLEU).

  python -m pivot_jax.evaluate --config configs/eval/flores.py:src=en,tgt=es,limit=100,dir=PATH/flores200_devtest \\
      --model SPEC [--config.spm_model=flores200_sacrebleu_tokenizer_spm.model]
"""

from pivot_jax.config import eval_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, src="en", tgt="es", limit="0", format="alpaca", dir="", new_tokens="512")
    c = eval_config()
    c.set = "translation"
    c.source_lang, c.target_lang = a.src, a.tgt
    c.flores_dir = a.dir  # or --config.flores_dir
    c.limit = int(a.limit)
    c.prompt_format = a.format
    c.max_new_tokens = int(a.new_tokens)  # x-LLaMA: 512
    return c
