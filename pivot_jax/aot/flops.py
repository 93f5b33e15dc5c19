"""The matmul FLOPs a jitted step executes, counted in its jaxpr: every `dot_general`, with loops multiplied out.

    flops = program_flops(step_fn, abstract_state, abstract_batch)   # per step, all devices together

Why not XLA's `compiled.cost_analysis()`: it counts a loop body once, and on TPU XLA turns sharded matmuls into
loops of its own (collectives overlapped with compute), so its count of a sharded step falls by a factor that
depends on the slice (a quarter of the step on a v5p-32). The jaxpr is the program before XLA: a `scan` body
counts `length` times (the layers, the micro-batches), a `shard_map` body once per shard, a Pallas kernel once
per grid point (dense: blocks a kernel skips at run time, like causal splash attention's, still count), and
rematerialised forwards count again where the backward pass recomputes them.
"""

from __future__ import annotations

import math
from typing import Any

import jax
from jax.extend import core


def _dot_flops(eqn: core.JaxprEqn) -> float:
    """2 x output elements x contracted size."""
    (contracting, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contracting)


def _repeats(eqn: core.JaxprEqn) -> int:
    """How many times a sub-program of `eqn` runs per run of `eqn`."""
    params = eqn.params
    if eqn.primitive.name == "scan":
        return params["length"]
    if eqn.primitive.name == "shard_map":
        return math.prod(params["mesh"].shape[a] for a in params["newly_manual_axes"])
    if eqn.primitive.name == "pallas_call":
        return math.prod(params["grid_mapping"].grid)
    return 1  # a while loop's trip count is unknown: counted once (the step has none but scans)


def count(jaxpr: core.Jaxpr) -> float:
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            total += _dot_flops(eqn)
        subs = [count(sub.jaxpr if isinstance(sub, core.ClosedJaxpr) else sub)
                for sub in core.jaxprs_in_params(eqn.params)]
        if subs:
            # A cond runs one branch: the dearest bounds it. Anything else runs all its sub-programs.
            total += _repeats(eqn) * (max(subs) if eqn.primitive.name == "cond" else sum(subs))
    return total


def program_flops(fn: Any, *args: Any) -> float:
    """Matmul FLOPs of one call of `fn(*args)` (abstract arguments are enough), over all devices."""
    return count(jax.make_jaxpr(fn)(*args).jaxpr)
