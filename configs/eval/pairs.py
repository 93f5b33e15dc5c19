"""Translation of the pairs a training run held out of its own line-aligned files (e.g. Tatoeba), scored like
FLORES: the items are exactly those `data.validation_fraction=F` kept out of training (the same stable hash).

  python -m pivot_jax.evaluate --model run:runs/x \\
      --config configs/eval/pairs.py:tgt=es,src_file=PAIRS.en,tgt_file=PAIRS.es,held_out=0.02
"""

from pivot_jax.config import eval_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, src="en", tgt="es", src_file="", tgt_file="", held_out="0.02", limit="0", new_tokens="64")
    c = eval_config()
    c.set = "translation"
    c.name = f"pairs/{a.src}-{a.tgt}"
    c.source_lang, c.target_lang = a.src, a.tgt
    c.source_file, c.target_file = a.src_file, a.tgt_file
    c.held_out_fraction = float(a.held_out)
    c.limit = int(a.limit)
    c.max_new_tokens = int(a.new_tokens)
    return c
