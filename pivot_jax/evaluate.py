"""Turn a checkpoint into the papers' numbers: `python -m pivot_jax.evaluate --config configs/eval/FILE.py[:ARGS]
--model SPEC [--output DIR] [--tag KEY=VALUE ...]`.

Generates over the evaluation set (sharded over the mesh like training, length-bucketed, greedy by default,
resumable), scores it with the set's protocol, and writes `predictions.jsonl`, `results.json` (every metric
with its protocol name and sample count), `results.md`, and one line per metric in the results index that
the scaling-law tools read.
"""

from __future__ import annotations

from typing import Any

from absl import flags
from ml_collections import config_flags

from pivot_jax import distributed
from pivot_jax.cli import Command
from pivot_jax.eval.chat_client import ChatClient
from pivot_jax.eval.run import JudgeOptions, evaluate, protocol_name


def _evaluate_from_flags(f: Any) -> None:
    distributed.initialize_from_flags(f)
    tags = dict(tag.split("=", 1) for tag in f.tag)
    output = f.output or f"runs/eval/{protocol_name(f.config).replace('/', '_')}"
    judge = None
    if f.judge:
        # Endpoint, model and key from flags or PIVOT_JUDGE_BASE_URL / PIVOT_JUDGE_MODEL / PIVOT_JUDGE_API_KEY.
        client = ChatClient(base_url=f.judge_base_url, model=f.judge_model, requests_per_minute=f.judge_rpm)
        judge = JudgeOptions(f.judge, f.judge_against, client, f.mi_eval_gate)
    evaluate(f.config, f.model, output, f.results_index or None, tags, judge)


def _define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "eval config (configs/eval/FILE.py[:ARGS])", lock_config=True)
    flags.DEFINE_string("model", None, "hf:DIR | gguf:FILE | orbax:DIR | run:WORKDIR[@STEP] (a trainer run)")
    flags.DEFINE_string("output", None, "predictions and results go here, a directory or gs:// (default: runs/eval/...)")
    flags.DEFINE_string("results_index", "runs/results_index.jsonl", "JSONL index appended with every metric")
    flags.DEFINE_multi_string("tag", [], "KEY=VALUE recorded in the index (e.g. pairs=1000 for scaling laws)")
    flags.DEFINE_enum("judge", None, ["pairwise", "score"], "LLM-judge this run against --judge_against")
    flags.DEFINE_string("judge_against", None, "output directory of the other model's run on the same eval config")
    flags.DEFINE_string("judge_base_url", None, "OpenAI-compatible endpoint (else $PIVOT_JUDGE_BASE_URL)")
    flags.DEFINE_string("judge_model", None, "judge model name (else $PIVOT_JUDGE_MODEL); the key only from env")
    flags.DEFINE_integer("judge_rpm", None, "judge requests per minute")
    flags.DEFINE_bool("mi_eval_gate", False, "pairwise: a wrong-language answer loses without asking the judge")
    distributed.define_flags()
    flags.mark_flags_as_required(["config", "model"])
    flags.register_validator("tag", lambda tags: all("=" in tag for tag in tags), "--tag takes KEY=VALUE")
    flags.register_multi_flags_validator(
        ["judge", "judge_against"], lambda v: not v["judge"] or v["judge_against"],
        "--judge needs --judge_against: the output directory of the run to compare with")


COMMAND = Command("pivot_jax.evaluate", __doc__, _define_flags, _evaluate_from_flags)

if __name__ == "__main__":
    COMMAND.cli()
