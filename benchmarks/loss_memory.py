"""Peak memory of the loss: the train step with the full float32 logits beside `train.loss_chunk`, same model,
batch and devices: on this CPU (the compiled step's `memory_analysis()`) and on a TPU slice (the AOT report,
`python -m pivot_jax.aot`).

  python benchmarks/loss_memory.py [--config configs/coit.py:model=llama3-8b] [--topology v5p-8] [--chunk 512]
      [--cpu_preset smollm2-135m --cpu_batch 4 --cpu_seq_len 1024] [--skip_aot] [--json FILE]

llama3-8b has a 128,256-token vocabulary: at coit's 128 x 512 batch on 4 chips each device's logits would be
32 x 512 x 128,256 float32 (7.8 GiB) if the compiler kept them whole. Each TPU compile takes about a minute here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import add_json_flag, report

GIB = 2**30


def aot_plan(config: str, topology: str, overrides: list[str]) -> dict:
    """Run the AOT command (no search) and return its JSON figures."""
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "plan.json"
        command = [sys.executable, "-m", "pivot_jax.aot", f"--config={config}", f"--topology={topology}",
                   "--nosearch", f"--output={output}", *overrides]
        env = dict(os.environ, TPU_SKIP_MDS_QUERY="1")
        env.pop("JAX_PLATFORMS", None)  # the TPU topology needs the libtpu plugin loaded
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        return json.loads(output.read_text())


def cpu_temporaries(preset: str, batch: int, seq_len: int, chunk: int) -> int:
    """The compiled train step's temporaries (one device: the mesh is 1 x 1 x 1; remat full)."""
    from pivot_jax.config import base_config
    from pivot_jax.trainer import loop

    config = base_config()
    # Every layer recomputed in the backward: what is left of the temporaries is mostly the loss's.
    config.model.preset, config.model.dtype, config.model.remat_policy = preset, "float32", "full"
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, 1, 1
    config.train.global_batch_size, config.train.seq_len, config.train.steps = batch, seq_len, 2
    config.train.loss_chunk = chunk
    s = loop.setup(config)
    with s.activate():
        compiled = s.step_fn.lower(s.abstract_state, s.abstract_batch()).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/coit.py:model=llama3-8b")
    parser.add_argument("--topology", default="v5p-8")
    parser.add_argument("--chunk", type=int, default=512, help="train.loss_chunk of the chunked step")
    parser.add_argument("--cpu_preset", default="smollm2-135m")
    parser.add_argument("--cpu_batch", type=int, default=4)
    parser.add_argument("--cpu_seq_len", type=int, default=1024)
    parser.add_argument("--skip_aot", action="store_true", help="the CPU rows only (no TPU compiles)")
    add_json_flag(parser)
    args = parser.parse_args()

    rows, notes = [], []
    full = cpu_temporaries(args.cpu_preset, args.cpu_batch, args.cpu_seq_len, 0)
    chunked = cpu_temporaries(args.cpu_preset, args.cpu_batch, args.cpu_seq_len, args.chunk)
    for name, temporaries in (("full logits", full), (f"loss_chunk={args.chunk}", chunked)):
        rows.append({"where": "this CPU (remat full)", "model": args.cpu_preset,
                     "batch": f"{args.cpu_batch}x{args.cpu_seq_len}", "loss": name,
                     "temporaries GiB": temporaries / GIB, "total GiB": None, "fits": None})
    notes.append(f"CPU: the chunked loss takes {chunked / full:.2f}x the temporaries of the full logits")
    if not args.skip_aot:
        plans = []
        for chunk in (0, args.chunk):
            plan = aot_plan(args.config, args.topology, [f"--config.train.loss_chunk={chunk}"])["plan"]
            plans.append(plan)
            rows.append({"where": f"{args.topology} (AOT)", "model": args.config, "batch": "the config's",
                         "loss": f"loss_chunk={chunk}" if chunk else "full logits",
                         "temporaries GiB": plan["memory"]["temporaries"] / GIB,
                         "total GiB": plan["memory"]["total"] / GIB, "fits": plan["fits"]})
        ratio = plans[1]["memory"]["temporaries"] / plans[0]["memory"]["temporaries"]
        notes += [f"{args.topology}: the chunked loss takes {ratio:.2f}x the temporaries of the full logits",
                  f"python -m pivot_jax.aot --config {args.config} --topology {args.topology} --nosearch "
                  f"--config.train.loss_chunk={{0,{args.chunk}}}"]
    report("loss memory (per device)", rows, notes, args.json)


if __name__ == "__main__":
    main()
