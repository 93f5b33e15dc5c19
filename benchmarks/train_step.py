"""Training-step throughput: pivot_jax's sharded `train_step` beside a PyTorch `transformers.LlamaForCausalLM`
+ AdamW step on the same shapes and batch, in the same run, for the SmolLM2-135M shape and the quickstart model.

  python benchmarks/train_step.py [--preset smollm2-135m quickstart] [--batch 4 16] [--seq_len 256] [--steps 5]
      [--dtype float32] [--remat_policy none] [--no_torch] [--json FILE]

Random initialisation for both (throughput does not depend on the weights); the batch is the synthetic packed
task. Prints tokens/s, TFLOP/s per device (6N + attention FLOPs, as the trainer logs) and the ratio.
"""

from __future__ import annotations

import argparse
import time

import jax

from pivot_jax import throughput
from pivot_jax.config import base_config
from pivot_jax.trainer import loop
from pivot_jax.trainer.data import global_batch, make_stream

from common import add_json_flag, report

VOCAB = {"smollm2-135m": 49152, "quickstart": 4096}  # the real tokenizers' sizes (the presets' own)


def measure(preset: str, batch: int, seq_len: int, steps: int, dtype: str, remat_policy: str, scan_layers: bool,
            torch_peer: bool) -> dict:
    """One row: our step and, unless `torch_peer` is False, torch's on the same batches."""
    config = base_config()
    config.model.preset = preset
    config.model.dtype = dtype
    config.model.remat_policy = remat_policy
    config.model.scan_layers = scan_layers
    config.train.global_batch_size = batch
    config.train.seq_len = seq_len
    config.train.steps = steps + 1
    config.data.vocab_size = VOCAB.get(preset, 32000)
    s = loop.setup(config)
    stream = make_stream(s.config, s.data_name, s.bos_id, "train")
    batches = [next(stream) for _ in range(steps + 1)]
    tokens = batch * seq_len
    flops = throughput.training_flops_per_token(s.model_cfg, seq_len) * tokens

    with s.activate():
        state = s.init_fn()
        start = time.perf_counter()
        state, metrics = s.step_fn(state, global_batch(batches[0], s.batch_sharding))
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        for b in batches[1:]:
            state, metrics = s.step_fn(state, global_batch(b, s.batch_sharding))
        jax.block_until_ready(metrics)
        ours = (time.perf_counter() - start) / steps
    row = {"model": preset, "params": f"{s.model_cfg.num_params() / 1e6:.1f}M", "batch": f"{batch}x{seq_len}",
           "pivot_jax tok/s": tokens / ours, "pivot_jax TFLOP/s": flops / ours / s.mesh.size / 1e12,
           "torch tok/s": None, "torch TFLOP/s": None, "pivot_jax / torch": None, "compile s": compile_s,
           "loss": float(metrics["loss"])}
    if torch_peer:
        theirs = _torch_seconds_per_step(s.model_cfg, dtype, batches)
        row.update({"torch tok/s": tokens / theirs, "torch TFLOP/s": flops / theirs / 1e12,
                    "pivot_jax / torch": theirs / ours})
    return row


def _torch_seconds_per_step(model_cfg, dtype: str, batches: list[dict]) -> float:
    import torch
    import transformers

    from pivot_jax.convert.hf import config_to_hf

    hf_config = transformers.LlamaConfig(**{k: v for k, v in config_to_hf(model_cfg).items()
                                            if k not in ("architectures", "torch_dtype", "model_type")})
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    model = transformers.LlamaForCausalLM(hf_config).to(torch_dtype).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)

    def torch_step(batch):
        inputs = torch.tensor(batch["decoder_input_tokens"], dtype=torch.long)
        targets = torch.tensor(batch["decoder_target_tokens"], dtype=torch.long)
        weights = torch.tensor(batch["decoder_loss_weights"], dtype=torch.float32)
        logits = model(input_ids=inputs).logits.float()
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                               reduction="none")
        loss = (ce * weights.reshape(-1)).sum() / weights.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    torch_step(batches[0])
    start = time.perf_counter()
    for batch in batches[1:]:
        torch_step(batch)
    return (time.perf_counter() - start) / (len(batches) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", nargs="+", default=["smollm2-135m", "quickstart"])
    parser.add_argument("--batch", type=int, nargs="+", default=[4, 16], help="rows, one per preset")
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--remat_policy", default="none")
    parser.add_argument("--unrolled", action="store_true", help="model.scan_layers=False")
    parser.add_argument("--no_torch", action="store_true", help="skip the PyTorch peer")
    add_json_flag(parser)
    args = parser.parse_args()
    if len(args.batch) != len(args.preset):
        parser.error(f"--batch takes one value per --preset ({len(args.preset)}), got {args.batch}")
    rows = [measure(p, b, args.seq_len, args.steps, args.dtype, args.remat_policy, not args.unrolled,
                    not args.no_torch) for p, b in zip(args.preset, args.batch)]
    notes = [f"compute {args.dtype}, remat {args.remat_policy}, {'unrolled' if args.unrolled else 'scanned'} "
             f"layers; mean of {args.steps} steps after one compile step; TFLOP/s counts 6N + causal attention "
             "for both", "torch attends within whole rows; ours within packed segments (same FLOPs counted)"]
    if not args.no_torch:
        import torch

        notes.append(f"torch {torch.__version__}, {torch.get_num_threads()} threads, AdamW, eager")
    report("train step", rows, notes, args.json)


if __name__ == "__main__":
    main()
