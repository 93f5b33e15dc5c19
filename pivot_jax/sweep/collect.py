"""A sweep's results as one table: `SWEEP_DIR/results.csv` and `results.jsonl`, one row per point × metric.

    point, language, amount, seed, <other swept keys>, metric, value, samples, steps, tokens, flops, wall_s

Metrics are each point's final evaluation (its results index) and its final held-out loss (`eval_loss`, from
metrics.jsonl). `amount` is the number of translation pairs; `steps`, `tokens` and `flops` are the training
compute the point used (FLOPs: 6·N·tokens + attention, `pivot_jax.throughput`), `wall_s` its seconds over all
attempts. `python -m pivot_jax.scaling fit` reads this layout. A point without a language axis (an allocation
check's MuIT runs) takes each metric's language from its evaluation (`target_lang`) and the amount from its
`data.translation_amount`; its held-out loss covers the whole mixture (language and amount empty).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from etils import epath
from ml_collections import ConfigDict

from pivot_jax import throughput
from pivot_jax.jsonl import read_json, read_jsonl
from pivot_jax.paths import PathLike, as_path, write_text_atomic
from pivot_jax.pretrained import model_config
from pivot_jax.results import FILENAME as RESULTS_FILENAME
from pivot_jax.results import read_results
from pivot_jax.sweep.runner import point_workdir
from pivot_jax.sweep.spec import Sweep
from pivot_jax.sweep.state import SweepState

FIXED = ("point", "language", "amount", "seed")
MEASURES = ("metric", "value", "samples", "steps", "tokens", "flops", "wall_s")


def collect(sweep: Sweep, directory: PathLike) -> tuple[epath.Path, epath.Path, int]:
    """Write results.csv and results.jsonl for the finished points; returns both paths and the row count."""
    directory = as_path(directory)
    state = SweepState.load(directory, sweep.source, sweep.allocation)
    extra = [axis for axis in sweep.axes if axis not in FIXED]
    rows = []
    for point in sweep.points:
        workdir = point_workdir(directory, point)
        status = workdir / "status.json"
        if not status.exists() or read_json(status).get("state") != "finished":
            continue
        config = ConfigDict(read_json(workdir / "config.json"))
        compute = _compute(config)
        coordinates = {"point": point.name, **{k: point.values.get(k, "") for k in FIXED[1:]},
                       **{k: point.values[k] for k in extra}}
        wall = round(state.point(point.name).wall_s, 1)
        amounts = _amounts(config.data.translation_amount)
        for metric, value, samples, language in _metrics(workdir, config):
            where = {} if "language" in point.values else {"language": language, "amount": amounts.get(language, "")}
            rows.append({**coordinates, **where, "metric": metric, "value": value, "samples": samples, **compute,
                         "wall_s": wall})
    columns = [*FIXED, *extra, *MEASURES]
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path, jsonl_path = directory / "results.csv", directory / "results.jsonl"
    write_text_atomic(csv_path, text.getvalue())  # an interrupted collect leaves the previous files whole
    write_text_atomic(jsonl_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return csv_path, jsonl_path, len(rows)


def _compute(config: ConfigDict) -> dict[str, Any]:
    steps = int(config.train.steps)
    tokens = steps * config.train.global_batch_size * config.train.seq_len
    per_token = throughput.training_flops_per_token(model_config(config.model), config.train.seq_len)
    return {"steps": steps, "tokens": tokens, "flops": float(per_token * tokens)}


def _amounts(text: str) -> dict[str, int]:
    """`data.translation_amount` "es:3703,zh:297" -> {"es": 3703, "zh": 297} (a plain number names no language)."""
    pairs = [item.split(":") for item in text.split(",") if ":" in item]
    return {lang.strip(): int(n) for lang, n in pairs}


def _metrics(workdir: epath.Path, config: ConfigDict) -> list[tuple[str, float, int, str]]:
    """(metric, value, samples, target language) of the final evaluation and the final held-out loss."""
    results = read_results(workdir / RESULTS_FILENAME)
    final = max((r.step for r in results if r.step is not None), default=None)
    out = [(r.metric, r.value, r.samples, r.target_lang) for r in results if r.step == final]
    held_out = [row for row in read_jsonl(workdir / "metrics.jsonl", torn_tail_ok=True)
                if row.get("step") == config.train.steps and "eval_loss" in row]
    if held_out:
        rows = config.eval.steps * config.train.global_batch_size
        out.append(("eval_loss", held_out[-1]["eval_loss"], rows, ""))
    return out
