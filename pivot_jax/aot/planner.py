"""What `python -m pivot_jax.aot` does, as a library: plan a config on a slice, search a fit when it does not fit,
and bound the step time of whichever plan fits.

    report = plan_config(config, "v5p-64", num_slices=1)
    print(format_report(report))
    json.dumps(report.to_dict())
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from ml_collections import ConfigDict

from pivot_jax.aot.plan import Plan, Roofline, format_plan, make_plan, plan_to_dict, roofline
from pivot_jax.aot.search import Search, find_fit
from pivot_jax.aot.topology import TopologyError, compile_devices, parse_slice
from pivot_jax.config import validate

log = logging.getLogger("pivot_jax.aot")


@dataclasses.dataclass
class Report:
    topology: str
    num_slices: int
    plan: Plan  # the config as given
    search: Search | None = None  # when it did not fit and the search ran
    roofline: Roofline | None = None  # of the plan that fits: the config's, else the suggestion's

    @property
    def fitting(self) -> Plan | None:
        return self.plan if self.plan.fits else (self.search.plan if self.search else None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"topology": self.topology, "num_slices": self.num_slices,
                               "plan": plan_to_dict(self.plan), "fits": self.plan.fits}
        if self.search is not None:
            s = self.search
            out["suggestion"] = None if s.plan is None else {
                "topology": s.topology or self.topology, "overrides": s.plan.overrides, "line": s.override_line,
                "plan": plan_to_dict(s.plan)}
            out["search"] = {"compiles": len(s.tried) - 1, "stopped": s.stopped,
                             "tried": [plan_to_dict(p) for p in s.tried[1:]]}
        out["roofline"] = self.roofline.to_dict() if self.roofline else None
        return out


def plan_config(config: ConfigDict, topology: str, num_slices: int = 1, hbm_gib: float | None = None,
                search: bool = True, max_compiles: int = 16, progress: Callable[[str], None] = log.info) -> Report:
    """Compile `config`'s train step for `num_slices` x `topology`; when it does not fit (and `search`), find the
    smallest change that does; then the roofline of the plan that fits."""
    validate(config)
    s = parse_slice(topology)
    if hbm_gib is not None and not 0 < hbm_gib <= s.generation.hbm_gib:
        raise TopologyError(f"--hbm_gib={hbm_gib}: must be in (0, {s.generation.hbm_gib}], the {s.generation.name} "
                            "chip's HBM (the compiler cannot plan beyond it)")
    devices = compile_devices(s, num_slices)
    progress(f"compiling the train step for {s.name} ({s.topology}, {len(devices)} chips)")
    plan = make_plan(config, s, devices, {}, hbm_gib)
    report = Report(s.name, num_slices, plan)
    if not plan.fits and search:
        progress(f"it does not fit ({plan.error.splitlines()[0]}); searching, at most {max_compiles} compiles")
        report.search = find_fit(config, s, devices, plan, hbm_gib, max_compiles, progress)
    fitting = report.fitting
    if fitting is not None:
        progress("roofline: counting the step's FLOPs in its jaxpr")
        where = parse_slice(fitting.slice_name)
        report.roofline = roofline(config, where, devices if where == s else compile_devices(where, num_slices),
                                   fitting)
    return report


def format_report(report: Report) -> str:
    """The plan as given; then, when it did not fit, the suggestion and its plan; the roofline of the one that
    fits."""
    parts = [format_plan(report.plan, report.roofline if report.plan.fits else None)]
    s = report.search
    if s is not None:
        if s.plan is None:
            parts.append(f"no fit found after {len(s.tried) - 1} compiles: {s.stopped}\n")
        else:
            where = f"on {s.topology} " if s.topology else ""
            parts.append(f"fits {where}with: {s.override_line}\n  (found in {len(s.tried) - 1} compiles)\n")
            parts.append(format_plan(s.plan, report.roofline))
    return "\n".join(parts)
