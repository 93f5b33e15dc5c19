"""Build training data: translate an English instruction set into language X with PLUG's per-language prompts.

  python -m pivot_jax.construct translate --input alpaca_en.json --lang zh --output alpaca_zh.jsonl
      (--model gguf:FILE | --endpoint URL --endpoint_model NAME [--api_key_env OPENAI_API_KEY])

The input is Alpaca-style JSON (a list) or JSON lines: instruction, optional input, output (and optional id).
OUTPUT gets one record per translated example (id, lang, instruction, output, source_instruction, source_output,
truncated, raw); OUTPUT.dropped.jsonl the examples dropped (id, reason, raw); OUTPUT.summary.json the counts
(`.jsonl` of OUTPUT replaced). A rerun continues where the last one stopped. Languages: es, it, ko, zh.
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import app, flags

from pivot_jax.cli import Command, Subcommand
from pivot_jax.construct import translate as T
from pivot_jax.eval.chat_client import ChatClient
from pivot_jax.pretrained import load_pretrained


def _define_flags() -> None:
    flags.DEFINE_string("input", None, "the English instruction set: Alpaca JSON list or JSON lines")
    flags.DEFINE_string("output", None, "the translated examples, JSON lines (appended to; a rerun resumes)")
    flags.DEFINE_string("lang", None, f"the target language: {', '.join(sorted(T.PROMPTS))}")
    flags.DEFINE_string("model", None, "translate with our model: hf:DIR | gguf:FILE | orbax:DIR | run:WORKDIR[@STEP]")
    flags.DEFINE_string("endpoint", None, "translate with an OpenAI-compatible API at this base URL (.../v1)")
    flags.DEFINE_string("endpoint_model", None, "the model the endpoint serves (with --endpoint)")
    flags.DEFINE_string("api_key_env", "OPENAI_API_KEY", "the environment variable holding the endpoint's API key")
    flags.DEFINE_integer("batch_size", 8, "examples per model batch, or per round of endpoint requests",
                         lower_bound=1)
    flags.DEFINE_integer("max_new_tokens", 2048, "tokens of an answer at most", lower_bound=1)
    flags.DEFINE_integer("max_input_tokens", T.MAX_INPUT_TOKENS, "truncate longer English examples first (model "
                         "tokens with --model, whitespace-separated words with --endpoint)", lower_bound=2)
    flags.DEFINE_integer("limit", None, "translate only the input's first N records", lower_bound=0)
    flags.DEFINE_bool("retry_dropped", False, "send the examples of OUTPUT.dropped.jsonl again")
    flags.DEFINE_bool("check_language", True, "drop answers that are not in --lang (py3langid); --nocheck_language "
                      "keeps them")
    flags.DEFINE_string("dtype", None, "our model's compute dtype, e.g. bfloat16 (default: the model's)")
    flags.DEFINE_string("cache_dir", None, "the endpoint's response cache (default: the judge client's, "
                        "$PIVOT_JUDGE_CACHE_DIR or ~/.cache/pivot_jax/judge)")
    flags.DEFINE_integer("max_retries", 5, "retries of a failed endpoint request", lower_bound=0)
    flags.DEFINE_integer("workers", 4, "endpoint requests in flight at once", lower_bound=1)


def _engine(f: Any) -> T.Engine:
    if bool(f.model) == bool(f.endpoint):
        raise app.UsageError("give one of --model (our model) and --endpoint (an OpenAI-compatible API)")
    if f.model:
        return T.model_engine(load_pretrained(f.model, dtype=f.dtype), max_new_tokens=f.max_new_tokens,
                              batch_size=f.batch_size)
    if not f.endpoint_model:
        raise app.UsageError("--endpoint needs --endpoint_model")
    client = ChatClient(f.endpoint, f.endpoint_model, os.environ.get(f.api_key_env) or None,
                        cache_dir=f.cache_dir, max_retries=f.max_retries, max_workers=f.workers)
    return T.endpoint_engine(client, max_new_tokens=f.max_new_tokens, batch_size=f.batch_size)


def _translate(f: Any) -> dict[str, Any]:
    T.prompt_template(f.lang)  # an unknown language fails before a model loads
    summary = T.translate_file(f.input, f.output, f.lang, _engine(f), max_input_tokens=f.max_input_tokens,
                               limit=f.limit, retry_dropped=f.retry_dropped, check_language=f.check_language)
    print(json.dumps(summary, indent=2, ensure_ascii=False), flush=True)
    print(f"wrote {f.output}, {T.sibling(f.output, '.dropped.jsonl')} and {T.sibling(f.output, '.summary.json')}")
    return summary


COMMAND = Command("pivot_jax.construct", __doc__, _define_flags, [
    Subcommand("translate", _translate, "an English instruction set -> language X (PLUG's prompts)",
               required=("input", "output", "lang")),
])
main = COMMAND.main  # the command line in this process (tests)

if __name__ == "__main__":
    COMMAND.cli()
