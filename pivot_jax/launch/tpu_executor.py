"""The `tpu` sweep backend: each point trains on a Cloud TPU slice, started in the background through
`gcloud ... ssh` and polled the same way, so the sweep command may stop and a later one reattach.

    python -m pivot_jax.sweep --config configs/sweeps/tatoeba.py --workdir gs://BUCKET/sweeps/tatoeba \\
        --backend tpu --backend_option zone=us-east5-a --backend_option accelerator=v5p-8 \\
        --backend_option pool=4 --backend_option env_from_local=HF_TOKEN

Options (`--backend_option KEY=VALUE`):
  zone, accelerator   required: where, and which slice (any TPU type; a pod slice runs the point on all its hosts)
  pool=N              N slices PREFIX-0 .. PREFIX-(N-1) take the points in turn (created when missing or preempted,
                      reused when READY, kept at the end: delete them with `launch tpu delete`); default --parallel
  per_point=queued    instead: one queued resource PREFIX-POINT per point, deleted when the point ends
  capacity            on_demand (default), spot, reserved or best_effort (the last two as queued resources)
  prefix              slice names' prefix (default pivot-sweep); project, runtime_version: as `launch tpu`
  repo, source_dir, allow_dirty=true
                      what the workers install (default: this checkout's origin at its HEAD; see tpu.source_of)
  env_from_local=A,B  local environment variables passed as secrets (see tpu.staged_secrets)
  shared_mount=PATH   a directory every worker mounts at the same path, to hold the sweep instead of gs://
  poll_s=60           seconds between two looks at a running point (each is one ssh to the slice)
  wait_minutes=60     the longest wait for a slice to be READY / ACTIVE
  logdir=DIR          local logs of the gcloud commands (default runs/launch/sweep)

A job id is `SLICE:JOB`: ~/.pivot_jax/JOB.pid and JOB.exit on the slice's workers say whether it runs and how it
ended, so a restarted sweep command reattaches to it. Limits, honestly:
- the sweep's directory must be on GCS or the shared mount (the workers write it; this machine reads status.json);
- on GCS a point's log reaches the sweep's directory when the point ends (until then it is in ~/.pivot_jax/JOB.log
  on the workers); on a shared mount it is written there as it goes;
- starting a point waits for its slice: while a queued resource waits for capacity, the sweep starts nothing else
  and notices finished points only afterwards;
- a point whose slice was preempted is reported with exit status 75; the sweep resubmits it, which recreates the
  slice, and the point resumes from its checkpoint;
- the sweep command shows this backend's progress lines only if it shows the `pivot_jax.launch` logger.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from etils import epath

from pivot_jax.errors import ConfigError
from pivot_jax.launch.accelerators import tpu_type
from pivot_jax.launch.gcloud import Capacity, LaunchError, Runner, Slice
from pivot_jax.launch.job import JobState
from pivot_jax.launch.remote import remote_argv
from pivot_jax.launch.tpu import TpuLauncher, default_checkout, source_of
from pivot_jax.preemption import PREEMPTED_EXIT_CODE

log = logging.getLogger("pivot_jax.launch")

OPTIONS = ("zone", "accelerator", "pool", "per_point", "capacity", "prefix", "project", "runtime_version", "repo",
           "source_dir", "allow_dirty", "env_from_local", "shared_mount", "poll_s", "wait_minutes", "logdir")
CAPACITIES = {"on_demand": "", "spot": "spot", "reserved": "reserved", "best_effort": "best_effort"}


class TpuExecutor:
    """Points on Cloud TPU slices: a pool of slices, or one queued resource per point (see the module doc)."""

    name = "tpu"

    def __init__(self, slots: int, options: Mapping[str, str]):
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"--backend tpu: unknown --backend_option {', '.join(unknown)}; known: "
                              f"{', '.join(OPTIONS)}")
        missing = [key for key in ("zone", "accelerator") if not options.get(key)]
        if missing:
            raise ConfigError(f"--backend tpu needs --backend_option {'=... and '.join(missing)}=...")
        self.tpu = tpu_type(options["accelerator"])
        tier = options.get("capacity", "on_demand")
        if tier not in CAPACITIES:
            raise ConfigError(f"--backend_option capacity={tier}: one of {', '.join(CAPACITIES)}")
        self.per_point = options.get("per_point", "")
        if self.per_point not in ("", "queued"):
            raise ConfigError(f"--backend_option per_point={self.per_point}: the only per-point mode is queued")
        queued = bool(self.per_point) or tier in ("reserved", "best_effort")
        self.capacity = Capacity(queued, CAPACITIES[tier])
        self.zone, self.project = options["zone"], options.get("project", "")
        self.runtime_version, self.prefix = options.get("runtime_version", ""), options.get("prefix", "pivot-sweep")
        self.slots = max(1, _integer(options, "pool", slots, 1) if not self.per_point else slots)
        self.checkout = options.get("source_dir") or default_checkout()
        self.source = source_of(self.checkout, options.get("repo", ""), options.get("allow_dirty", "") == "true")
        self.secrets = [name for name in options.get("env_from_local", "").split(",") if name]
        self.shared_mount = options.get("shared_mount", "")
        self.poll_s = float(_integer(options, "poll_s", 60, 0))
        self.wait_s = 60.0 * _integer(options, "wait_minutes", 60, 1)
        self.logdir = Path(options.get("logdir", "runs/launch/sweep"))
        self.runner = Runner()
        self._busy: dict[str, str] = {}  # slice -> the job on it
        self._seen: dict[str, tuple[float, JobState]] = {}  # job -> (when, what the last look found)

    def _launcher(self, slice_name: str) -> TpuLauncher:
        return TpuLauncher(Slice(slice_name, self.zone, self.tpu, self.project, self.runtime_version,
                                 self.capacity), self.runner, wait_s=self.wait_s, poll_s=min(self.poll_s, 15.0))

    def _slice_for(self, point: str) -> str:
        if self.per_point:
            return _name(f"{self.prefix}-{point}")
        free = [name for name in (f"{self.prefix}-{i}" for i in range(self.slots)) if name not in self._busy]
        if not free:
            raise LaunchError(f"--backend tpu: all {self.slots} slices of the pool are busy")
        return free[0]

    def submit(self, name: str, command: Sequence[str], log: epath.Path, env: Mapping[str, str]) -> str:
        log_path = os.fspath(log)
        if not (log_path.startswith("gs://") or self.shared_mount and
                os.path.abspath(log_path).startswith(os.path.abspath(self.shared_mount) + "/")):
            raise ConfigError(f"--backend tpu: the sweep's --workdir must be on GCS (gs://...) or on a shared mount "
                              f"(--backend_option shared_mount=PATH); {log_path} is neither",
                              hint="the TPU workers write the points' directories, and this machine reads them")
        slice_name = self._slice_for(name)
        launcher = self._launcher(slice_name)
        launcher.create()
        launcher.setup(self.source, self.logdir)  # quick when the slice is at this commit already
        job_name = f"{_name(name)[:40]}-{int(time.time())}"
        extra = {k: v for k, v in env.items() if os.environ.get(k) != v}  # what the sweep adds (JAX's cache)
        launcher.start(remote_argv(command, self.checkout), job_name, log_path, self.logdir, self.secrets, extra)
        job = f"{slice_name}:{job_name}"
        self._busy[slice_name] = job
        self._seen[job] = (time.monotonic(), JobState(True))
        return job

    def poll(self, job: str) -> JobState:
        seen = self._seen.get(job)
        if seen and (not seen[1].running or time.monotonic() - seen[0] < self.poll_s):
            return seen[1]
        slice_name, _, job_name = job.partition(":")
        launcher = self._launcher(slice_name)
        found = self._judge(launcher, job_name, launcher.poll(job_name))
        self._seen[job] = (time.monotonic(), found)
        if found.running:
            self._busy[slice_name] = job  # also a job of an earlier sweep command: its slice is taken
        elif self._busy.get(slice_name) == job:
            del self._busy[slice_name]
            if self.per_point:
                launcher.delete()
        return found

    def _judge(self, launcher: TpuLauncher, job_name: str, answers: list[str] | None) -> JobState:
        hosts = self.tpu.hosts
        codes = [int(a.split()[1]) for a in answers or [] if a.startswith("exit ")]
        if answers is None or "gone" in answers:
            current, gone = launcher.condition()
            if gone:
                log.warning("%s: %s is %s: the point was preempted", job_name, launcher.spec.name, current)
                return JobState(False, PREEMPTED_EXIT_CODE)
            if answers is None:
                log.warning("%s: could not reach %s (%s); trying again later", job_name, launcher.spec.name, current)
                return JobState(True)
            return JobState(False, next((c for c in codes if c), None))  # vanished: status.json decides
        if any(codes):
            if "running" in answers:
                launcher.stop(job_name)  # fail fast: the other workers would wait for the failed one forever
            return JobState(False, next(c for c in codes if c))
        if len(codes) >= hosts:
            return JobState(False, 0)
        return JobState(True)

    def cancel(self, job: str) -> None:
        slice_name, _, job_name = job.partition(":")
        self._launcher(slice_name).stop(job_name, "TERM")  # the trainer saves and exits 75


def _integer(options: Mapping[str, str], key: str, default: int, least: int) -> int:
    value = options.get(key, "")
    if not value:
        return default
    if not value.isdigit() or int(value) < least:
        raise ConfigError(f"--backend_option {key}={value}: a whole number from {least}")
    return int(value)


def _name(text: str) -> str:
    """`text` as a TPU / job name: lowercase letters, digits and '-', from a letter; a long one is cut to 50
    characters and ends with a hash of the whole, so two long names stay apart."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = name if name[:1].isalpha() else f"p-{name}"
    if len(name) > 50:
        name = f"{name[:41].rstrip('-')}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return name
