"""The smallest change that makes a config fit a slice, found by compiling candidates in a fixed order.

    result = find_fit(config, s, devices, plan, hbm_gib=None, max_compiles=16)
    result.plan        # the first candidate that fits (None: nothing tried fits)
    result.topology    # a larger slice of the same generation, when no layout of the asked one can hold it

The order goes from what changes nothing of the training to what costs the most speed; each stage starts from
the best (smallest total memory) layout of the stages before it:

1. mesh: the same devices split differently (fully sharded over fsdp, then fsdp x tensor with 2, 4, 8 heads'
   worth of tensor parallelism). Same maths, only communication changes.
2. remat: a `model.remat_policy` that keeps fewer activations (dots, dots_no_batch, qkv_proj_and_attn_out,
   qkv_proj, full), least recomputation first.
3. micro-batches: `train.grad_accum_steps` (the same global batch, so the same gradients, in k passes: a smaller
   per-device batch), first with the config's remat policy, then with "full"; the first k tried is the one the
   last failure's temporaries predict, doubled until one row per device.
4. slice: when even the parameters and optimizer state (fully sharded) exceed the chip, or nothing above fits,
   the same generation's larger slices, smallest first (skipping those whose state alone cannot fit, at most
   3 sizes compiled): the config fully sharded, then stages 2 and 3 on that slice.

Once one fits, its change is tried once more on the simplest mesh (the config's own, or the fully sharded one when
the config's cannot be laid out), since stage 1 keeps whichever layout needed the least memory.
`train.global_batch_size` is never changed: it is the optimisation's, not the layout's. Every compile counts
against `max_compiles`; the search says so when it stops there.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
from ml_collections import ConfigDict

from pivot_jax.aot.plan import GIB, Plan, apply_overrides, format_size, make_plan
from pivot_jax.aot.topology import Slice, compile_devices, larger_slices
from pivot_jax.pretrained import model_config

log = logging.getLogger("pivot_jax.aot")

# Least memory last; "none" keeps every activation.
REMAT_ORDER = ("none", "dots", "dots_no_batch", "qkv_proj_and_attn_out", "qkv_proj", "full")
TENSOR_SIZES = (1, 2, 4, 8)  # beyond 8, tensor parallelism leaves a host's ICI neighbourhood
MAX_SLICES_COMPILED = 3


@dataclasses.dataclass
class Search:
    tried: list[Plan] = dataclasses.field(default_factory=list)
    plan: Plan | None = None  # the first that fits
    topology: str = ""  # set when the fit is on another slice
    stopped: str = ""  # why the search ended without a fit

    @property
    def override_line(self) -> str:
        if self.plan is None:
            return ""
        flags = [f"--config.{k}={v}" for k, v in self.plan.overrides.items()]
        return " ".join(([f"--topology={self.topology}"] if self.topology else []) + flags)


class _Budget:
    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def take(self) -> bool:
        self.used += 1
        return self.used <= self.limit


def _mesh_overrides(devices: int, num_slices: int, batch: int, accum: int, heads: int) -> Iterator[dict[str, int]]:
    """Data over the slices (DCN), the rest of each slice fully sharded, then with tensor parallelism; only layouts
    whose data x fsdp divides the batch (with its micro-batches) and whose tensor size divides the heads."""
    per_slice = devices // num_slices
    for tensor in TENSOR_SIZES:
        fsdp, rest = divmod(per_slice, tensor)
        if rest or heads % tensor or batch % (num_slices * fsdp * accum):
            continue
        yield {"mesh.data": num_slices, "mesh.fsdp": fsdp, "mesh.tensor": tensor}


def _state_lower_bound(config: ConfigDict) -> int:
    """Bytes of the parameters and Adam's two moments, all in param_dtype (the optimizer's state is stored like
    the parameters), before any sharding: divided by the chips, what no layout can go below."""
    cfg = model_config(config.model)
    return 3 * cfg.num_params() * jax.numpy.dtype(cfg.param_dtype).itemsize


def _predicted_accum(plan: Plan, rows_per_device: int) -> int:
    """The micro-batch count (a power of 2) at which `plan`'s temporaries, taken as proportional to the
    per-device batch, fit beside its arguments: the first guess, which compiles then check."""
    m = plan.memory
    room = plan.hbm_bytes - m.arguments - (m.generated_code or 0)
    if m.temporaries is None or room <= 0:
        return rows_per_device
    k = 2 ** math.ceil(math.log2(max(m.temporaries / room, 2)))
    return min(k, rows_per_device)


def _describe(overrides: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in overrides.items()) or "(the config as given)"


def _rows_per_device(config: ConfigDict, devices: int) -> int:
    """Rows of the global batch each device computes on (batch over data x fsdp, a -1 axis resolved)."""
    shape = [config.mesh.data, config.mesh.fsdp, config.mesh.tensor]
    if -1 in shape:
        shape[shape.index(-1)] = devices // math.prod(n for n in shape if n != -1)
    return config.train.global_batch_size // (shape[0] * shape[1])


class _Searcher:
    """Compiles candidates within the budget and records them; `done` once one fits or the budget is spent."""

    def __init__(self, config: ConfigDict, hbm_gib: float | None, budget: _Budget, result: Search,
                 progress: Callable[[str], None]):
        self.config, self.hbm_gib, self.budget, self.result, self.progress = config, hbm_gib, budget, result, progress

    @property
    def done(self) -> bool:
        return self.result.plan is not None or bool(self.result.stopped)

    def compile(self, s: Slice, devices: list[jax.Device], overrides: dict[str, Any], stage: str) -> Plan | None:
        """The plan of `overrides` (None once the budget is spent); a candidate already tried is not recompiled."""
        known = _find(self.result.tried, overrides, s)
        if known is not None:
            return known
        if not self.budget.take():
            self.result.stopped = f"stopped after {self.budget.limit} compiles (--max_compiles)"
            return None
        p = make_plan(self.config, s, devices, overrides, self.hbm_gib)
        jax.clear_caches()  # each candidate is a new program: keep the host's memory to one at a time
        self.result.tried.append(p)
        if p.memory is None:
            outcome = f"skipped: {p.error}"
        else:
            at_least = "" if p.memory.generated_code is not None else "at least "
            outcome = f"{at_least}{format_size(p.memory.total)}: {'fits' if p.fits else 'does not fit'}"
        self.progress(f"[{self.budget.used}/{self.budget.limit}] {stage} on {s.name}: {_describe(overrides)} "
                      f"({p.compile_s:.1f} s) -> {outcome}")
        if p.fits and self.result.plan is None:
            self.result.plan = p
        return p

    def micro_batches(self, s: Slice, devices: list[jax.Device], base: dict[str, Any], start: Plan | None,
                      stage: str) -> None:
        """`train.grad_accum_steps` from the count `start`'s memory predicts, doubled until one row per device."""
        cfg = apply_overrides(self.config, base)
        rows = _rows_per_device(cfg, len(devices))
        predicted = _predicted_accum(start, rows) if start is not None and start.memory is not None else 2
        k = max(predicted, cfg.train.grad_accum_steps * 2)
        while not self.done and k <= rows and rows % k == 0:
            self.compile(s, devices, base | {"train.grad_accum_steps": k}, stage)
            k *= 2


def _smallest(plans: list[Plan], fallback: Plan) -> Plan:
    """The plan needing the least memory, among those whose need is known (the first on a tie)."""
    known = [p for p in plans if p.memory is not None and p.memory.temporaries is not None]
    return min(known, key=lambda p: p.memory.total, default=fallback)


def _on_simplest_mesh(searcher: _Searcher, s: Slice, devices: list[jax.Device], first: Plan,
                      meshes: list[dict[str, int]]) -> None:
    """The fit found, on the simplest mesh: the config's own when it could be laid out, else the fully sharded
    one. Stage 1 keeps the layout needing the least memory, which the later stages' change may not need (one
    more compile)."""
    result = searcher.result
    if result.plan.slice_name != s.name or (first.memory is None and not meshes):
        return
    simplest = {} if first.memory is not None else meshes[0]
    rest = {k: v for k, v in result.plan.overrides.items() if not k.startswith("mesh.")}
    if not rest or simplest | rest == result.plan.overrides:
        return
    p = searcher.compile(s, devices, simplest | rest, "simplest mesh")
    if p is not None and p.fits:
        result.plan = p


def find_fit(config: ConfigDict, s: Slice, devices: list[jax.Device], first: Plan, hbm_gib: float | None = None,
             max_compiles: int = 16, progress: Callable[[str], None] = log.info) -> Search:
    """Search the changes above for `config` on `s` (whose plan, `first`, did not fit)."""
    result = Search(tried=[first])
    searcher = _Searcher(config, hbm_gib, _Budget(max_compiles), result, progress)
    cfg, t = model_config(config.model), config.train
    meshes = list(_mesh_overrides(len(devices), first.num_slices, t.global_batch_size, t.grad_accum_steps,
                                  cfg.num_heads))
    _search(searcher, config, s, devices, first, meshes)
    if result.plan is not None:
        _on_simplest_mesh(searcher, s, devices, first, meshes)
    elif not result.stopped:
        largest = s.generation.accelerator_type(max(s.generation.shapes))
        result.stopped = (f"nothing fits on {s.name} nor on the larger slices tried (at most {MAX_SLICES_COMPILED} "
                          f"sizes up to {largest}, skipping those the state alone overflows)")
    return result


def _search(searcher: _Searcher, config: ConfigDict, s: Slice, devices: list[jax.Device], first: Plan,
            meshes: list[dict[str, int]]) -> None:
    """Stages 1-4 until a fit (`searcher.result.plan`), the budget's end or no candidate left."""
    result = searcher.result
    cfg, t = model_config(config.model), config.train
    if first.memory is None and not meshes:
        result.stopped = (f"no layout of {len(devices)} chips splits train.global_batch_size={t.global_batch_size} "
                          f"(data x fsdp x grad_accum_steps={t.grad_accum_steps} must divide it, tensor <= 8 the "
                          f"{cfg.num_heads} heads)")
        return
    state = _state_lower_bound(config)
    if state / len(devices) >= first.hbm_bytes:
        searcher.progress(f"parameters + optimizer state ({state / GIB:.1f} GiB) exceed {len(devices)} chips x "
                          f"{format_size(first.hbm_bytes)} even fully sharded; trying larger slices")
        _slice_stage(searcher, config, s, first.num_slices, first.hbm_bytes)
        return
    # 1. mesh
    tried = [first]
    for m in meshes:
        if m != _as_mesh(first) and not searcher.done:
            tried.append(searcher.compile(s, devices, m, "mesh"))
    if searcher.done:
        return
    best = _smallest(tried, first)
    if best is first:  # the config's own mesh, when it could be laid out
        mesh = {} if first.memory is not None else meshes[0]
    else:
        mesh = {k: v for k, v in best.overrides.items() if k.startswith("mesh.")}
    _remat_and_micro_batches(searcher, config, s, devices, mesh, best)
    if not searcher.done:
        searcher.progress(f"no layout of {s.name} holds it; trying larger {s.generation.name} slices")
        _slice_stage(searcher, config, s, first.num_slices, first.hbm_bytes)


def _remat_and_micro_batches(searcher: _Searcher, config: ConfigDict, s: Slice, devices: list[jax.Device],
                             mesh: dict[str, Any], best: Plan) -> None:
    """Stages 2 and 3 on `mesh`: remat policies keeping fewer activations, then micro-batches (with the config's
    remat, then with "full"), from `best`'s memory."""
    current = config.model.remat_policy
    policies = REMAT_ORDER[REMAT_ORDER.index(current) + 1:] if current in REMAT_ORDER else ("full",)
    for policy in policies:
        if not searcher.done:
            searcher.compile(s, devices, mesh | {"model.remat_policy": policy}, "remat")
    for policy in dict.fromkeys((current, "full")):
        base = mesh | ({} if policy == current else {"model.remat_policy": policy})
        start = best if policy == current else _find(searcher.result.tried, base, s) or best
        if not searcher.done:
            searcher.micro_batches(s, devices, base, start, "micro-batches")


def _as_mesh(plan: Plan) -> dict[str, int]:
    return {f"mesh.{k}": v for k, v in plan.mesh.items()} if plan.mesh else {}


def _find(plans: list[Plan], overrides: dict[str, Any], s: Slice) -> Plan | None:
    return next((p for p in plans if p.overrides == overrides and p.slice_name == s.name), None)


def _slice_stage(searcher: _Searcher, config: ConfigDict, s: Slice, num_slices: int, hbm: int) -> None:
    """Larger slices of the generation, smallest first: the config fully sharded, then stages 2 and 3 there."""
    cfg, t = model_config(config.model), config.train
    compiled_sizes = 0
    for bigger in larger_slices(s):
        chips = bigger.chips * num_slices
        meshes = list(_mesh_overrides(chips, num_slices, t.global_batch_size, t.grad_accum_steps, cfg.num_heads))
        if _state_lower_bound(config) / chips >= hbm or not meshes:
            continue
        if compiled_sizes == MAX_SLICES_COMPILED or searcher.done:
            return
        compiled_sizes += 1
        devices = compile_devices(bigger, num_slices)
        p = searcher.compile(bigger, devices, meshes[0], "slice")
        if not searcher.done and p.memory is not None:
            _remat_and_micro_batches(searcher, config, bigger, devices, meshes[0], p)
        if searcher.result.plan is not None:
            searcher.result.topology = bigger.name
