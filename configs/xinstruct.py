"""X-Instruction(X): English instruction + " Answer in {Language}. ", response in a low-resource language.

The paper does not state its fine-tuning settings in the released formats; this uses x-LLaMA's Alpaca-style
settings (3 epochs, lr 2e-5, batch 128, cosine, warmup 0.03, length 512) as the stated assumption.

  python -m pivot_jax.train --config configs/xinstruct.py:lang=sw,model=llama2-7b --workdir runs/xi_sw \\
      --config.model.init_from=hf:/ckpt/llama-2-7b --config.data.xinstruct_file=x_instruction_{lang}.jsonl
"""

from pivot_jax.config import paper_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, lang="sw", model="llama2-7b")
    c = paper_config("xllama", a.model)
    c.data.method = "xinstruct"
    c.data.langs = a.lang
    return c
