"""XQuAD / MLQA (x-LLaMA protocol: the language's QA instruction and layout, greedy; substring accuracy,
SQuAD exact match and F1).

  python -m pivot_jax.evaluate --config configs/eval/qa.py:dataset=xquad,lang=zh --model SPEC \\
      --config.file=PATH/xquad/xquad.zh.json
  python -m pivot_jax.evaluate --config configs/eval/qa.py:dataset=mlqa,lang=zh --model SPEC \\
      --config.file=PATH/mlqa/test-context-zh-question-zh.json
  python -m pivot_jax.evaluate --config configs/eval/qa.py:dataset=xquad,lang=es,prompt_lang=en --model SPEC \
      --config.file=PATH/xquad/xquad.es.json
"""

from pivot_jax.config import eval_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, dataset="xquad", lang="zh", limit="0", format="alpaca", prompt_lang="", file="", held_out="0",
                  new_tokens="64")
    c = eval_config()
    c.set = "qa"
    c.name = f"{a.dataset}/{a.lang}/{a.format}/greedy"
    c.source_lang = c.target_lang = a.lang
    c.file = a.file  # or --config.file
    c.held_out_fraction = float(a.held_out)  # > 0: only the articles training on this file held out
    c.limit = int(a.limit)
    c.prompt_format = a.format
    # x-LLaMA has QA prompts for ar el en hi tr vi zh (e.g. prompt_lang=en for es); "none": question + context only
    c.qa_prompt_lang = a.prompt_lang
    c.max_new_tokens = int(a.new_tokens)
    return c
