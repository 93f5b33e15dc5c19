"""Turn a checkpoint into the papers' numbers: `python -m pivot_jax.evaluate --config configs/eval/FILE.py[:ARGS]
--model SPEC [--output DIR] [--tag KEY=VALUE ...]`.

Generates over the evaluation set (sharded over the mesh like training, length-bucketed, greedy by default,
resumable), scores it with the set's protocol, and writes `predictions.jsonl`, `results.json` (every metric
with its protocol name and sample count), `results.md`, and one line per metric in the results index that
the scaling-law tools read.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pivot_jax import distributed
from pivot_jax.eval.run import JudgeOptions, evaluate, protocol_name


def main(argv: list[str]) -> None:
    from absl import flags

    from pivot_jax.cli import exit_on_user_error, setup_logging

    del argv
    f = flags.FLAGS
    setup_logging("pivot_jax")
    exit_on_user_error(lambda: _evaluate_from_flags(f), f.verbose)


def _evaluate_from_flags(f: Any) -> None:
    distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
    tags = dict(tag.split("=", 1) for tag in f.tag)
    output = Path(f.output or Path("runs") / "eval" / protocol_name(f.config).replace("/", "_"))
    judge = None
    if f.judge:
        from pivot_jax.eval.judge import ChatClient

        if not f.judge_against:
            raise SystemExit("--judge needs --judge_against: the output directory of the run to compare with")
        # Endpoint, model and key from flags or PIVOT_JUDGE_BASE_URL / PIVOT_JUDGE_MODEL / PIVOT_JUDGE_API_KEY.
        client = ChatClient(base_url=f.judge_base_url, model=f.judge_model, requests_per_minute=f.judge_rpm)
        judge = JudgeOptions(f.judge, Path(f.judge_against), client, f.mi_eval_gate)
    evaluate(f.config, f.model, output, Path(f.results_index) if f.results_index else None, tags, judge)


def cli() -> None:
    from absl import app, flags
    from ml_collections import config_flags

    from pivot_jax.cli import define_verbose_flag

    config_flags.DEFINE_config_file("config", None, "eval config (configs/eval/FILE.py[:ARGS])", lock_config=True)
    flags.DEFINE_string("model", None, "hf:DIR | gguf:FILE | orbax:DIR | run:WORKDIR[@STEP] (a trainer run)")
    flags.DEFINE_string("output", None, "where predictions and results go (default runs/eval/<protocol>)")
    flags.DEFINE_string("results_index", "runs/results_index.jsonl", "JSONL index appended with every metric")
    flags.DEFINE_multi_string("tag", [], "KEY=VALUE recorded in the index (e.g. pairs=1000 for scaling laws)")
    flags.DEFINE_enum("judge", None, ["pairwise", "score"], "LLM-judge this run against --judge_against")
    flags.DEFINE_string("judge_against", None, "output directory of the other model's run on the same eval config")
    flags.DEFINE_string("judge_base_url", None, "OpenAI-compatible endpoint (else $PIVOT_JUDGE_BASE_URL)")
    flags.DEFINE_string("judge_model", None, "judge model name (else $PIVOT_JUDGE_MODEL); the key only from env")
    flags.DEFINE_integer("judge_rpm", None, "judge requests per minute")
    flags.DEFINE_bool("mi_eval_gate", False, "pairwise: a wrong-language answer loses without asking the judge")
    distributed.define_flags()
    define_verbose_flag()
    flags.mark_flags_as_required(["config", "model"])
    app.run(main)


if __name__ == "__main__":
    sys.exit(cli())
