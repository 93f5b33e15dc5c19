"""MaxText (the JAX peer) on the same work as pivot_jax: the llama2-7b train step compiled ahead of time for a TPU
slice on both sides (per-device memory, analytic FLOPs, compile time), and MaxText's CPU train step on the
SmolLM2-135M shape (ours on that shape: `benchmarks/train_step.py`).

  python benchmarks/maxtext_peer.py [--venv DIR] [--no_install] [--topology v5p-8] [--skip_aot] [--skip_train]
      [--json FILE]

MaxText (PyPI `maxtext[tpu]==0.2.5`) needs Python >= 3.12, so it runs in its own virtualenv (created here unless
--no_install) and in subprocesses; ours runs in this process. A side that cannot run gets a row saying why.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from common import add_json_flag, report

ROOT = Path(__file__).resolve().parents[1]
SPEC, VERSION = "maxtext[tpu]==0.2.5", "0.2.5"
CONFIG_FILE, CONFIG_ARG = "configs/coit.py", "model=llama2-7b"  # the CoIT paper's work on LLaMA-2-7B
GIB = 2**30
COLUMNS = ["peer", "model", "slice", "per-device batch", "params+opt GiB", "temporaries GiB", "total GiB", "HBM GiB",
           "TFLOP/step/device (analytic)", "compile s", "s/step", "tokens/s/device", "TFLOP/s/device", "status"]
# Our remat policy -> MaxText's that saves the same activations. MaxText's "none" is not "save everything": its
# jax.checkpoint then gets policy=None, which saves nothing (full remat); "minimal_with_context" saves every named
# tensor of a layer (all projections and the attention output), the nearest to our "none".
REMAT = {"none": "minimal_with_context", "full": "full", "dots_no_batch": "minimal", "dots": "minimal",
         "qkv_proj": "save_qkv_proj"}
# SmolLM2-135M as MaxText overrides (decoder_block llama2, SwiGLU and RMSNorm eps 1e-5 are base.yml's defaults).
SMOLLM2 = {"base_emb_dim": 576, "base_num_query_heads": 9, "base_num_kv_heads": 3, "head_dim": 64,
           "base_mlp_dim": 1536, "base_num_decoder_layers": 30, "vocab_size": 49152, "logits_via_embedding": "true",
           "rope_max_timescale": 100000}
SMALL_SHAPE = "smollm2-135m shape (emb 576, 9q/3kv heads x 64, mlp 1536, 30 layers, vocab 49152, tied)"
# The venv's MaxText, its jax and libtpu, and where the package lies (without importing it: that takes seconds).
PROBE = ("import importlib.metadata as m, importlib.util as u, json; s = u.find_spec('maxtext'); "
         "print(json.dumps({'dir': s and s.submodule_search_locations[0], "
         "'versions': {p: m.version(p) for p in ('maxtext', 'jax', 'libtpu') if u.find_spec(p)}}))")
# MaxText's subprocesses get the environment as it was before our JAX started: loading our libtpu sets
# TPU_LIBRARY_PATH to it, and MaxText's newer JAX then emits configs that old libtpu rejects. Its AOT compile
# needs its TPU plugin, so a caller's JAX_PLATFORMS=cpu is dropped too (its CPU train step sets it again).
PEER_ENV = {k: v for k, v in os.environ.items() if k not in ("TPU_LIBRARY_PATH", "JAX_PLATFORMS")}
ERROR_LINE = re.compile(r"^\s*(?:[\w.]+(?:Error|Exception)\b|Check failed|FATAL|ERROR:|RESOURCE_EXHAUSTED)")
STEP_LINE = re.compile(r"completed step: (\d+), seconds: ([\d.]+), TFLOP/s/device: ([\d.]+), "
                       r"Tokens/s/device: ([\d.]+)")


class PeerError(Exception):
    """Why a side could not run: becomes its rows' status."""


def run_logged(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None,
               timeout: float = 3600, echo: tuple[str, ...] = (), marks: tuple[str, ...] = ()
               ) -> tuple[int, list[str], dict[str, float]]:
    """Run `cmd` with its output into `log` (echoing lines that start with `echo`); the exit status, the output's
    lines, and the seconds after start at which each of `marks` first appeared (to time phases MaxText prints)."""
    start, seen, lines = time.monotonic(), {}, []
    with log.open("w") as f, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                              env=env, cwd=cwd) as p:
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            for line in p.stdout:
                f.write(line)
                lines.append(line.rstrip("\n"))
                seen.update({m: time.monotonic() - start for m in marks if m in line and m not in seen})
                if echo and line.startswith(echo):
                    print("   ", line.rstrip(), flush=True)
            rc = p.wait()
        finally:
            timer.cancel()
    return rc, lines, seen


def last_error(lines: list[str]) -> str:
    """The last line that names an error (a traceback's last line, pip's ERROR:), else the last line."""
    for line in reversed(lines):
        if ERROR_LINE.match(line):
            return line.strip()[:300]
    tail = [line.strip() for line in lines if line.strip()]
    return tail[-1][:300] if tail else "no output"


def find_python312() -> str | None:
    # One that runs: pyenv's shim is on PATH even where no pyenv version selects 3.12.
    candidates = [shutil.which("python3.12"), *map(str, sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"),
                                                             reverse=True))]
    return next((c for c in candidates if c and subprocess.run([c, "-c", ""], capture_output=True).returncode == 0),
                None)


def probe(python: Path) -> dict[str, Any] | None:
    if not python.exists():
        return None
    out = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True)
    info = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else {}
    return info if info.get("dir") and info["versions"].get("maxtext") == VERSION else None


def ensure_maxtext(venv: Path, install: bool, scratch: Path) -> tuple[Path, dict[str, Any]]:
    """The venv's python and what `probe` says, creating the venv and installing MaxText when missing."""
    python = venv / "bin" / "python"
    info = probe(python)
    if info:
        return python, info
    if not install:
        raise PeerError(f"no MaxText {VERSION} in {venv} (--no_install)")
    py312 = find_python312()
    if py312 is None:
        raise PeerError("no python3.12 on PATH or in ~/.pyenv/versions (MaxText needs Python >= 3.12)")
    steps = [] if python.exists() else [[py312, "-m", "venv", str(venv)]]
    steps.append([str(python), "-m", "pip", "install", SPEC])
    for i, cmd in enumerate(steps):
        log = scratch / f"install_{i}.log"
        print(f"MaxText: {shlex.join(cmd)} (a few minutes; log {log})", flush=True)
        rc, lines, _ = run_logged(cmd, log, echo=("Collecting", "Successfully", "ERROR"))
        if rc:
            print(f"MaxText install failed; its output: {log}")
            raise PeerError(f"{Path(cmd[0]).name} {' '.join(cmd[1:3])} exited {rc}: {last_error(lines)}")
    info = probe(python)
    if info is None:
        raise PeerError(f"pip installed {SPEC} but {python} cannot find maxtext {VERSION}")
    return python, info


def fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def maxtext_aot_args(config: Any, chips: int, topology: str) -> list[str]:
    """Our config's work as MaxText overrides: the same model, global batch, length, dtypes, remat and mesh."""
    mesh = {k: config.mesh[k] for k in ("data", "fsdp", "tensor")}
    known = math.prod(v for v in mesh.values() if v != -1)
    mesh = {k: chips // known if v == -1 else v for k, v in mesh.items()}
    args = [f"compile_topology={topology}", "compile_topology_num_slices=1", f"model_name={config.model.preset}",
            f"per_device_batch_size={fmt(config.train.global_batch_size / chips)}",
            f"max_target_length={config.train.seq_len}", f"weight_dtype={config.model.param_dtype}",
            f"dtype={config.model.dtype}", f"remat_policy={REMAT.get(config.model.remat_policy, 'minimal')}",
            f"ici_fsdp_parallelism={mesh['fsdp']}"]
    return args + [f"ici_{k}_parallelism={v}" for k, v in mesh.items() if k != "fsdp" and v != 1]


def ours_aot(config: Any, topology: str) -> dict[str, Any]:
    from pivot_jax.aot.planner import plan_config
    from pivot_jax.model import preset
    from pivot_jax.throughput import training_flops_per_token

    rep = plan_config(config, topology, search=False)
    plan, m, roof = rep.plan, rep.plan.memory, rep.roofline
    rows = config.train.global_batch_size // (plan.mesh.get("data", 1) * plan.mesh.get("fsdp", 1) or 1)
    tokens = config.train.global_batch_size * config.train.seq_len
    flops = roof.analytic_flops if roof else training_flops_per_token(preset(config.model.preset),
                                                                      config.train.seq_len) * tokens
    if m is None:
        raise PeerError(plan.error.splitlines()[0] if plan.error else "no memory figures")
    return {"params+opt GiB": (m.params + m.opt_state) / GIB, "per-device batch": f"{rows}x{config.train.seq_len}",
            "temporaries GiB": None if m.temporaries is None else m.temporaries / GIB, "total GiB": m.total / GIB,
            "TFLOP/step/device (analytic)": flops / plan.chips / 1e12, "compile s": plan.compile_s,
            "XLA TFLOP/device": plan.compiled_flops and plan.compiled_flops / 1e12,
            "status": "ok" if plan.fits else f"does not fit: {plan.error.splitlines()[0]}"}


def maxtext_aot(python: Path, base_yml: str, args: list[str], scratch: Path, topology: str) -> dict[str, Any]:
    # Compile-only libtpu on a host with no TPU: no metadata server, no chip lock, name the slice (as ours does).
    env = PEER_ENV | {"TPU_SKIP_MDS_QUERY": "1", "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
                      "TPU_ACCELERATOR_TYPE": topology, "TPU_WORKER_HOSTNAMES": "localhost"}
    start, end = "Jitting and compiling train step", "Jitting and compilation complete"
    rc, lines, seen = run_logged([str(python), "-m", "maxtext.trainers.pre_train.train_compile", base_yml, *args],
                                 scratch / "aot.log", env, scratch, marks=(start, end))
    stats = next((m.group(1) for m in map(re.compile(r"Memory analysis: CompiledMemoryStats\((.*)\)").search,
                                         lines) if m), None)
    if rc or stats is None:
        print(f"MaxText AOT compile failed (exit {rc}); its output: {scratch / 'aot.log'}")
        raise PeerError(last_error(lines))
    s = {k: int(v) for k, v in re.findall(r"(\w+)_size_in_bytes=(\d+)", stats)}
    xla = next((float(m.group(1)) for m in map(re.compile(r"Cost analysis: .*'flops': ([\d.e+]+)").search, lines)
                if m), None)
    total = s["argument"] + s["output"] - s["alias"] + s["temp"] + s["generated_code"]
    # MaxText's analytic count (`calculate_tflops_training_per_device`), which train_compile does not print.
    rc, flines, _ = run_logged([str(python), "-m", "maxtext.utils.get_flops", *args], scratch / "flops.log", env,
                               scratch)
    tflops = next((float(m.group(1)) for m in map(re.compile(r"TFLOPs per device per step: ([\d.]+)").search,
                                                  flines) if m), None)
    return {"params+opt GiB": s["argument"] / GIB, "temporaries GiB": s["temp"] / GIB, "total GiB": total / GIB,
            "TFLOP/step/device (analytic)": tflops, "compile s": seen[end] - seen[start] if end in seen else None,
            "XLA TFLOP/device": xla and xla / 1e12,
            "status": "ok" if tflops is not None else f"ok (get_flops failed: {last_error(flines)})"}


def maxtext_train(python: Path, base_yml: str, args: list[str], scratch: Path) -> tuple[dict[str, Any], str]:
    env = PEER_ENV | {"JAX_PLATFORMS": "cpu"}
    rc, lines, _ = run_logged([str(python), "-m", "maxtext.trainers.pre_train.train", base_yml, *args],
                              scratch / "train.log", env, scratch)
    steps = {int(m.group(1)): tuple(map(float, m.groups()[1:])) for m in map(STEP_LINE.search, lines) if m}
    measured = [v for step, v in sorted(steps.items()) if step > 0]  # step 0 compiles
    if rc or not measured:
        print(f"MaxText CPU train failed (exit {rc}); its output: {scratch / 'train.log'}")
        raise PeerError(last_error(lines))
    params = next((m.group(1) for m in map(re.compile(r"number parameters: ([\d.]+ \w+)").search, lines) if m), "?")
    seconds, tflops, tokens = (statistics.median(column) for column in zip(*measured))
    return {"s/step": seconds, "tokens/s/device": tokens, "TFLOP/s/device": tflops,
            "status": f"ok (median of steps 1-{max(steps)})"}, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path(__file__).resolve().parent / ".venv-maxtext")
    parser.add_argument("--no_install", action="store_true", help="do not create the venv or install MaxText")
    parser.add_argument("--topology", default="v5p-8", help="the TPU slice both sides compile for")
    parser.add_argument("--skip_aot", action="store_true")
    parser.add_argument("--skip_train", action="store_true")
    add_json_flag(parser)
    args = parser.parse_args()

    # Before JAX starts: no GCE metadata server off Cloud. The planner runs nothing, so JAX stays on the CPU (as
    # `python -m pivot_jax.aot` does); the TPU compile goes through libtpu's topology description regardless.
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    import jax

    jax.config.update("jax_platforms", "cpu")
    from pivot_jax.aot.topology import parse_slice
    from pivot_jax.config import load_config_file
    from pivot_jax.model import preset

    scratch = Path(tempfile.mkdtemp(prefix="maxtext_peer_"))
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    failed = False
    try:
        python, info = ensure_maxtext(args.venv, not args.no_install, scratch)
        base_yml = str(Path(info["dir"]) / "configs" / "base.yml")
        versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        notes.append(f"MaxText side: {versions} in {args.venv}; ours: jax {jax.__version__}, in this process")
        peer_error = None
    except PeerError as e:
        python, base_yml, peer_error = None, "base.yml", f"failed: {e}"
    shown = python or args.venv / "bin" / "python"  # in the notes' command lines

    def side(name: str, fn: Any, *fn_args: Any) -> dict[str, Any]:
        nonlocal failed
        if name == "MaxText" and peer_error:
            failed = True
            return {"status": peer_error}
        try:
            return fn(*fn_args)
        except Exception as e:  # a side's failure is a row, not a crash
            failed = True
            if isinstance(e, PeerError):
                return {"status": f"failed: {e}"}
            traceback.print_exc()
            return {"status": f"failed: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"}

    if not args.skip_aot:
        config = load_config_file(f"{ROOT / CONFIG_FILE}:{CONFIG_ARG}")
        s = parse_slice(args.topology)
        mt_args = maxtext_aot_args(config, s.chips, args.topology)
        shared = {"model": config.model.preset, "slice": args.topology, "HBM GiB": s.generation.hbm_gib}
        ours = shared | side("pivot_jax", ours_aot, config, args.topology)
        mt = shared | {"per-device batch": f"{fmt(config.train.global_batch_size / s.chips)}x{config.train.seq_len}"}
        mt |= side("MaxText", maxtext_aot, python, base_yml, mt_args, scratch, args.topology)
        rows += [{"peer": "pivot_jax"} | ours, {"peer": "MaxText"} | mt]
        policy, seq, vocab = config.model.remat_policy, config.train.seq_len, preset(config.model.preset).vocab_size
        logits = config.train.global_batch_size // s.chips * seq * vocab * 4 / GIB
        notes.append(f"AOT: ours `python -m pivot_jax.aot --config {CONFIG_FILE}:{CONFIG_ARG} --topology "
                     f"{args.topology} --nosearch` (global batch {config.train.global_batch_size} x {seq}, "
                     f"{config.model.param_dtype} params, {config.model.dtype} compute, remat {policy}); MaxText "
                     f"remat_policy={REMAT.get(policy, 'minimal')}: it saves the same per-layer activations (every "
                     "projection: q, k, v, out, mlp wi_0, wi_1, wo; not the attention output)")
        if ours.get("total GiB") and mt.get("total GiB"):
            notes.append(f"ours total / MaxText total = {ours['total GiB'] / mt['total GiB']:.3f} (goal <= 1.0)")
        if ours.get("XLA TFLOP/device") and mt.get("XLA TFLOP/device"):
            notes.append(f"XLA's own count of the compiled step (loop bodies once, per device): ours "
                         f"{ours['XLA TFLOP/device']:.2f} TFLOP, MaxText {mt['XLA TFLOP/device']:.2f}")
        notes += ["MaxText params+opt GiB is its compiled arguments (params, AdamW mu and nu in weight_dtype, step, "
                  "the batch shard); total = arguments + temporaries + code + outputs - aliased, as ours",
                  f"known differences: our logits are float32 (per device {logits:.2f} GiB unless train.loss_chunk "
                  f"> 0, now {config.train.loss_chunk}; their gradient as much again; norms float32 too), MaxText's "
                  "bf16 (logits_dot_in_fp32=false); the sides use different jax / libtpu releases (XLA differs)",
                  "MaxText AOT: TPU_SKIP_MDS_QUERY=1 ALLOW_MULTIPLE_LIBTPU_LOAD=1 "
                  f"TPU_ACCELERATOR_TYPE={args.topology} TPU_WORKER_HOSTNAMES=localhost "
                  f"{shlex.join([str(shown), '-m', 'maxtext.trainers.pre_train.train_compile', base_yml, *mt_args])}",
                  f"MaxText TFLOPs: {shlex.join([str(shown), '-m', 'maxtext.utils.get_flops', *mt_args])}"]

    if not args.skip_train:
        tr_args = ["run_name=maxtext_peer", f"base_output_directory={scratch / 'train'}", "hardware=cpu",
                   "skip_jax_distributed_system=true", "dataset_type=synthetic", "steps=6",
                   "enable_checkpointing=false",
                   "per_device_batch_size=4", "max_target_length=256", "weight_dtype=float32", "dtype=float32",
                   f"remat_policy={REMAT['none']}", *(f"{k}={v}" for k, v in SMOLLM2.items())]
        params: list[str] = []

        def train() -> dict[str, Any]:
            row, count = maxtext_train(python, base_yml, tr_args, scratch)
            params.append(count)
            return row

        row = {"peer": "MaxText", "model": SMALL_SHAPE, "slice": "cpu x1 (float32)", "per-device batch": "4x256"}
        rows.append(row | side("MaxText", train))
        notes += [f"CPU train: MaxText counts {params[0] if params else '?'} parameters (tied: logits_via_embedding="
                  "true); pair with `python benchmarks/train_step.py --preset smollm2-135m --batch 4 --seq_len 256 "
                  "--dtype float32` (remat none, scanned layers; MaxText scan_layers=true, remat_policy="
                  f"{REMAT['none']}, its nearest to saving everything)",
                  "MaxText's step seconds are host times between steps (asynchronous dispatch), so step 1 can look "
                  "fast; the median over steps 1-5 is the steady state",
                  f"MaxText train: JAX_PLATFORMS=cpu "
                  f"{shlex.join([str(shown), '-m', 'maxtext.trainers.pre_train.train', base_yml, *tr_args])}"]

    if failed:
        print(f"something failed; logs kept in {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    report(f"MaxText peer ({args.topology} AOT, CPU train step)", rows, notes, args.json, COLUMNS)


if __name__ == "__main__":
    main()
