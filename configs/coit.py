"""x-LLaMA CoIT(X): pivot Alpaca + Alpaca in X + pivot->X translation as instructions (one language).

Paper settings (LLaMA-7B): 3 epochs, lr 2e-5, global batch 128, cosine, warmup 0.03, weight decay 0, length 512.

  python -m pivot_jax.train --config configs/coit.py:lang=zh,model=llama-7b --workdir runs/coit_zh \\
      --config.model.init_from=hf:/ckpt/llama-7b \\
      --config.data.alpaca_pivot=alpaca_en.json --config.data.alpaca_target=alpaca_{lang}.json \\
      --config.data.parallel_source=news/en-{lang}/train.en --config.data.parallel_target=news/en-{lang}/train.{lang}

With no parallel files the translation pairs come from the built-in CLDR data.
"""

from pivot_jax.config import paper_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, lang="zh", model="llama-7b")
    c = paper_config("xllama", a.model)
    c.data.method = "coit"
    c.data.langs = a.lang
    return c
