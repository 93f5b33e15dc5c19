"""x-LLaMA MuIT: CoIT over several languages in one mixture, with a translation amount per language.

The amounts are what scaling-law allocations set (`amounts=ar:20000+zh:80000`, or one number for all; `+`
separates items inside the config argument, whose own separator is `,`). Paper settings as in coit.py.

  python -m pivot_jax.train --config configs/muit.py:langs=ar+el+hi+tr+vi+zh,amounts=10000 \\
      --workdir runs/muit --config.model.init_from=hf:/ckpt/llama-7b \\
      --config.data.alpaca_pivot=alpaca_en.json --config.data.alpaca_target=alpaca_{lang}.json \\
      --config.data.parallel_source=pairs/en-{lang}.en --config.data.parallel_target=pairs/en-{lang}.{lang}
"""

from pivot_jax.config import paper_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, langs="ar+el+hi+tr+vi+zh", amounts="", model="llama-7b")
    c = paper_config("xllama", a.model)
    c.data.method = "muit"
    c.data.langs = a.langs.replace("+", ",")
    c.data.translation_amount = a.amounts.replace("+", ",")
    return c
