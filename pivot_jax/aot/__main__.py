"""Ahead-of-time planning: compile the real train step for a TPU slice on this host (libtpu, no TPU, no data, no
weights) and tell whether it fits, what it costs, and what to change when it does not fit.

  python -m pivot_jax.aot --config configs/FILE.py[:ARGS] --topology v5p-64 [--num_slices N]
      [--config.KEY=VALUE ...] [--hbm_gib G] [--nosearch] [--max_compiles 16] [--output FILE.json]

Slices by their Cloud names: v4-N, v5p-N (N TensorCores, two per chip), v5litepod-N or v5e-N, v6e-N (N chips).
Prints per-device memory (parameters, optimizer state, arguments, temporaries, generated code, total) against
the chip's HBM (v4 32 GiB, v5e 16, v5p 95, v6e 32), the FLOPs per step counted in the step's program (and as
XLA counts them) beside the analytic 6N + attention count, and a roofline lower bound on the step time with the
MFU it allows. When the config does not fit it compiles candidates (mesh split, remat policy, micro-batches,
then larger slices; at most --max_compiles) and prints the `--config.KEY=VALUE` line of the first that fits.
"""

from __future__ import annotations

import json
from typing import Any

import jax
from absl import flags
from ml_collections import config_flags

from pivot_jax.aot.planner import format_report, plan_config
from pivot_jax.cli import Command
from pivot_jax.paths import write_text_atomic


def _define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "config file (configs/FILE.py[:ARGS])", lock_config=True)
    flags.DEFINE_string("topology", None, "the TPU slice: v5p-64, v5litepod-16 (or v5e-16), v6e-8, v4-32, ...")
    flags.DEFINE_integer("num_slices", 1, "slices joined over the data-centre network (Multislice); the mesh's "
                         "data axis spans them", lower_bound=1)
    flags.DEFINE_float("hbm_gib", None, "plan against this much HBM per chip instead of the chip's (at most the "
                       "chip's: to keep headroom, or to test the search)")
    flags.DEFINE_bool("search", True, "when the config does not fit, search the smallest change that does")
    flags.DEFINE_integer("max_compiles", 16, "the search's budget of compiles", lower_bound=1)
    flags.DEFINE_string("output", None, "also write the figures as JSON here")
    flags.mark_flags_as_required(["config", "topology"])


def _aot(f: Any) -> dict[str, Any]:
    # The planner runs nothing: keep JAX off any accelerator this host has (a training job's TPUs, say).
    jax.config.update("jax_platforms", "cpu")
    report = plan_config(f.config, f.topology, f.num_slices, f.hbm_gib, f.search, f.max_compiles)
    print(format_report(report), flush=True)
    figures = report.to_dict() | {"config": config_flags.get_config_filename(f["config"]),
                                  "config_overrides": config_flags.get_override_values(f["config"])}
    if f.output:
        write_text_atomic(f.output, json.dumps(figures, indent=2) + "\n")
        print(f"wrote {f.output}")
    return figures


COMMAND = Command("pivot_jax.aot", __doc__, _define_flags, _aot, loggers=("pivot_jax.aot",))
main = COMMAND.main  # the command line in this process (tests)

if __name__ == "__main__":
    COMMAND.cli()
