"""SLURM through submitit: a training run on N nodes (one process per node, `jax.distributed` wired from SLURM's
environment by `pivot_jax.distributed`), and the `slurm` sweep backend, whose points go out as job arrays.

    options = SlurmOptions(partition="gpu", nodes=2, gpus_per_node=8, time_min=24 * 60)
    print(sbatch_script(command, options, "runs/slurm"))   # --dry_run: the file submitit submits
    job = submit_training(command, options, "runs/slurm")   # "1234"; its log: runs/slurm/1234_0_log.out

submitit writes the sbatch file (`#SBATCH` directives, then `srun python -m submitit.core._submit FOLDER`) and a
pickle of a `RunCommand`, which runs the command on every node and exits with its exit code, so SLURM's
ExitCode is the trainer's (75: preempted). FOLDER (submitit's) must be on a filesystem the nodes share, and so
must this Python environment (the job runs `sys.executable`). A job is followed with `squeue` and `scontrol`
(the controller keeps a finished job `MinJobAge` seconds), then `sacct` where the cluster keeps accounting.
Cancelling sends SIGTERM to the job's processes only, so the trainer saves its step and exits 75 however long
the save takes (a plain `scancel` kills it `KillWait` seconds later).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import submitit
from etils import epath

from pivot_jax.errors import ConfigError
from pivot_jax.launch.job import JobState
from pivot_jax.launch.relay import run_logged

log = logging.getLogger("pivot_jax.launch")

# Job states that SLURM never leaves (squeue/scontrol/sacct spelling); any other state is still at work.
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL",
         "DEADLINE"}


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """What a job asks SLURM for. None leaves a directive out (the cluster's default); `extra` adds any other
    `#SBATCH --KEY=VALUE` (e.g. {"exclusive": True, "mail-type": "END"})."""

    partition: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time_min: int = 60  # submitit's own default is 5 minutes: too short for any training
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    job_name: str | None = None  # default: "pivot_jax", or the sweep point's name
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("nodes", "time_min"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SLURM option {name} must be at least 1, got {getattr(self, name)}")
        for name in ("gpus_per_node", "cpus_per_task", "mem_gb"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"SLURM option {name} must not be negative, got {value}")


@dataclasses.dataclass(frozen=True)
class RunCommand:
    """What each node of a job runs (pickled by submitit): `command`, its output appended to `log` (else to the
    job's own log), `env` added to the node's environment; exits with the command's exit code."""

    command: list[str]
    log: str | None = None
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __call__(self) -> int:
        # SLURM signals every process of the job step, the trainer too; it saves and exits 75. submitit's own
        # handler for its preemption signal would requeue or exit at once, leaving the save unfinished and the exit
        # code lost: this process only waits for the trainer.
        for sig in (signal.SIGTERM, signal.Signals["SIG" + submitit.JobEnvironment.USR_SIG]):
            signal.signal(sig, _ignore)
        env = {**os.environ, **self.env}
        code = run_logged(self.command, self.log, env)  # a local file, an object (gs://), or the job's own log
        if code:
            sys.exit(code)  # killed by signal N: 128 + N, as a shell reports it
        return 0


def _ignore(signum: int, frame: Any) -> None:
    del signum, frame


class _Submitit(submitit.SlurmExecutor):
    """submitit's SlurmExecutor, also where SLURM is not installed: `--dry_run` writes its sbatch file anywhere.
    Submitting checks for `sbatch` itself (`_require_slurm`)."""

    @classmethod
    def affinity(cls) -> int:
        return 2


def _executor(options: SlurmOptions, folder: epath.PathLike, job_name: str, **parameters: Any) -> _Submitit:
    executor = _Submitit(folder=os.fspath(folder))
    sbatch: dict[str, Any] = dict(job_name=options.job_name or job_name, nodes=options.nodes, ntasks_per_node=1,
                                  time=options.time_min, stderr_to_stdout=True)
    if options.gpus_per_node:
        sbatch["gpus_per_node"] = options.gpus_per_node
    if options.mem_gb is not None:
        gb = float(options.mem_gb)
        sbatch["mem"] = f"{int(gb)}G" if gb.is_integer() else f"{round(gb * 1024)}M"
    for name in ("partition", "cpus_per_task", "account", "qos", "constraint"):
        if getattr(options, name) is not None:
            sbatch[name] = getattr(options, name)
    if options.extra:
        sbatch["additional_parameters"] = dict(options.extra)
    try:
        executor.update_parameters(**sbatch, **parameters)
    except ValueError as e:  # submitit names the parameter it refuses
        raise ConfigError(f"SLURM options {sbatch | parameters}: {e}") from None
    return executor


def _training_executor(command: Sequence[str], options: SlurmOptions, folder: epath.PathLike) -> _Submitit:
    # The sbatch file shows what the pickled RunCommand runs; submitted as it is printed.
    return _executor(options, folder, "pivot_jax", setup=[f"# runs on every node: {shlex.join(command)}"])


def sbatch_script(command: Sequence[str], options: SlurmOptions, folder: epath.PathLike) -> str:
    """The sbatch file `submit_training` submits (what `--dry_run` prints); nothing is written or submitted."""
    executor = _training_executor(command, options, folder)
    return executor._make_submission_file_text(executor._submitit_command_str, "")  # submitit has no public dry run


def submit_training(command: Sequence[str], options: SlurmOptions, folder: epath.PathLike) -> str:
    """Submit `command` (e.g. `python -m pivot_jax.train --config ... --workdir ...`) to run once on each of
    `options.nodes` nodes; returns the SLURM job id. Its output goes to `log_path(folder, job)`."""
    _require_slurm()
    if not command:
        raise ConfigError("submit_training: the command to run is empty (give it after `--`)")
    with _sbatch_errors():
        job = _training_executor(command, options, folder).submit(RunCommand(list(command)))
    return job.job_id


def log_path(folder: epath.PathLike, job: str, node: int = 0) -> epath.Path:
    """The job's output on its `node`-th node (stdout and stderr): submitit's FOLDER/JOB_NODE_log.out."""
    return epath.Path(submitit.core.utils.JobPaths(os.fspath(folder), job_id=job, task_id=node).stdout)


def job_state(job: str) -> JobState:
    """Whether SLURM job `job` ("1234", or "1234_0" for an array task) is still queued or at work, and when it
    ended, its exit code: known for COMPLETED and FAILED; None otherwise (cancelled, timed out, node failure: the
    run's status.json tells what it did) and when the cluster no longer remembers the job."""
    shown = subprocess.run(["scontrol", "show", "job", "--oneliner", job], capture_output=True, text=True,
                           check=False)
    if shown.returncode == 0 and shown.stdout.strip():
        line = shown.stdout.splitlines()[0]
        state = re.search(r"\bJobState=(\S+)", line)
        return _state(state.group(1) if state else "UNKNOWN", re.search(r"\bExitCode=(\S+)", line))
    if "Invalid job id" not in shown.stderr:  # the controller is busy or restarting: the job is not known ended
        log.warning("scontrol show job %s: %s; taking the job as still running", job, shown.stderr.strip())
        return JobState(True)
    accounted = subprocess.run(["sacct", "--noheader", "--parsable2", "--allocations", "--jobs", job,
                                "--format", "State,ExitCode"], capture_output=True, text=True, check=False)
    rows = [r.split("|") for r in accounted.stdout.splitlines() if "|" in r] if accounted.returncode == 0 else []
    if not rows:
        return JobState(False)  # ended long ago, and no accounting: the run's status.json says how
    return _state(rows[0][0], re.match(r"(\S+)", rows[0][1]))


def _state(state: str, exit_code: re.Match | None) -> JobState:
    state = state.split()[0].upper()  # sacct writes "CANCELLED by 0"
    if state not in ENDED:
        return JobState(True)
    if state not in ("COMPLETED", "FAILED") or exit_code is None:
        return JobState(False)
    code, _, sig = exit_code.group(1).partition(":")  # "75:0"; "0:9" when killed by signal 9
    returncode = int(code) or (128 + int(sig) if sig and int(sig) else 0)
    if state == "FAILED" and not returncode:  # failed around the command (a launch or node error), not by it
        return JobState(False)
    return JobState(False, returncode)


def queue_states(jobs: Sequence[str]) -> dict[str, str] | None:
    """{job: state} of those `jobs` the controller still holds, from one squeue call (None when it failed)."""
    if not jobs:
        return {}
    shown = subprocess.run(["squeue", "--noheader", "--array", "--states=all", "--jobs", ",".join(jobs),
                            "--format", "%i|%T"], capture_output=True, text=True, check=False)
    if shown.returncode and "Invalid job id" not in shown.stderr:  # (squeue says so when it knows none of them)
        log.warning("squeue: %s; taking the jobs as still running", shown.stderr.strip())
        return None
    return dict(line.split("|", 1) for line in shown.stdout.splitlines() if "|" in line)


def cancel_job(job: str) -> None:
    """SIGTERM to the job's processes (the trainer saves its step and exits 75); a job still queued is removed."""
    # Each call acts only on a job in that state: no window between looking at the state and acting on it.
    subprocess.run(["scancel", "--state=PENDING", job], check=False)
    subprocess.run(["scancel", "--state=RUNNING", "--signal=TERM", job], check=False)


@contextlib.contextmanager
def _sbatch_errors() -> Iterator[None]:
    """sbatch refusing a job (a partition, account or GPU count the cluster does not have) is the user's error."""
    try:
        yield
    except submitit.core.utils.FailedJobError as e:
        raise ConfigError(f"sbatch refused the job: {'; '.join(str(e).strip().splitlines())}") from None


def _require_slurm() -> None:
    if shutil.which("sbatch") is None:
        raise ConfigError("sbatch is not on PATH: submitting to SLURM needs its client commands (a login node); "
                          "for a local single-node cluster: sudo bash launch/local_slurm.sh start")


class SlurmExecutor:
    """The `slurm` sweep backend: each point a SLURM job; points submitted together (`submit_batch`) one job
    array, at most `array_parallelism` tasks running at once. A job id is SLURM's ("1234" or "1234_0"), so a
    later sweep command polls it to reattach.

    A point's output is appended to its train.log by the job itself (`RunCommand`): sbatch's --output takes one
    pattern for a whole array, not a file per point. submitit's own log of the job (its wrapper, srun) stays in
    `folder` (default: SWEEP_DIR/slurm), and each point's train.log starts with a line naming it.

    The runner polls each running point every second; SLURM's controller is shared, so one `squeue` answers for
    all of this executor's jobs at most every `refresh_s` seconds, and `scontrol` is asked only once a job ended."""

    name = "slurm"

    def __init__(self, slots: int = 1, options: SlurmOptions = SlurmOptions(), folder: epath.PathLike | None = None,
                 array_parallelism: int | None = None, refresh_s: float = 5.0):
        self.slots = max(1, slots)
        self.options = options
        self.folder = folder
        self.array_parallelism = array_parallelism or self.slots
        self.refresh_s = refresh_s
        self._states: dict[str, JobState] = {}  # what the last look said of each job
        self._refreshed = 0.0

    def submit(self, name: str, command: Sequence[str], log: epath.Path, env: Mapping[str, str]) -> str:
        return self.submit_batch([(name, command, log, env)])[0]

    def submit_batch(self, points: Sequence[tuple[str, Sequence[str], epath.Path, Mapping[str, str]]]) -> list[str]:
        """Submit several points at once: one job array of them (a single job for one point)."""
        _require_slurm()
        names = [name for name, *_ in points]
        # The runner's layout is SWEEP_DIR/points/NAME/train.log: its jobs' files go to SWEEP_DIR/slurm.
        folder = epath.Path(self.folder or epath.Path(points[0][2]).parent.parent.parent / "slurm")
        job_name = names[0] if len(names) == 1 else os.path.commonprefix(names).rstrip("-_") or "pivot_jax"
        executor = _executor(self.options, folder, job_name, array_parallelism=self.array_parallelism)
        runs = []
        for _, command, log_file, env in points:
            epath.Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            # sbatch hands this environment to the job already: only what the runner changed travels.
            runs.append(RunCommand(list(command), os.fspath(log_file),
                                   {k: v for k, v in env.items() if os.environ.get(k) != v}))
        with _sbatch_errors(), executor.batch():
            jobs = [executor.submit(run) for run in runs]
        ids = [job.job_id for job in jobs]
        self._states.update((job, JobState(True)) for job in ids)
        for (_, _, log_file, _), job in zip(points, ids):
            with open(log_file, "a", encoding="utf-8") as f:
                f.write(f"[pivot_jax] {time.strftime('%Y-%m-%d %H:%M:%S')} SLURM job {job} submitted from "
                        f"{socket.gethostname()}; the job's own log: {log_path(folder, job)}\n")
        return ids

    def poll(self, job: str) -> JobState:
        if job not in self._states or self._states[job].running and time.time() - self._refreshed > self.refresh_s:
            self._states.setdefault(job, JobState(True))  # a job of an earlier sweep command: look at it now
            self._refresh()
        return self._states[job]

    def _refresh(self) -> None:
        watched = sorted(job for job, state in self._states.items() if state.running)
        queued = queue_states(watched)
        for job in watched:
            if queued is not None and (job not in queued or queued[job] in ENDED):
                self._states[job] = job_state(job)  # ended, or gone from the queue: its exit code, if known
        self._refreshed = time.time()

    def cancel(self, job: str) -> None:
        cancel_job(job)


OPTION_KEYS = ("partition", "nodes", "gpus_per_node", "cpus_per_task", "mem_gb", "time_min", "account", "qos",
               "constraint", "job_name", "folder", "array_parallelism")


def make_slurm_executor(slots: int, options: Mapping[str, str]) -> SlurmExecutor:
    """The `slurm` backend from `--backend_option KEY=VALUE`s (keys: OPTION_KEYS)."""
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise ConfigError(f"--backend slurm: unknown --backend_option {unknown}; known: {', '.join(OPTION_KEYS)}")
    typed: dict[str, Any] = {}
    for key, value in options.items():
        kind = {"nodes": int, "gpus_per_node": int, "cpus_per_task": int, "time_min": int, "array_parallelism": int,
                "mem_gb": float}.get(key, str)
        try:
            typed[key] = kind(value)
        except ValueError:
            raise ConfigError(f"--backend_option {key}={value!r}: expected {kind.__name__}") from None
    folder, parallelism = typed.pop("folder", None), typed.pop("array_parallelism", None)
    return SlurmExecutor(slots, SlurmOptions(**typed), folder, parallelism)
