"""A training run (or one sweep point) as a GKE workload through xpk: the `xpk workload create` command, built
as an argument list. xpk runs `--command` with a shell inside the container, so the trainer's arguments are
shell-quoted into it and arrive literally.

    argv = workload_create(Workload("coit-es", "my-cluster", "v5p-64", "gcr.io/p/pivot_jax:abc"),
                           ["python", "-m", "pivot_jax.train", "--config", "configs/coit.py:es", ...])

The image must hold the project installed with its [tpu] extra and start in its checkout (the command's relative
paths, like `configs/...`, are resolved there); workdirs and data belong on GCS. Secrets: `--env-file` lists only
the variables' names, and xpk takes each value from its own environment (so it is never in an argument list or a
file here); it then sits in the workload's Kubernetes spec, readable by whoever may read the cluster's JobSets.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Sequence

from pivot_jax.errors import ConfigError
from pivot_jax.launch.accelerators import tpu_type

_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
MAX_NAME = 40  # xpk's limit on a workload name


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    cluster: str
    tpu: str  # an accelerator type, e.g. v5p-64
    docker_image: str
    num_slices: int = 1
    project: str = ""
    zone: str = ""
    priority: str = ""  # "": xpk's default (medium)
    retries: int = 0  # JobSet restarts after a failure or a preemption (the trainer resumes from its checkpoint)

    def __post_init__(self):
        if not _NAME.fullmatch(self.name) or len(self.name) > MAX_NAME:
            raise ConfigError(f"--name {self.name!r}: an xpk workload name is at most {MAX_NAME} lowercase letters, "
                              "digits and '-', starting with a letter and not ending with '-'")
        tpu_type(self.tpu)  # an unknown type fails here, naming it, rather than inside xpk
        if not self.cluster or not self.docker_image:
            raise ConfigError("xpk needs --cluster and --docker_image (an image with pivot_jax[tpu] installed)")
        if self.num_slices < 1:
            raise ConfigError(f"--num_slices {self.num_slices}: at least 1")


def workload_name(text: str) -> str:
    """`text` (a sweep point's name) as a valid workload name: lowercase, other characters as '-', at most 40."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = name if name[:1].isalpha() else f"p-{name}"
    return name[:MAX_NAME].rstrip("-")


def workload_create(w: Workload, argv: Sequence[str], env_file: str = "") -> list[str]:
    """`xpk workload create` of `argv` on `w`; `env_file` names a file of variable names (see the module doc)."""
    if not argv:
        raise ConfigError("no command to run: give it after `--`, e.g. -- python -m pivot_jax.train ...")
    command = ["xpk", "workload", "create", f"--cluster={w.cluster}", f"--workload={w.name}", f"--tpu-type={w.tpu}",
               f"--num-slices={w.num_slices}", f"--docker-image={w.docker_image}", f"--command={shlex.join(argv)}"]
    command += [f"--project={w.project}"] * bool(w.project) + [f"--zone={w.zone}"] * bool(w.zone)
    command += [f"--priority={w.priority}"] * bool(w.priority) + [f"--env-file={env_file}"] * bool(env_file)
    if w.retries:
        # The trainer answers a pod's SIGTERM by saving and exiting 75, which JobSet counts as a failure of the
        # user's code: without the second flag such a preemption would not be restarted.
        command += [f"--max-restarts={w.retries}", "--restart-on-user-code-failure"]
    return command


def delete_command(w: Workload) -> list[str]:
    return ["xpk", "workload", "delete", f"--cluster={w.cluster}", f"--workload={w.name}"] + (
        [f"--project={w.project}"] if w.project else []) + ([f"--zone={w.zone}"] if w.zone else [])
