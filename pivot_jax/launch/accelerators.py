"""Cloud TPU accelerator types (`v5p-64`, `v6e-8`, `v5litepod-16`): generation, hosts (workers), chips, the
runtime image to boot and the device files a leftover process holds.

    tpu = tpu_type("v5p-64")     # TpuType(name="v5p-64", generation="v5p", chips=32, hosts=8, chips_per_host=4)

The number in a type's name counts different things by generation:

- v2, v3, v4 and v5p count TensorCores: 2 per chip, 4 chips per host, so 8 per host. v4-8 and v5p-8 are one host
  of 4 chips; v4-32 is 4 hosts (16 chips); v5p-64 is 8 hosts (32 chips). The number is a multiple of 8.
- v5e (gcloud calls it `v5litepod-N`) and v6e (`v6e-N`) count chips, one TensorCore each. 1, 4 or 8 chips are one
  host (v5litepod-8 and v6e-8: one host of 8 chips); larger slices are hosts of 4 chips (v5litepod-16: 4 hosts,
  v6e-256: 64 hosts), so their number is a multiple of 4.

Any other name is an error that says which ones exist.
"""

from __future__ import annotations

import dataclasses
import re

from pivot_jax.errors import ConfigError

# generation -> (what the name counts, cores per chip, chips per host of a multi-host slice)
_GENERATIONS = {
    "v2": ("cores", 2, 4),
    "v3": ("cores", 2, 4),
    "v4": ("cores", 2, 4),
    "v5p": ("cores", 2, 4),
    "v5litepod": ("chips", 1, 4),
    "v6e": ("chips", 1, 4),
}
_SINGLE_HOST_CHIPS = (1, 4, 8)  # v5e/v6e sizes served by one host
# The runtime image per generation, as Cloud TPU's docs name them for JAX.
_RUNTIME_VERSIONS = {
    "v2": "tpu-ubuntu2204-base",
    "v3": "tpu-ubuntu2204-base",
    "v4": "tpu-ubuntu2204-base",
    "v5p": "v2-alpha-tpuv5",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v6e": "v2-alpha-tpuv6e",
}
# v2-v4 hosts expose the chips as /dev/accel*; v5e, v5p and v6e hosts through VFIO.
_DEVICES = {"v2": "/dev/accel*", "v3": "/dev/accel*", "v4": "/dev/accel*"}
_VFIO_DEVICES = "/dev/vfio/*"
# libtpu's lock: a process that died holding the TPU leaves it, and the next one fails with "TPU in use".
LIBTPU_LOCKFILE = "/tmp/libtpu_lockfile"


@dataclasses.dataclass(frozen=True)
class TpuType:
    name: str  # as gcloud's --accelerator-type takes it
    generation: str
    chips: int
    hosts: int  # the slice's workers (TPU VMs)
    chips_per_host: int

    @property
    def runtime_version(self) -> str:
        """The default TPU VM image of this generation (`--runtime_version` overrides it)."""
        return _RUNTIME_VERSIONS[self.generation]

    @property
    def devices(self) -> str:
        """A shell glob of the device files through which a process holds this host's chips."""
        return _DEVICES.get(self.generation, _VFIO_DEVICES)


def tpu_type(name: str) -> TpuType:
    """The TpuType of `name` (e.g. "v5p-64"); an unknown or impossible type is a ConfigError naming it."""
    match = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", name.strip())
    known = ", ".join(f"{g}-N" for g in _GENERATIONS)
    if not match or match.group(1) not in _GENERATIONS:
        hint = " (gcloud calls v5e v5litepod)" if name.startswith("v5e") else ""
        raise ConfigError(f"--accelerator {name!r}: not a TPU type; one of {known}, e.g. v5p-8, v4-32, v6e-8{hint}")
    generation, number = match.group(1), int(match.group(2))
    counts, cores_per_chip, chips_per_host = _GENERATIONS[generation]
    if counts == "cores":
        per_host = cores_per_chip * chips_per_host
        if number < per_host or number % per_host:
            raise ConfigError(f"--accelerator {name!r}: {generation} names count TensorCores, 8 per host; "
                              f"expected a multiple of 8, e.g. {generation}-8 or {generation}-64")
        return TpuType(name, generation, number // cores_per_chip, number // per_host, chips_per_host)
    if number in _SINGLE_HOST_CHIPS:
        return TpuType(name, generation, number, 1, number)
    if number < 16 or number % chips_per_host:
        raise ConfigError(f"--accelerator {name!r}: {generation} names count chips; expected 1, 4 or 8 (one host) "
                          f"or a multiple of 4 from 16 (hosts of 4 chips), e.g. {generation}-16")
    return TpuType(name, generation, number, number // chips_per_host, chips_per_host)
