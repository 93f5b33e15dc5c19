"""TPU slices by their Cloud names (`v5p-64`, `v5litepod-16`, `v6e-8`, `v4-32`): chips, ICI shape, per-chip HBM
and bandwidth, and libtpu's compile-only devices for them, which compile a program for the slice on any host.

    s = parse_slice("v5p-64")                     # Slice(v5p, 32 chips, 2x4x4)
    devices = compile_devices(s, num_slices=2)    # 64 TpuDevices (2 slices), nothing attached to this host

Peak FLOP/s come from `pivot_jax.throughput.PEAK_TFLOPS` by the devices' kind, as for measured MFU.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import jax
from jax.experimental import topologies

from pivot_jax.errors import PivotError


class TopologyError(PivotError, ValueError):
    """A slice name, a slice count or a TPU runtime the planner cannot use, named."""


@dataclasses.dataclass(frozen=True)
class Generation:
    """One TPU generation as its Cloud docs (cloud.google.com/tpu/docs/v4, v5e, v5p, v6e) give it."""

    name: str  # libtpu's topology prefix ("v5p:2x2x1")
    aliases: tuple[str, ...]  # the prefixes of Cloud's accelerator types ("v5litepod-16")
    hbm_gib: float  # per chip
    hbm_gbps: float  # per chip, GB/s
    cores_per_chip: int  # the number in `v5p-N` counts TensorCores: 2 per chip on v4 / v5p, 1 on v5e / v6e
    shapes: dict[int, tuple[int, ...]]  # chips -> ICI shape of the slice sizes Cloud sells (single slice)
    chip_config: str  # "megacore": one JAX device per chip (its two cores together), as on real v4 / v5p hosts

    def accelerator_type(self, chips: int) -> str:
        return f"{self.aliases[0]}-{chips * self.cores_per_chip}"


_CUBES = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4), 128: (4, 4, 8), 256: (4, 8, 8),
          512: (8, 8, 8), 1024: (8, 8, 16), 2048: (8, 16, 16)}
_PLANES = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}

GENERATIONS: dict[str, Generation] = {g.name: g for g in (
    Generation("v4", ("v4",), 32, 1200, 2, _CUBES | {4096: (16, 16, 16)}, "megacore"),
    Generation("v5p", ("v5p",), 95, 2765, 2, _CUBES | {4096: (16, 16, 16), 6144: (16, 16, 24)}, "megacore"),
    Generation("v5e", ("v5litepod", "v5e"), 16, 819, 1, _PLANES, "default"),
    Generation("v6e", ("v6e",), 32, 1640, 1, _PLANES, "default"),
)}


@dataclasses.dataclass(frozen=True)
class Slice:
    generation: Generation
    chips: int

    @property
    def shape(self) -> tuple[int, ...]:
        return self.generation.shapes[self.chips]

    @property
    def name(self) -> str:
        return self.generation.accelerator_type(self.chips)

    @property
    def topology(self) -> str:
        return f"{self.generation.name}:{'x'.join(map(str, self.shape))}"


def slice_names() -> list[str]:
    return [Slice(g, chips).name for g in GENERATIONS.values() for chips in sorted(g.shapes)]


def parse_slice(name: str) -> Slice:
    """`v5p-64` -> Slice(v5p, 32 chips); an unknown generation or size is an error listing what exists."""
    match = re.fullmatch(r"([a-z0-9]+)-(\d+)", name.strip().lower())
    generation = next((g for g in GENERATIONS.values() if match and match.group(1) in g.aliases), None)
    if generation is None:
        known = ", ".join(f"{a}-N" for g in GENERATIONS.values() for a in g.aliases)
        raise TopologyError(f"--topology={name!r}: not a TPU slice name; expected one of {known} (Cloud's "
                            "accelerator types, e.g. v5p-64, v5litepod-16, v6e-8, v4-32)")
    count = int(match.group(2))
    chips, rest = divmod(count, generation.cores_per_chip)
    if rest or chips not in generation.shapes:
        sizes = ", ".join(generation.accelerator_type(c) for c in sorted(generation.shapes))
        raise TopologyError(f"--topology={name!r}: no such {generation.name} slice; the sizes are {sizes}")
    return Slice(generation, chips)


def larger_slices(s: Slice) -> list[Slice]:
    """The same generation's slice sizes above `s`, smallest first."""
    return [Slice(s.generation, chips) for chips in sorted(s.generation.shapes) if chips > s.chips]


def _host_bounds(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Chips per host: v4 / v5p hosts hold a 2x2x1 block; a v5e / v6e slice of up to 8 chips is one host, a larger
    one is cut into 2x2 hosts (Cloud's 4-chip VMs)."""
    if len(shape) == 2 and math.prod(shape) <= 8:
        return (*shape, 1)
    return (2, 2, 1)


def _wraparound(s: Slice) -> tuple[bool, bool, bool]:
    """ICI wraps around (a torus) along the dimensions of whole cubes (v4 / v5p, 64 chips and up) or of a full
    16x16 pod (v5e / v6e); smaller slices are meshes. This changes only the collectives' routing, not memory."""
    if len(s.shape) == 3:
        return tuple(s.chips >= 64 and d % 4 == 0 for d in s.shape)
    return (*(d == 16 for d in s.shape), False)


def compile_devices(s: Slice, num_slices: int = 1) -> list[jax.Device]:
    """libtpu's compile-only devices of `num_slices` slices `s` (Multislice when more than one): a jitted function
    lowered with shardings over them compiles for that hardware here, on a host with no TPU attached."""
    if num_slices < 1:
        raise TopologyError(f"--num_slices={num_slices}: must be >= 1")
    # Nothing here touches a chip: skip the GCE metadata queries (no metadata server off Cloud) and libtpu's
    # one-process-per-host lock, which any other JAX process of this environment may hold.
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    # At start-up libtpu looks for this host's own TPU and prints errors when it finds none: name one (the
    # topology asked for below is what the devices are, whatever these say).
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", s.name)
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    try:
        description = topologies.get_topology_desc(
            topology_name=s.topology, platform="tpu", chip_config_name=s.generation.chip_config,
            chips_per_host_bounds=_host_bounds(s.shape), num_slices=num_slices, wrap=_wraparound(s))
    except RuntimeError as e:  # jax's "TPU support not installed" and libtpu's own errors alike
        if "not installed" in str(e):
            raise TopologyError("planning for TPUs needs libtpu, which is not installed",
                                hint='pip install "jax[tpu]==0.10.2" (or the project\'s [tpu] or [dev] extra)') from e
        raise TopologyError(f"libtpu cannot describe {s.name} ({s.topology}) x {num_slices}: {e}") from e
    return list(description.devices)
