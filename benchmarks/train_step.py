"""Training-step throughput of a SmolLM2-135M-shaped model: pivot_jax's sharded `train_step` beside a PyTorch
`transformers.LlamaForCausalLM` + AdamW step on the same shapes and batch, in the same run.

  python benchmarks/train_step.py [--preset smollm2-135m] [--batch 4] [--seq_len 256] [--steps 5]
      [--dtype float32] [--remat_policy none]

Random initialisation for both (throughput does not depend on the weights); the batch is the synthetic packed
task. Prints tokens/s, TFLOP/s per device (6N + attention FLOPs, as the trainer logs) and the ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax

from pivot_jax import throughput
from pivot_jax.config import base_config
from pivot_jax.trainer import loop
from pivot_jax.trainer.data import global_batch, make_stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--remat_policy", default="none")
    parser.add_argument("--unrolled", action="store_true", help="model.scan_layers=False")
    parser.add_argument("--no_torch", action="store_true", help="skip the PyTorch peer")
    args = parser.parse_args()

    config = base_config()
    config.model.preset = args.preset
    config.model.dtype = args.dtype
    config.model.remat_policy = args.remat_policy
    config.model.scan_layers = not args.unrolled
    config.train.global_batch_size = args.batch
    config.train.seq_len = args.seq_len
    config.train.steps = args.steps + 1
    config.data.vocab_size = 49152
    s = loop.setup(config)
    stream = make_stream(s.config, s.data_name, s.bos_id, "train")
    batches = [next(stream) for _ in range(args.steps + 1)]
    tokens = args.batch * args.seq_len
    flops = throughput.training_flops_per_token(s.model_cfg, args.seq_len) * tokens
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} on "
          f"{jax.devices()[0].device_kind} x{s.mesh.size}; model {args.preset} "
          f"({s.model_cfg.num_params():,} params), batch {args.batch} x {args.seq_len}, compute {args.dtype}, "
          f"remat {args.remat_policy}")

    with s.activate():
        state = s.init_fn()
        start = time.perf_counter()
        state, metrics = s.step_fn(state, global_batch(batches[0], s.batch_sharding))
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        for batch in batches[1:]:
            state, metrics = s.step_fn(state, global_batch(batch, s.batch_sharding))
        jax.block_until_ready(metrics)
        ours = (time.perf_counter() - start) / args.steps
    print(f"pivot_jax:     {tokens / ours:10,.0f} tok/s  {flops / ours / s.mesh.size / 1e12:7.3f} TFLOP/s/device  "
          f"({ours * 1e3:.0f} ms/step, first step incl. compile {compile_s:.1f}s, loss {float(metrics['loss']):.3f})")

    if args.no_torch:
        return
    import torch
    import transformers

    from pivot_jax.convert.hf import config_to_hf

    hf_config = transformers.LlamaConfig(**{k: v for k, v in config_to_hf(s.model_cfg).items()
                                            if k not in ("architectures", "torch_dtype", "model_type")})
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
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
    theirs = (time.perf_counter() - start) / args.steps
    print(f"torch+HF:      {tokens / theirs:10,.0f} tok/s  {flops / theirs / 1e12:7.3f} TFLOP/s  "
          f"({theirs * 1e3:.0f} ms/step, {torch.get_num_threads()} threads)")
    print(f"ratio pivot_jax / torch: {theirs / ours:.2f}x   (torch attends within whole rows; ours within segments)")


if __name__ == "__main__":
    main()
