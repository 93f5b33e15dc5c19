"""Launch training on Cloud TPU VMs and pod slices (gcloud), on GKE (xpk), or on a SLURM cluster (submitit).

  python -m pivot_jax.launch tpu ACTION --name NAME --zone ZONE --accelerator v5p-64 [--project P]
      [--runtime_version V] [--spot | --queued [--spot | --reserved | --best_effort]] [--dry_run] [-- COMMAND ...]
    create   create the slice (on demand, spot, or a queued resource) and wait until it is READY / ACTIVE
    setup    the local checkout's commit (--repo URL, default its origin) cloned and installed on every worker
    run      -- COMMAND ...: on all workers at once, after freeing their TPUs; output in LOGDIR/worker-i.log,
             worker 0's also here; the first failure stops the others. --retries N recreates a preempted slice,
             sets it up and reruns (the trainer resumes from its checkpoint). --env_from_local NAME passes a secret.
    delete   delete the slice (with --queued: the queued resource and its node)
    status   the node's state (and the queued resource's)
    ssh      an interactive shell on worker 0 (--worker i)
  python -m pivot_jax.launch xpk --cluster C --name W --accelerator v5p-64 --docker_image IMG [--num_slices N]
      [--run] -- COMMAND ...          (or --sweep FILE --workdir gs://... --point NAME instead of the command)
  python -m pivot_jax.launch slurm [--partition P] [--nodes N] [--gpus_per_node G] [--time_min M]
      [--cpus_per_task C] [--mem_gb GB] [--account A] [--qos Q] [--constraint C] [--sbatch KEY[=VALUE]]...
      [--folder runs/slurm] [--dry_run] -- COMMAND ...
    one process per node with all its GPUs, jax.distributed set up from SLURM's environment; --dry_run prints
    the exact sbatch file submitit submits; the job's output is FOLDER/JOBID_0_log.out (one file per node)

Every action takes --dry_run: the exact commands, shell-quoted, and nothing run. Workdirs and data belong on GCS
(gs://) or a mount all workers share: a TPU VM's disk goes with it. Progress goes to stderr.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from absl import app, flags

from pivot_jax.cli import Command, Subcommand
from pivot_jax.errors import ConfigError
from pivot_jax.launch.accelerators import tpu_type
from pivot_jax.launch.gcloud import Capacity, Runner, Slice
from pivot_jax.launch.remote import remote_argv
from pivot_jax.launch.slurm import SlurmOptions, log_path, sbatch_script, submit_training
from pivot_jax.launch.tpu import TpuLauncher, default_checkout, source_of
from pivot_jax.launch.xpk import Workload, delete_command, workload_create, workload_name
from pivot_jax.paths import as_path, is_url
from pivot_jax.sweep.runner import point_workdir, train_command  # the command only: `xpk --sweep` runs a point
from pivot_jax.sweep.spec import load_sweep

TPU_ACTIONS = ("create", "setup", "run", "delete", "status", "ssh")


def _common_flags() -> None:
    flags.DEFINE_string("name", None, "the slice (tpu) or the workload (xpk)")
    flags.DEFINE_string("accelerator", None, "TPU type, e.g. v5p-8, v5p-64, v4-32, v6e-8, v5litepod-16")
    flags.DEFINE_string("zone", None, "the zone, e.g. us-east5-a")
    flags.DEFINE_string("project", "", "the Google Cloud project (default: gcloud's)")
    flags.DEFINE_bool("dry_run", False, "print the commands, shell-quoted, and run nothing")
    flags.DEFINE_multi_string("env_from_local", [], "a local environment variable passed as a secret (repeatable), "
                              "e.g. HF_TOKEN: its value is never printed, logged or put in a command line")
    flags.DEFINE_integer("retries", 0, "tpu run: reruns after a preemption; xpk: JobSet restarts", lower_bound=0)
    flags.DEFINE_string("logdir", None, "local files: tpu worker-i.log and setup-i.log, xpk xpk.env (default "
                        "runs/launch/NAME)")


def _tpu_flags() -> None:
    flags.DEFINE_string("runtime_version", "", "TPU VM image (default per generation, e.g. v2-alpha-tpuv5)")
    flags.DEFINE_bool("spot", False, "spot capacity (with --queued: a queued spot request)")
    flags.DEFINE_bool("queued", False, "a queued resource (waits for capacity) instead of a plain TPU VM")
    flags.DEFINE_bool("reserved", False, "with --queued: the project's reservation")
    flags.DEFINE_bool("best_effort", False, "with --queued: best-effort capacity (gcloud alpha)")
    flags.DEFINE_string("repo", "", "setup: the URL the workers clone (default: the local checkout's origin)")
    flags.DEFINE_string("source_dir", None, "setup: the local checkout whose HEAD the workers get (default: this "
                        "pivot_jax's)")
    flags.DEFINE_bool("allow_dirty", False, "setup: run the commit even though the checkout has uncommitted changes")
    flags.DEFINE_integer("worker", 0, "ssh: the worker", lower_bound=0)
    flags.DEFINE_float("wait_minutes", 60.0, "create: the longest wait for READY / ACTIVE", lower_bound=0)
    flags.DEFINE_float("poll_s", 15.0, "create: seconds between two looks at the slice", lower_bound=0)


def _xpk_flags() -> None:
    flags.DEFINE_string("cluster", None, "xpk: the GKE cluster")
    flags.DEFINE_string("docker_image", None, "xpk: an image with pivot_jax[tpu] installed, starting in its checkout")
    flags.DEFINE_integer("num_slices", 1, "xpk: slices (multislice when more than 1)", lower_bound=1)
    flags.DEFINE_string("priority", "", "xpk: very-low, low, medium, high or very-high (default xpk's)")
    flags.DEFINE_bool("run", False, "xpk: run the command instead of printing it")
    flags.DEFINE_string("sweep", None, "xpk: a sweep file, configs/sweeps/FILE.py[:ARGS], to run --point of")
    flags.DEFINE_string("workdir", None, "xpk: the sweep's directory (gs://...)")
    flags.DEFINE_string("point", None, "xpk: the sweep point to run")


def _slurm_flags() -> None:
    flags.DEFINE_string("partition", None, "slurm: the partition (default: the cluster's)")
    flags.DEFINE_integer("nodes", 1, "slurm: nodes, one process each", lower_bound=1)
    flags.DEFINE_integer("gpus_per_node", 0, "slurm: GPUs per node", lower_bound=0)
    flags.DEFINE_integer("cpus_per_task", None, "slurm: CPUs of each node's process", lower_bound=1)
    flags.DEFINE_float("mem_gb", None, "slurm: memory per node in GB", lower_bound=0)
    flags.DEFINE_integer("time_min", 60, "slurm: the time limit in minutes", lower_bound=1)
    flags.DEFINE_string("account", None, "slurm: the account charged")
    flags.DEFINE_string("qos", None, "slurm: the quality of service")
    flags.DEFINE_string("constraint", None, "slurm: node features, e.g. a100")
    flags.DEFINE_string("job_name", None, "slurm: the job's name (default pivot_jax)")
    flags.DEFINE_multi_string("sbatch", [], "slurm: any other sbatch option, KEY=VALUE or KEY (repeatable), e.g. "
                              "exclusive, mail-type=END")
    flags.DEFINE_string("folder", os.path.join("runs", "slurm"), "slurm: submitit's folder (job files and logs), "
                        "on a filesystem every node shares")


def _define_flags() -> None:
    for define in (_common_flags, _tpu_flags, _xpk_flags, _slurm_flags):
        define()


def _logdir(f: Any, name: str) -> Path:
    return Path(f.logdir or os.path.join("runs", "launch", name))


def _tpu(f: Any, action: str, *command: str) -> None:
    if action not in TPU_ACTIONS:
        raise app.UsageError(f"tpu {action!r}: the action is one of {', '.join(TPU_ACTIONS)}")
    if command and action != "run":
        raise app.UsageError(f"tpu {action} takes no command after `--` (only run does): {' '.join(command)}")
    if action in ("create", "setup", "run") and not f.accelerator:
        raise app.UsageError(f"tpu {action} needs --accelerator, e.g. v5p-8")
    spec = Slice(f.name, f.zone, tpu_type(f.accelerator) if f.accelerator else None, f.project, f.runtime_version,
                 Capacity.from_flags(f.spot, f.queued, f.reserved, f.best_effort))
    launcher = TpuLauncher(spec, Runner(f.dry_run), wait_s=f.wait_minutes * 60, poll_s=f.poll_s)
    logdir = _logdir(f, f.name)
    checkout = f.source_dir or default_checkout()
    if action == "create":
        launcher.create()
    elif action == "setup":
        launcher.setup(source_of(checkout, f.repo, f.allow_dirty), logdir)
    elif action == "run":
        source = source_of(checkout, f.repo, f.allow_dirty) if f.retries else None
        launcher.run(remote_argv(command, checkout), logdir, f.env_from_local, f.retries, source)
    elif action == "delete":
        launcher.delete()
    elif action == "status":
        line = launcher.status()
        if not f.dry_run:  # a dry run knows no state
            print(line)
    elif action == "ssh":
        raise SystemExit(launcher.ssh(f.worker))


def _xpk(f: Any, *command: str) -> None:
    name, argv = f.name, list(command)
    if f.sweep:
        if command:
            raise app.UsageError("xpk: give a command after `--` or --sweep/--point, not both")
        name, argv = _sweep_point(f)
    if not name:
        raise app.UsageError("xpk needs --name (or --sweep with --point, which names the workload)")
    workload = Workload(name, f.cluster or "", f.accelerator or "", f.docker_image or "", f.num_slices, f.project,
                        f.zone or "", f.priority, f.retries)
    env_file = ""
    if f.env_from_local:
        missing = [n for n in f.env_from_local if n not in os.environ]
        if missing:
            raise ConfigError(f"--env_from_local {', '.join(missing)}: not set in this environment")
        # Names only: xpk reads each value from its own environment, so no value is written anywhere here.
        env_file = os.fspath(_logdir(f, name) / "xpk.env")
        if not f.dry_run:
            Path(env_file).parent.mkdir(parents=True, exist_ok=True)
            Path(env_file).write_text("".join(f"{n}\n" for n in f.env_from_local), encoding="utf-8")
    argv = workload_create(workload, remote_argv(argv, default_checkout()), env_file)
    runner = Runner(dry_run=f.dry_run or not f.run)
    runner.run(argv)
    if runner.dry_run:
        return
    print(f"workload {name} created; delete it with: {' '.join(delete_command(workload))}")


def _sweep_point(f: Any) -> tuple[str, list[str]]:
    if not f.workdir or not f.point:
        raise app.UsageError("xpk --sweep needs --workdir (gs://...) and --point")
    if not is_url(f.workdir):
        raise ConfigError(f"--workdir {f.workdir}: an xpk point's directory must be on GCS (gs://...), where the "
                          "pods write it and the sweep reads it")
    sweep = load_sweep(f.sweep)
    points = {p.name: p for p in sweep.points}
    if f.point not in points:
        raise ConfigError(f"--point {f.point!r}: not a point of {f.sweep} ({', '.join(list(points)[:5])}, ...)")
    point = points[f.point]
    return f.name or workload_name(point.name), train_command(sweep, point, point_workdir(as_path(f.workdir), point))


def _slurm(f: Any, *command: str) -> None:
    if not command:
        raise app.UsageError("slurm needs the command to run after `--`, e.g. -- python -m pivot_jax.train ...")
    extra: dict[str, Any] = {}
    for item in f.sbatch:
        key, sep, value = item.partition("=")
        if not key.strip():
            raise app.UsageError(f"--sbatch {item!r}: expected KEY=VALUE or KEY")
        extra[key.strip().lstrip("-")] = value if sep else True
    options = SlurmOptions(partition=f.partition, nodes=f.nodes, gpus_per_node=f.gpus_per_node,
                           cpus_per_task=f.cpus_per_task, mem_gb=f.mem_gb, time_min=f.time_min, account=f.account,
                           qos=f.qos, constraint=f.constraint, job_name=f.job_name, extra=extra)
    if f.dry_run:
        print(sbatch_script(list(command), options, f.folder), end="")
        return
    job = submit_training(list(command), options, f.folder)
    print(f"submitted SLURM job {job}; output: {log_path(f.folder, job)} (node 0); "
          f"cancel with a save: scancel --signal=TERM {job}")


COMMAND = Command("pivot_jax.launch", __doc__, _define_flags, [
    Subcommand("tpu", _tpu, "create / setup / run / delete / status / ssh a Cloud TPU slice",
               required=("name", "zone")),
    Subcommand("xpk", _xpk, "print (--run: run) the xpk workload create of a command or a sweep point",
               required=("cluster", "accelerator", "docker_image")),
    Subcommand("slurm", _slurm, "submit a training command to SLURM through submitit (--dry_run: its sbatch file)"),
])
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.cli()
