"""Look at a config's data before training on it.

  python -m pivot_jax.data show [NAME] --config configs/FILE.py[:ARGS] [--num 3] [--split train] [--config.KEY=V]
  python -m pivot_jax.data stats [NAME] --config configs/FILE.py[:ARGS] [--split train]

NAME is one of the config's seqio tasks or its mixture (default: the mixture). `show` prints rendered examples
with their token counts and which tokens carry loss; `stats` prints example counts, length percentiles, how
many examples `train.seq_len` drops or truncates (`data.overflow`), and how full packed rows are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from pivot_jax.cli import Command, Subcommand
from pivot_jax.data.tasks import SeqioStream
from pivot_jax.pretrained import load_tokenizer, model_config, tokenizer_spec
from pivot_jax.trainer.data import register_data


def _tasks(name: str) -> list:
    import seqio

    task_or_mixture = seqio.get_mixture_or_task(name)
    return list(getattr(task_or_mixture, "tasks", [task_or_mixture]))


def _raw(task, split: str) -> list[dict[str, str]]:
    ds = task.source.get_dataset(split=split, shuffle=False)
    return [{k: v.decode("utf-8") for k, v in ex.items()} for ex in ds.as_numpy_iterator()]


def show(name: str, tokenizer, split: str, num: int) -> None:
    for task in _tasks(name):
        print(f"=== {task.name} [{split}]")
        for ex in _raw(task, split)[:num]:
            prompt = tokenizer.encode(ex["inputs"])
            response = tokenizer.encode(ex["targets"]) + [tokenizer.eos_id]
            pieces = "".join(f"[{tokenizer.decode([t], skip_special_tokens=False)}]" for t in response)
            print(f"--- id {ex['id'] or '-'}: {len(prompt)} prompt tokens (no loss) + {len(response)} response "
                  f"tokens (loss)\n{ex['inputs']}{ex['targets']}\n    loss on: {pieces}\n")


def stats(name: str, tokenizer, split: str, seq_len: int, overflow: str, stream) -> None:
    print(f"{'task':<44} {'examples':>9} {'p50':>6} {'p90':>6} {'p99':>6} {'max':>6} {'over seq_len':>13}")
    for task in _tasks(name):
        lengths = np.array([len(tokenizer.encode(ex["inputs"])) + len(tokenizer.encode(ex["targets"])) + 1
                            for ex in _raw(task, split)])
        over = int((lengths > seq_len).sum())
        p50, p90, p99 = np.percentile(lengths, [50, 90, 99]) if len(lengths) else (0, 0, 0)
        print(f"{task.name:<44} {len(lengths):>9} {p50:>6.0f} {p90:>6.0f} {p99:>6.0f} {lengths.max(initial=0):>6} "
              f"{over:>6} {'dropped' if overflow == 'drop' else 'truncated'}")
    batches = [next(stream) for _ in range(4)]
    fill = np.mean([(b["decoder_segment_ids"] > 0).mean() for b in batches])
    per_row = np.mean([b["decoder_segment_ids"].max(axis=1).mean() for b in batches])
    print(f"\npacking into {seq_len}-token rows: {per_row:.2f} examples per row, {fill:.1%} of tokens used "
          f"(first {len(batches)} batches of {name})")


def _show(f: Any, task: str | None = None) -> None:
    name, tokenizer, _, _ = _load(f, task)
    show(name, tokenizer, f.split, f.num)


def _stats(f: Any, task: str | None = None) -> None:
    name, tokenizer, config, bos_id = _load(f, task)
    stream = SeqioStream(name, f.split, config.train.seq_len, config.train.global_batch_size, config.seed, bos_id,
                         shuffle=False)
    stats(name, tokenizer, f.split, config.train.seq_len, config.data.overflow, stream)


def _load(f: Any, task: str | None) -> tuple[str, Any, Any, int]:
    """The task (default: the config's mixture) registered, the tokenizer, the config and the BOS id."""
    config = f.config
    if config.data.source != "seqio":
        raise app.UsageError(f"--config: data.source is {config.data.source!r}; show/stats read seqio data")
    data_name, bos_id = register_data(config, model_config(config.model))
    return task or data_name, load_tokenizer(tokenizer_spec(config.data, config.model, "data show/stats")), config, bos_id


def _define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "config file (configs/FILE.py[:ARGS])", lock_config=True)
    flags.DEFINE_integer("num", 3, "show: examples per task")
    flags.DEFINE_string("split", "train", "train or validation")
    flags.mark_flags_as_required(["config"])


COMMAND = Command("pivot_jax.data", __doc__, _define_flags, [
    Subcommand("show", _show, "rendered examples, with the tokens that carry loss"),
    Subcommand("stats", _stats, "example counts, length percentiles, what seq_len drops, packing fill"),
], loggers=())  # seqio logs every feature at INFO

if __name__ == "__main__":
    COMMAND.cli()
