"""FSDP memory per device: the SmolLM2-135M train state placed on 1 and on 8 CPU devices (mesh fsdp=N), with the
bytes each device really holds and what the compiled step needs beyond them, same run.

  python benchmarks/fsdp_memory.py [--devices 1 8] [--preset smollm2-135m] [--batch 8] [--seq_len 256] [--json F]

Each device count runs in its own process (`--xla_force_host_platform_device_count` is read when JAX starts).
Parameters and optimizer state are summed from the live arrays' shards on device 0; temporaries come from the
compiled step's `memory_analysis()`. With FSDP, params + optimizer per device should be ~1/N.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

MIB = 2**20


def _device_bytes(tree, device) -> int:
    import jax

    total = 0
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            if shard.device == device:
                total += shard.data.nbytes
    return total


def measure_here(preset: str, batch: int, seq_len: int) -> dict:
    """In this process: every device in one fsdp axis."""
    import jax

    from pivot_jax.config import base_config
    from pivot_jax.trainer import loop

    devices = jax.device_count()
    config = base_config()
    config.model.preset = preset
    config.model.dtype = "float32"
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, devices, 1
    config.train.global_batch_size = batch
    config.train.seq_len = seq_len
    config.train.steps = 2
    s = loop.setup(config)
    with s.activate():
        state = s.init_fn()
        compiled = s.step_fn.lower(s.abstract_state, s.abstract_batch()).compile()
    device = jax.devices()[0]
    params, opt = _device_bytes(state["params"], device), _device_bytes(state["opt_state"], device)
    temporaries = compiled.memory_analysis().temp_size_in_bytes
    return {"devices": devices, "mesh (data x fsdp x tensor)": f"1x{devices}x1", "params MiB": params / MIB,
            "optimizer MiB": opt / MIB, "params + optimizer MiB": (params + opt) / MIB,
            "step temporaries MiB": temporaries / MIB}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--preset", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file (run.py)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_here(args.preset, args.batch, args.seq_len)))
        return

    rows = []
    for n in args.devices:
        env = dict(os.environ, JAX_PLATFORMS="cpu",
                   XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}".strip())
        out = subprocess.run([sys.executable, __file__, "--child", "--preset", args.preset, "--batch",
                              str(args.batch), "--seq_len", str(args.seq_len)],
                             env=env, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"fsdp_memory on {n} devices failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]["params + optimizer MiB"]
    for row in rows:
        row["params + optimizer vs 1 device"] = row["params + optimizer MiB"] / base

    from common import report

    report("FSDP memory per device", rows,
           [f"{args.preset}, float32 params and AdamW state, batch {args.batch} x {args.seq_len}; measured on the "
            "live shards of device 0 (params + optimizer) and the compiled step (temporaries)"], args.json)


if __name__ == "__main__":
    main()
