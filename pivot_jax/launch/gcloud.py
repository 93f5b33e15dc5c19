"""The `gcloud compute tpus` commands of a slice as argument lists (pure functions), and the one place that runs
them, or with `--dry_run` prints them shell-quoted instead. Nothing goes through a shell.

    tpu = Slice("run1", "us-east5-a", tpu_type("v5p-64"), capacity=Capacity(queued=True, tier="spot"))
    runner = Runner(dry_run=True)
    runner.run(create_command(tpu))      # prints: $ gcloud compute tpus queued-resources create run1 ...

A slice is a TPU VM node (`tpu-vm create`, on demand or `--spot`) or a queued resource holding one node of the
same name (`queued-resources create --node-id NAME`, with `--reserved`, `--spot`, or `--best-effort`, which only
gcloud's alpha track has).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from typing import TextIO

from pivot_jax.errors import ConfigError, PivotError
from pivot_jax.launch.accelerators import TpuType

log = logging.getLogger("pivot_jax.launch")

TIERS = ("", "spot", "reserved", "best_effort")  # "": on demand
NOT_FOUND = "NOT_FOUND"
# States after which a node or queued resource will not come back by itself: delete it and create it again.
NODE_GONE = frozenset({"PREEMPTED", "TERMINATED", NOT_FOUND})
QUEUED_GONE = frozenset({"FAILED", "SUSPENDED", "SUSPENDING", NOT_FOUND})
_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


class LaunchError(PivotError):
    """A cloud command failed, or a slice or worker did not do what was asked: the message says which."""


@dataclasses.dataclass(frozen=True)
class Capacity:
    """How the slice is paid for: on demand or spot (`tpu-vm create`), or queued (`queued-resources create`)
    on demand, spot, reserved or best-effort."""

    queued: bool = False
    tier: str = ""

    def __post_init__(self):
        if self.tier not in TIERS:
            raise ConfigError(f"capacity tier {self.tier!r}: one of {TIERS[1:]} or '' (on demand)")
        if self.tier in ("reserved", "best_effort") and not self.queued:
            raise ConfigError(f"--{self.tier} needs --queued: only queued resources take reserved or best-effort "
                              "capacity")

    @classmethod
    def from_flags(cls, spot: bool, queued: bool, reserved: bool, best_effort: bool) -> Capacity:
        chosen = [name for name, on in (("spot", spot), ("reserved", reserved), ("best_effort", best_effort)) if on]
        if len(chosen) > 1:
            raise ConfigError(f"--{' and --'.join(chosen)}: choose one capacity tier")
        return cls(queued, chosen[0] if chosen else "")

    def describe(self) -> str:
        tier = {"": "on-demand", "best_effort": "best-effort"}.get(self.tier, self.tier)
        return f"queued {tier}" if self.queued else tier


@dataclasses.dataclass(frozen=True)
class Slice:
    name: str  # the node; a queued resource has the same name
    zone: str
    tpu: TpuType | None  # None: enough to describe, delete or ssh to it, not to create or run on all workers
    project: str = ""  # "": gcloud's configured project
    runtime_version: str = ""  # "": the generation's default image
    capacity: Capacity = Capacity()

    def __post_init__(self):
        if not _NAME.fullmatch(self.name):
            raise ConfigError(f"--name {self.name!r}: a TPU name is lowercase letters, digits and '-', starting "
                              "with a letter and not ending with '-'")
        if not self.zone:
            raise ConfigError("--zone is empty: give the slice's zone, e.g. us-east5-a")

    @property
    def version(self) -> str:
        return self.runtime_version or (self.tpu.runtime_version if self.tpu else "")


def _where(s: Slice) -> list[str]:
    return [f"--zone={s.zone}"] + ([f"--project={s.project}"] if s.project else [])


def _node(s: Slice, verb: str, track: Sequence[str] = ()) -> list[str]:
    return ["gcloud", *track, "compute", "tpus", "tpu-vm", verb, s.name, *_where(s)]


def _queued(s: Slice, verb: str, track: Sequence[str] = ()) -> list[str]:
    return ["gcloud", *track, "compute", "tpus", "queued-resources", verb, s.name, *_where(s)]


def create_command(s: Slice) -> list[str]:
    """The command that asks for the slice: a node, or a queued resource naming one node after itself."""
    if not s.capacity.queued:
        return _node(s, "create") + [f"--accelerator-type={s.tpu.name}", f"--version={s.version}"] + (
            ["--spot"] if s.capacity.tier == "spot" else [])
    tier = s.capacity.tier
    track = ["alpha"] if tier == "best_effort" else []  # --best-effort exists only on the alpha track
    flag = {"": [], "spot": ["--spot"], "reserved": ["--reserved"], "best_effort": ["--best-effort"]}[tier]
    return _queued(s, "create", track) + [f"--accelerator-type={s.tpu.name}", f"--runtime-version={s.version}",
                                          f"--node-id={s.name}", *flag]


def describe_command(s: Slice, queued: bool | None = None) -> list[str]:
    queued = s.capacity.queued if queued is None else queued
    return (_queued if queued else _node)(s, "describe") + ["--format=json"]


def delete_command(s: Slice) -> list[str]:
    """Delete the node, or the queued resource with its node (`--force`); `--quiet` answers gcloud's prompt."""
    if s.capacity.queued:
        return _queued(s, "delete") + ["--force", "--quiet"]
    return _node(s, "delete") + ["--quiet"]


def ssh_command(s: Slice, worker: int | str, command: str | None = None) -> list[str]:
    """ssh to `worker` (an index or "all"); with `command`, run it there (non-interactive: `--quiet` lets gcloud
    make an ssh key without asking)."""
    if command is None:
        return _node(s, "ssh") + [f"--worker={worker}"]
    return _node(s, "ssh") + [f"--worker={worker}", f"--command={command}", "--quiet"]


def scp_command(s: Slice, local: str, remote: str, worker: int | str = "all") -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "scp", local, f"{s.name}:{remote}", *_where(s),
            f"--worker={worker}", "--quiet"]


class Runner:
    """Runs argument lists as processes (never through a shell), logging each as `$ COMMAND`; dry, prints each
    shell-quoted on `out` and runs nothing."""

    def __init__(self, dry_run: bool = False, out: TextIO | None = None):
        self.dry_run = dry_run
        self.out = out

    def show(self, argv: Sequence[str], note: str = "") -> None:
        print(f"$ {shlex.join(argv)}" + (f"    # {note}" if note else ""), file=self.out or sys.stdout,
              flush=True)

    def run(self, argv: Sequence[str], capture: bool = False, check: bool = True, note: str = "",
            interactive: bool = False) -> subprocess.CompletedProcess:
        """Run `argv`; `capture` keeps its output (text); `check` turns a failure into a LaunchError with the
        command and the end of its error output; `interactive` gives it this terminal's input. Dry: print it and
        return success with no output."""
        if self.dry_run:
            self.show(argv, note)
            return subprocess.CompletedProcess(list(argv), 0, "", "")
        log.info("$ %s", shlex.join(argv))
        try:
            done = subprocess.run(list(argv), capture_output=capture, text=True, check=False,
                                  stdin=None if interactive else subprocess.DEVNULL)
        except FileNotFoundError:
            raise LaunchError(f"{argv[0]} is not on PATH", hint="install the Google Cloud SDK (gcloud)") from None
        if check and done.returncode:
            tail = (done.stderr or "").strip().splitlines()[-3:] if capture else []
            raise LaunchError(f"`{shlex.join(argv[:6])} ...` failed (exit status {done.returncode})" +
                              (": " + " / ".join(tail) if tail else ""))
        return done


def state(runner: Runner, s: Slice, queued: bool | None = None) -> str:
    """The node's state (READY, CREATING, PREEMPTED, ...) or the queued resource's (ACTIVE, WAITING_FOR_RESOURCES,
    FAILED, SUSPENDED, ...); NOT_FOUND when there is none. Dry: NOT_FOUND (nothing is asked)."""
    done = runner.run(describe_command(s, queued), capture=True, check=False)
    if runner.dry_run:
        return NOT_FOUND
    if done.returncode:
        if "NOT_FOUND" in done.stderr or "not found" in done.stderr.lower():
            return NOT_FOUND
        raise LaunchError(f"describing {s.name} in {s.zone} failed (exit status {done.returncode}): "
                          f"{done.stderr.strip()[-300:]}")
    try:
        found = json.loads(done.stdout).get("state", "")
    except (json.JSONDecodeError, AttributeError):
        raise LaunchError(f"describing {s.name}: gcloud printed no JSON: {done.stdout[:200]!r}") from None
    return str(found.get("state", "") if isinstance(found, dict) else found)  # queued: {"state": {"state": ...}}
