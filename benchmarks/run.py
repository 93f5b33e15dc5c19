"""Every benchmark, each in its own process, then one table of the goals: where pivot_jax stands against its
peers measured in the same run on this machine.

  python benchmarks/run.py [--quick] [--only SECTION ...] [--output results.json]

Sections: matmul (this machine's float32 peak), train_step (SmolLM2-135M shape and the quickstart model beside
torch + transformers), quickstart (the quickstart's real batches: its config against the settings it had
before), generate (greedy decoding at batch 1 and 8 beside transformers' generate), pipeline (the
seqio input pipeline beside the trainer), fsdp (memory per device on 1 vs 8 CPU devices), loss_memory
(full vs chunked loss: SmolLM2-135M on this CPU, llama3-8b on v5p-8 from the AOT report), maxtext (MaxText
0.2.5 in its own Python 3.12 virtualenv: its AOT compile of llama2-7b on v5p-8 beside ours, its CPU train
step). `--quick` runs shorter versions (fewer steps and tokens, no TPU compiles of llama3-8b, MaxText only if
its virtualenv exists).
A section that fails is reported with its error and the others still run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import format_table, machine_line

HERE = Path(__file__).resolve().parent
QUICKSTART = str(HERE.parent / "configs" / "quickstart.py")
QUICKSTART_BEFORE = 6400  # tokens/s of the quickstart before the work on speed (2-core dev CPU, the figure)

# name -> (script and arguments, the --quick arguments: None skips the section).
SECTIONS: dict[str, tuple[list[str], list[str] | None]] = {
    "matmul": (["matmul_peak.py"], ["matmul_peak.py", "--quick", "--repeats", "3"]),
    "train_step": (["train_step.py"], ["train_step.py", "--steps", "2"]),
    "quickstart": (["quickstart.py"], ["quickstart.py", "--steps", "4"]),
    "generate": (["generate_speed.py", "--batch", "1", "8"],
                 ["generate_speed.py", "--batch", "1", "8", "--max_new_tokens", "16", "--repeats", "1"]),
    "pipeline": (["data_pipeline.py", f"--config={QUICKSTART}"],
                 ["data_pipeline.py", f"--config={QUICKSTART}", "--batches", "10", "--train_steps", "2"]),
    "fsdp": (["fsdp_memory.py"], ["fsdp_memory.py", "--preset", "quickstart"]),
    "loss_memory": (["loss_memory.py"], ["loss_memory.py", "--skip_aot", "--cpu_seq_len", "512", "--chunk", "128"]),
    "maxtext": (["maxtext_peer.py"], ["maxtext_peer.py", "--no_install", "--skip_train"]),
}


def run_section(name: str, argv: list[str], tmp: Path) -> dict[str, Any]:
    """Run one benchmark script; its own printout goes to the terminal, its rows come back."""
    out = tmp / f"{name}.json"
    command = [sys.executable, str(HERE / argv[0]), *argv[1:], "--json", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=HERE.parent, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode or not out.exists():
        error = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
        print(f"\n## {name}: FAILED after {seconds:.0f}s: {error[0]}\n{done.stderr[-2000:]}", flush=True)
        return {"benchmark": name, "failed": error[0], "seconds": seconds}
    return json.loads(out.read_text()) | {"seconds": seconds}


def _rows(results: dict[str, Any], section: str) -> list[dict[str, Any]]:
    return results.get(section, {}).get("rows", [])


def _find(rows: list[dict[str, Any]], key: str, value: Any, slice_prefix: str = "") -> dict[str, Any] | None:
    return next((r for r in rows if r.get(key) == value and str(r.get("slice", "")).startswith(slice_prefix)),
                None)


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals on this machine, each with what was measured (None: the section did not run)."""
    out = []

    def goal(name: str, target: float, measured: float | None, higher_is_better: bool = True, how: str = ""):
        met = None if measured is None else (measured >= target if higher_is_better else measured <= target)
        out.append({"goal": name, "target": f"{'>=' if higher_is_better else '<='} {target:g}",
                    "measured": measured, "met": {None: "not measured", True: "yes", False: "no"}[met],
                    "how": how})

    steps = _rows(results, "train_step")
    for preset in ("smollm2-135m", "quickstart"):
        row = _find(steps, "model", preset)
        goal(f"train step vs torch, float32 ({preset})", 1.2, row and row["pivot_jax / torch"],
             how="pivot_jax tok/s / torch+transformers tok/s")
    row = _find(_rows(results, "quickstart"), "settings", "configs/quickstart.py")
    goal("quickstart tokens/s vs before this work", 2.0, row and row["tokens/s"] / QUICKSTART_BEFORE,
         how=f"tokens/s / the {QUICKSTART_BEFORE:,} the trainer logged on the 2-core dev CPU before"
             + (f"; {row['vs before']:.2f}x its previous settings in this run" if row else ""))
    row = _find(_rows(results, "generate"), "batch", 8)
    goal("greedy decoding vs transformers, batch 8", 2.0, row and row["ratio"], how="new tokens/s")
    maxtext = _rows(results, "maxtext")
    ours, theirs = _find(maxtext, "peer", "pivot_jax"), _find(maxtext, "peer", "MaxText")
    ratio = None
    if ours and theirs and ours.get("total GiB") and theirs.get("total GiB"):
        ratio = ours["total GiB"] / theirs["total GiB"]
    goal("AOT per-device memory vs MaxText (llama2-7b, v5p-8)", 1.0, ratio, higher_is_better=False,
         how="total GiB, ours / MaxText's")
    ours_cpu, theirs_cpu = _find(steps, "model", "smollm2-135m"), _find(maxtext, "peer", "MaxText", "cpu")
    out.append({"goal": "train step vs MaxText on this CPU (SmolLM2-135M shape, float32)", "target": "—",
                "measured": ours_cpu and theirs_cpu and ours_cpu["pivot_jax tok/s"] / theirs_cpu["tokens/s/device"],
                "met": "—", "how": "pivot_jax tok/s / MaxText tokens/s (its log's median step), same batch"})
    square = _rows(results, "matmul")[:1]  # matmul_peak.py's first row: the square product
    peak = square and max(square[0]["XLA GFLOP/s"], square[0]["torch GFLOP/s"])
    for preset in ("smollm2-135m", "quickstart"):
        row = _find(steps, "model", preset)
        if peak and row:
            out.append({"goal": f"fraction of this machine's float32 matmul peak ({preset} train step)",
                        "target": "—", "measured": row["pivot_jax TFLOP/s"] * 1e3 / peak, "met": "—",
                        "how": f"{row['pivot_jax TFLOP/s'] * 1e3:.1f} of {peak:,.0f} GFLOP/s"})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs; skip the llama3-8b compiles")
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), default=None)
    parser.add_argument("--output", type=Path, default=None, help="write every section's rows here (JSON)")
    args = parser.parse_args()

    print(f"machine: {machine_line()}\nmode: {'quick' if args.quick else 'full'}", flush=True)
    results: dict[str, Any] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or SECTIONS:
            full, quick = SECTIONS[name]
            argv = quick if args.quick else full
            if argv is None:
                print(f"\n## {name}: skipped in --quick mode", flush=True)
                continue
            results[name] = run_section(name, argv, Path(tmp))
    table = goals(results)
    print(f"\n## goals (all sections in {time.perf_counter() - start:.0f}s)\n\n{format_table(table)}")
    failed = [f"{name}: {r['failed']}" for name, r in results.items() if "failed" in r]
    if failed:
        print("\nfailed sections:\n  " + "\n  ".join(failed))
    if args.output:
        args.output.write_text(json.dumps({"machine": machine_line(), "quick": args.quick, "sections": results,
                                           "goals": table}, indent=1) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
