"""PLUG(X): instruction in X, answered first in the pivot language and then in X (`baseline=true`: the
monolingual baseline that answers in X only, on the same data).

Paper settings (LLaMA-2-13B): 4 epochs, lr 5e-6, global batch 64, linear, warmup 0.03, weight decay 0,
length 4096.

  python -m pivot_jax.train --config configs/plug.py:lang=zh,model=llama2-13b --workdir runs/plug_zh \\
      --config.model.init_from=hf:/ckpt/llama-2-13b \\
      --config.data.alpaca_pivot=alpaca_en.json --config.data.alpaca_target=alpaca_{lang}.json
"""

from pivot_jax.config import paper_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, lang="zh", model="llama2-13b", baseline="false")
    c = paper_config("plug", a.model)
    c.data.method = "plug_monolingual" if a.baseline.lower() in ("1", "true", "yes") else "plug"
    c.data.langs = a.lang
    return c
