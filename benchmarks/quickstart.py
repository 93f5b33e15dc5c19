"""The quickstart's training speed on its own batches: `configs/quickstart.py` as it is beside the settings it
had before (full logits at every position, scanned layers), same batches, same run.

  python benchmarks/quickstart.py [--config configs/quickstart.py] [--steps 10] [--json FILE]

The quickstart's rows are ~93% prompt tokens that carry no loss, so projecting only the loss positions onto the
vocabulary (`train.loss_positions`) removes most of the output layer's work. Tokens/s counts every position of
the packed batch, as the trainer's log line does.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np

from pivot_jax.aot.plan import apply_overrides
from pivot_jax.config import load_config_file
from pivot_jax.data.tasks import SeqioStream
from pivot_jax.trainer import loop
from pivot_jax.trainer.data import global_batch

from common import add_json_flag, report

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "quickstart.py")
# What configs/quickstart.py set before (when it trained at ~6.4k tokens/s here).
PREVIOUS = {"train.loss_positions": 0, "model.scan_layers": True}


def tokens_per_second(config, steps: int) -> tuple[float, list[dict], float]:
    s = loop.setup(config)
    stream = SeqioStream(s.data_name, "train", config.train.seq_len, config.train.global_batch_size, config.seed,
                         s.bos_id)
    batches = [next(stream) for _ in range(steps + 1)]
    with s.activate():
        state = s.init_fn()
        state, metrics = s.step_fn(state, global_batch(batches[0], s.batch_sharding))
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for batch in batches[1:]:
            state, metrics = s.step_fn(state, global_batch(batch, s.batch_sharding))
        jax.block_until_ready(metrics)
        seconds = (time.perf_counter() - start) / steps
    return config.train.global_batch_size * config.train.seq_len / seconds, batches, float(metrics["loss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--steps", type=int, default=10)
    add_json_flag(parser)
    args = parser.parse_args()

    config = load_config_file(args.config)
    config.train.steps = args.steps + 1
    before, batches, loss_before = tokens_per_second(apply_overrides(config, PREVIOUS), args.steps)
    now, _, loss_now = tokens_per_second(config, args.steps)
    weights = np.stack([b["decoder_loss_weights"] for b in batches])
    changed = {k: config[k.split(".")[0]][k.split(".")[1]] for k in PREVIOUS}
    rows = [{"settings": "before: " + " ".join(f"{k}={v}" for k, v in PREVIOUS.items()), "tokens/s": before,
             "vs before": 1.0, "loss after the steps": loss_before},
            {"settings": "configs/quickstart.py", "tokens/s": now, "vs before": now / before,
             "loss after the steps": loss_now}]
    report("quickstart training speed", rows,
           [f"now: {' '.join(f'{k}={v}' for k, v in changed.items())}; {args.steps} steps of "
            f"{config.train.global_batch_size} x {config.train.seq_len} real quickstart tokens after one compile "
            f"step; {weights.mean():.1%} of positions carry loss, at most {int(weights.sum(-1).max())} per row"],
           args.json)


if __name__ == "__main__":
    main()
