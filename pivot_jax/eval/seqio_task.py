"""Evaluation sets registered as seqio tasks: what `pivot_jax.evaluate` generates from, for teacher-forced losses
and seqio evaluators.

    eval_task("pivot_eval_flores_en_es", eval_cfg, vocabulary, max_length=512)
"""

from __future__ import annotations

from typing import Any

from ml_collections import ConfigDict

from pivot_jax.data import formats
from pivot_jax.data.tasks import add_task
from pivot_jax.eval.items import build_items, render_prompt


def eval_task(name: str, eval_cfg: ConfigDict, vocabulary: Any, max_length: int, tokenizer: Any = None) -> str:
    """Register an evaluation set (`pivot_jax.evaluate` configs: FLORES, XQuAD/MLQA, X-AlpacaEval, MGSM, CLDR)
    as a seqio task whose `test` split holds the prompts in the config's format and the first reference as the
    target (empty for judge-only sets): teacher-forced losses and seqio evaluators see exactly what
    `python -m pivot_jax.evaluate` generates from. `tokenizer` renders `chat` prompts. Returns `name`."""
    items = build_items(eval_cfg)
    examples = [formats.Example(render_prompt(item, eval_cfg.prompt_format, tokenizer, eval_cfg.pivot),
                                item.references[0] if item.references else "", item.id) for item in items]
    add_task(name, lambda split: examples, vocabulary, splits=("test",), max_length=max_length,
             overflow="truncate")
    return name
