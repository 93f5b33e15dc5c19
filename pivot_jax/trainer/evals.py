"""The evaluations a run makes as it trains: the held-out loss and `eval.generate_config` on the current weights
(its metrics beside the training loss, its records in the results index), which steps run which, and which a
preemption cut short.

    due = due_evaluations(config, step, total_steps)         # {"loss", "generate"} or a part of it
    results = run_evaluations(s, params, step, due, generation_eval)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils
from ml_collections import ConfigDict

from pivot_jax.config import load_config_file, parse_tags
from pivot_jax.errors import ConfigError
from pivot_jax.eval.run import evaluate, protocol_name
from pivot_jax.jsonl import read_jsonl
from pivot_jax.pretrained import load_tokenizer
from pivot_jax.results import FILENAME as RESULTS_FILENAME
from pivot_jax.trainer.build import Setup
from pivot_jax.trainer.data import global_batch, make_stream

log = logging.getLogger("pivot_jax.train")

GenerationEval = Callable[[dict[str, Any], int], dict[str, float]]


def held_out_loss(s: Setup, params: dict[str, Any]) -> float | None:
    """The mean loss over `eval.steps` batches of the validation split (the same batches at every step); None
    when the mixture yields no validation rows (seqio rates tasks by training examples: a run with none, such
    as a sweep's amount-0 baseline, has no validation mixture either)."""
    stream = make_stream(s.config, s.data_name, s.bos_id, "validation")
    total, weight = 0.0, 0.0
    for _ in range(s.config.eval.steps):
        try:
            rows = next(stream)
        except StopIteration:
            break
        loss_sum, w = s.eval_fn(params, global_batch(rows, s.batch_sharding))
        total, weight = total + float(loss_sum), weight + float(w)
    if weight == 0:
        log.warning("held-out loss: no validation rows in %s; not reported", s.data_name or "the data")
        return None
    return total / weight


def generation_configs(config: ConfigDict) -> list[str]:
    """The eval configs of `eval.generate_config`: one, or several separated by `;` (a MuIT run scored in each of
    its languages)."""
    return [spec.strip() for spec in config.eval.generate_config.split(";") if spec.strip()]


def generation_eval(s: Setup, workdir: epath.Path, tokenizer_spec: str) -> GenerationEval:
    """`eval.generate_config` on the current weights, into WORKDIR/eval/step_N/NAME and WORKDIR/results_index.jsonl;
    returns its metrics as `gen/METRIC` (one eval config) or `gen/NAME/METRIC` (several)."""
    configs = [load_config_file(spec) for spec in generation_configs(s.config)]
    names = [protocol_name(cfg).replace("/", "_") for cfg in configs]
    if len(set(names)) < len(names):
        raise ConfigError(f"eval.generate_config: two eval configs share the name {names} (give each its own "
                          "`name` or languages)")
    tokenizer = load_tokenizer(tokenizer_spec)

    def run(params: dict[str, Any], step: int) -> dict[str, float]:
        model = nnx.merge(s.graphdef, params)
        metrics = {}
        for cfg, name in zip(configs, names):
            results = evaluate(cfg, f"{workdir}@step{step}", workdir / "eval" / f"step_{step}" / name,
                               workdir / RESULTS_FILENAME, parse_tags(s.config.eval.tags),
                               loaded=(model, tokenizer, s.mesh, s.rules), step=step)
            prefix = "gen/" if len(configs) == 1 else f"gen/{protocol_name(cfg)}/"
            metrics.update({prefix + r["name"]: r["value"] for r in results})
        return metrics

    return run


def generation_wanted(config: ConfigDict) -> bool:
    """Whether the run evaluates `eval.generate_config` at all (every N steps, or at the end)."""
    return bool(config.eval.generate_config) and bool(config.eval.generate_every_steps or config.eval.at_end)


def due_evaluations(config: ConfigDict, step: int, total_steps: int) -> set[str]:
    """Which evaluations step `step` runs: "loss" (held-out loss) and/or "generate" (`eval.generate_config`)."""
    every = {"loss": config.eval.every_steps, "generate": config.eval.generate_every_steps}
    due = {name for name, n in every.items() if n and step % n == 0}
    if config.eval.at_end and step == total_steps:
        due |= {"loss", "generate"} if config.eval.generate_config else {"loss"}
    return due


def run_evaluations(s: Setup, params: dict[str, Any], step: int, which: set[str],
                    generation: GenerationEval | None) -> dict[str, float]:
    results = {}
    if "loss" in which and (loss := held_out_loss(s, params)) is not None:
        results["eval_loss"] = loss
    if "generate" in which and generation:
        results.update(generation(params, step))
    return results


def unfinished_evaluations(config: ConfigDict, metrics_path: epath.Path, step: int, total_steps: int) -> set[str]:
    """Evaluations due at `step` that `metrics_path` does not hold (preempted or killed during them). Process 0
    reads the file and every host takes its answer, since evaluations run collectives on all of them."""
    due = sorted(due_evaluations(config, step, total_steps))
    missing = np.zeros(len(due), np.int32)
    if jax.process_index() == 0 and due:
        rows = [row for row in read_jsonl(metrics_path, torn_tail_ok=True) if row.get("step") == step]
        done = {"loss": any("eval_loss" in row for row in rows),
                "generate": any(key.startswith("gen/") for row in rows for key in row)}
        missing = np.array([not done[name] for name in due], np.int32)
    if jax.process_count() > 1:
        missing = multihost_utils.broadcast_one_to_all(missing)
    return {name for name, m in zip(due, missing) if m}
