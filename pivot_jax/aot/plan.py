"""One plan: the trainer's own train step (`trainer.build`) compiled for a TPU slice from the config alone, its
per-device memory against the chip's HBM, its FLOPs (counted in the program, and as XLA counts them) beside the
analytic count, and a roofline bound on the step time with the MFU it allows.

    s = topology.parse_slice("v5p-8")
    devices = topology.compile_devices(s)
    p = make_plan(config, s, devices)              # one compile; p.fits, p.memory.total
    roof = roofline(config, s, devices, p)        # the step traced again: its FLOPs (aot.flops)
    print(format_plan(p, roof))

No data is read and no weights are loaded: the state and batch are `jax.ShapeDtypeStruct`s with the trainer's
shardings. A program that does not fit fails to compile on TPU (RESOURCE_EXHAUSTED); its plan keeps what the
compiler said it needed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any

import jax
from ml_collections import ConfigDict

from pivot_jax import sharding
from pivot_jax.aot.flops import program_flops
from pivot_jax.aot.topology import Slice, TopologyError
from pivot_jax.errors import ConfigError
from pivot_jax.throughput import peak_tflops, training_flops_per_token
from pivot_jax.trainer.build import Setup, build

GIB = 2**30


@dataclasses.dataclass
class Memory:
    """Per-device bytes. `params`, `opt_state` and `batch` are counted from the shardings; the rest is XLA's
    `compiled.memory_analysis()`. When the compile ran out of memory, `arguments` is our count and
    `temporaries` what the compiler's message said (None when it said nothing), so `total` is a lower bound."""

    params: int
    opt_state: int
    batch: int
    arguments: int  # all inputs: params, optimizer state, step and rng, the batch's shard
    temporaries: int | None = None  # activations, gradients, the optimizer's intermediates
    generated_code: int | None = None
    outputs: int | None = None
    aliased: int | None = None  # outputs written over the donated inputs (the new state over the old)

    @property
    def total(self) -> int:
        return (self.arguments + (self.temporaries or 0) + (self.generated_code or 0) + (self.outputs or 0)
                - (self.aliased or 0))


@dataclasses.dataclass
class Plan:
    """The config (with `overrides` applied) compiled for `slice_name` x `num_slices`."""

    slice_name: str
    num_slices: int
    chips: int
    device_kind: str
    overrides: dict[str, Any]
    hbm_bytes: int  # per chip: the chip's, or --hbm_gib's
    mesh: dict[str, int] = dataclasses.field(default_factory=dict)
    memory: Memory | None = None  # None: the config cannot be laid out on this slice (see `error`)
    compile_s: float = 0.0
    fits: bool = False
    error: str = ""  # the compiler's out-of-memory message, or why the mesh or batch does not apply
    compiled_flops: float | None = None  # per device, as XLA counts this program (loop bodies once)
    compiled_bytes: float | None = None  # per device, HBM bytes accessed as XLA counts them (loop bodies once)


def apply_overrides(config: ConfigDict, overrides: dict[str, Any]) -> ConfigDict:
    """A copy of `config` with `{"section.key": value}` set (keys must exist: the schema is locked)."""
    config = config.copy_and_resolve_references()
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        node = config
        for part in filter(None, section.split(".")):
            node = node[part]
        if name not in node:
            raise ConfigError(f"config key {key!r} does not exist")
        with config.unlocked():
            node[name] = value
    return config


def _bytes(tree: Any) -> int:
    """Per-device bytes of abstract arrays with shardings (each device holds one shard of each)."""
    leaves = jax.tree.leaves(tree)
    return sum(math.prod(a.sharding.shard_shape(a.shape)) * a.dtype.itemsize for a in leaves)


def _setup(config: ConfigDict, devices: list[jax.Device]) -> Setup:
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices)
    # The schedule's length is a constant inside the program: any positive count compiles the same step.
    return build(config, mesh, max(config.train.steps, 1))


def _compile(s: Setup, hbm_limit_mib: int | None) -> Any:
    with s.activate():
        lowered = s.step_fn.lower(s.abstract_state, s.abstract_batch())
    # libtpu's own cap on the HBM it plans for: lowers the chip's (it cannot raise it), so a smaller --hbm_gib
    # makes the compiler fit (or fail) exactly as on a chip that size.
    options = {"xla_tpu_max_hbm_size_mib": hbm_limit_mib} if hbm_limit_mib else None
    return lowered.compile(compiler_options=options)


_SIZE = r"([0-9.]+)\s*([KMGT]?)i?B?"


def _parse_size(number: str, unit: str) -> int:
    return int(float(number) * 1024 ** " KMGT".index(unit or " "))


def out_of_memory_temporaries(message: str, arguments: int) -> int | None:
    """What an XLA:TPU RESOURCE_EXHAUSTED message says the program needs beyond its arguments: "Used X of Y hbm"
    (the program and its arguments) less the arguments, else "HLO temporaries (X) exceeds available HBM";
    None when it says neither."""
    match = re.search(r"Used " + _SIZE + " of", message)
    if match:
        return max(_parse_size(*match.groups()) - arguments, 0)
    match = re.search(r"HLO temporaries \(" + _SIZE + r"\)", message)
    return _parse_size(*match.groups()) if match else None


def _cost(compiled: Any) -> tuple[float | None, float | None]:
    analysis = compiled.cost_analysis() or {}
    return analysis.get("flops"), analysis.get("bytes accessed")


def make_plan(config: ConfigDict, s: Slice, devices: list[jax.Device], overrides: dict[str, Any] | None = None,
              hbm_gib: float | None = None) -> Plan:
    """Compile the train step of `config` + `overrides` over `devices` (slice `s`, as many slices as the devices
    span) and measure it against `hbm_gib` per chip (default: the chip's HBM)."""
    overrides = dict(overrides or {})
    num_slices = len({getattr(d, "slice_index", 0) for d in devices})
    hbm_mib = int(hbm_gib * 1024) if hbm_gib else None  # what the compiler is told: whole MiB
    hbm_bytes = hbm_mib * 2**20 if hbm_mib else int(s.generation.hbm_gib * GIB)
    plan = Plan(s.name, num_slices, len(devices), devices[0].device_kind, overrides, hbm_bytes)
    config = apply_overrides(config, overrides)
    try:
        setup = _setup(config, devices)
    except ConfigError as e:  # a mesh or batch that does not divide this slice's devices
        plan.error = str(e)
        return plan
    plan.mesh = dict(setup.mesh.shape)
    state = setup.abstract_state
    plan.memory = Memory(params=_bytes(state["params"]), opt_state=_bytes(state["opt_state"]),
                         batch=_bytes(setup.abstract_batch()), arguments=_bytes((state, setup.abstract_batch())))
    start = time.perf_counter()
    try:
        compiled = _compile(setup, hbm_mib)
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        plan.compile_s = time.perf_counter() - start
        # The message's head and its hbm breakdown, without the list of the largest allocations.
        plan.error = str(e).strip().split("Largest program allocations")[0].strip()
        plan.memory.temporaries = out_of_memory_temporaries(str(e), plan.memory.arguments)
        return plan
    plan.compile_s = time.perf_counter() - start
    stats = compiled.memory_analysis()
    plan.memory = dataclasses.replace(
        plan.memory, arguments=stats.argument_size_in_bytes, temporaries=stats.temp_size_in_bytes,
        generated_code=stats.generated_code_size_in_bytes, outputs=stats.output_size_in_bytes,
        aliased=stats.alias_size_in_bytes)
    plan.compiled_flops, plan.compiled_bytes = _cost(compiled)
    plan.fits = plan.memory.total <= hbm_bytes
    if not plan.fits:
        plan.error = f"{plan.memory.total / GIB:.2f} GiB per device exceeds {hbm_bytes / GIB:.2f} GiB"
    return plan


@dataclasses.dataclass
class Roofline:
    """Lower bounds on one step's time on `chips` chips, and the MFU (analytic FLOPs at peak) they allow.

    `program_flops` are the step's matmul FLOPs counted in its jaxpr (`aot.flops`: loops multiplied out,
    recomputed forwards included, attention's blocks dense); `hbm_bytes` is XLA's count of the bytes the compiled
    step moves, which counts each loop body once (a lower bound). XLA's FLOPs (`Plan.compiled_flops`) are kept
    beside them, not used: XLA counts a loop body once, its own loops for sharded matmuls included, and nothing
    inside a Pallas kernel."""

    chips: int
    tokens: int  # per step
    analytic_flops: float  # per step: training_flops_per_token (6N + causal attention) x tokens
    program_flops: float  # per step, all chips
    xla_flops: float  # per step, all chips: XLA's count (loop bodies once)
    hbm_bytes: float  # per step, all chips: XLA's count (loop bodies once)
    peak_flops: float  # per chip, bf16
    hbm_bandwidth: float  # per chip, bytes/s

    @property
    def analytic_s(self) -> float:
        return self.analytic_flops / (self.chips * self.peak_flops)

    @property
    def compute_s(self) -> float:
        return self.program_flops / (self.chips * self.peak_flops)

    @property
    def memory_s(self) -> float:
        return self.hbm_bytes / (self.chips * self.hbm_bandwidth)

    @property
    def step_s(self) -> float:
        return max(self.compute_s, self.memory_s)

    @property
    def mfu_bound(self) -> float:
        return self.analytic_s / self.step_s

    def to_dict(self) -> dict[str, float]:
        names = ("analytic_s", "compute_s", "memory_s", "step_s", "mfu_bound")
        return dataclasses.asdict(self) | {name: getattr(self, name) for name in names} | {
            "tokens_per_s_bound": self.tokens / self.step_s}


def roofline(config: ConfigDict, s: Slice, devices: list[jax.Device], plan: Plan) -> Roofline:
    """The roofline of `plan` (which compiled): its step traced again for the FLOP count (no compile)."""
    config = apply_overrides(config, plan.overrides)
    setup = _setup(config, devices)
    peak = peak_tflops(devices[0])
    if peak is None:
        raise TopologyError(f"no peak FLOP/s known for {devices[0].device_kind!r} (pivot_jax/throughput.py)")
    with setup.activate():
        flops = program_flops(setup.step_fn, setup.abstract_state, setup.abstract_batch())
    t = config.train
    tokens = t.global_batch_size * t.seq_len
    return Roofline(chips=len(devices), tokens=tokens,
                    analytic_flops=training_flops_per_token(setup.model_cfg, t.seq_len) * tokens,
                    program_flops=flops, xla_flops=(plan.compiled_flops or 0.0) * len(devices),
                    hbm_bytes=(plan.compiled_bytes or 0.0) * len(devices), peak_flops=peak * 1e12,
                    hbm_bandwidth=s.generation.hbm_gbps * 1e9)


def format_size(n: float | None) -> str:
    if n is None:
        return "?"
    return f"{n / GIB:.2f} GiB" if abs(n) >= GIB / 10 else f"{n / 2**20:.1f} MiB"


def _duration(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds >= 1 else f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else \
        f"{seconds * 1e6:.1f} us"


def format_plan(plan: Plan, roof: Roofline | None = None) -> str:
    """The human table: memory per device against HBM, FLOPs per step, the roofline."""
    head = (f"{plan.slice_name}{f' x {plan.num_slices} slices' if plan.num_slices > 1 else ''}: {plan.chips} "
            f"chips ({plan.device_kind}), {format_size(plan.hbm_bytes)} HBM each")
    if plan.overrides:
        head += "\n  with " + " ".join(f"--config.{k}={v}" for k, v in plan.overrides.items())
    if plan.memory is None:
        return f"{head}\n  cannot be laid out: {plan.error}\n"
    m = plan.memory
    mesh = " ".join(f"{k}={v}" for k, v in plan.mesh.items())
    verdict = "fits" if plan.fits else "DOES NOT FIT"
    at_least = m.generated_code is None  # the compile stopped at its limit: XLA's figures are missing
    unaliased = None if m.outputs is None else m.outputs - (m.aliased or 0)
    rows = [("parameters", m.params), ("optimizer state", m.opt_state), ("batch shard", m.batch),
            ("arguments (all inputs)", m.arguments), ("temporaries", m.temporaries),
            ("generated code", m.generated_code), ("outputs not aliased", unaliased)]
    lines = [head, f"  mesh {mesh}; compiled in {plan.compile_s:.1f} s", "  per-device memory"]
    lines += [f"    {name:<26}{format_size(value):>12}" for name, value in rows]
    lines.append(f"    {'total' + (' (at least)' if at_least else ''):<26}{format_size(m.total):>12}  of "
                 f"{format_size(plan.hbm_bytes)} ({100 * m.total / plan.hbm_bytes:.0f}%): {verdict}")
    if plan.error and not plan.fits:
        lines.append(f"    compiler: {plan.error.splitlines()[0]}")
    if roof is not None:
        lines += [f"  FLOPs per step ({roof.tokens:,} tokens, {roof.chips} chips)",
                  f"    analytic, 6N + attention        {roof.analytic_flops:.3e}",
                  f"    program (matmuls in the jaxpr)  {roof.program_flops:.3e}  "
                  f"({roof.program_flops / roof.analytic_flops:.2f}x: recomputation, attention's full square)",
                  f"    XLA's count, compiled           {roof.xla_flops:.3e}  (loop bodies once, Pallas kernels "
                  "not seen)",
                  f"  roofline per step (per chip {roof.peak_flops / 1e12:.0f} TFLOP/s bf16, "
                  f"{roof.hbm_bandwidth / 1e9:.0f} GB/s HBM)",
                  f"    analytic FLOPs at peak          {_duration(roof.analytic_s):>10}",
                  f"    program FLOPs at peak           {_duration(roof.compute_s):>10}",
                  f"    XLA's HBM bytes at bandwidth    {_duration(roof.memory_s):>10}  (loop bodies once: at least)",
                  f"    lower bound                     {_duration(roof.step_s):>10}  -> MFU <= "
                  f"{100 * roof.mfu_bound:.0f}%, <= {roof.tokens / roof.step_s:,.0f} tokens/s "
                  "(communication not counted)"]
    return "\n".join(lines) + "\n"


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    out = dataclasses.asdict(plan)
    if plan.memory is not None:
        out["memory"]["total"] = plan.memory.total
    return out
