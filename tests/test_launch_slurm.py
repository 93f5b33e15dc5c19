"""SLURM through submitit, on a real single-node cluster (launch/local_slurm.sh, started here when it is not up):
a training job, a two-point sweep as one job array, the --dry_run sbatch file of a 2-node GPU job, and a running
job polled by a new executor (a restarted sweep reattaching), then cancelled: SIGTERM, the trainer saves and
exits 75 (preempted)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from etils import epath
from tiny_sweep import write_tiny_sweep

from pivot_jax.checkpoint import saved_steps
from pivot_jax.errors import ConfigError
from pivot_jax.launch.__main__ import main as launch_main
from pivot_jax.launch.backends import make_executor
from pivot_jax.launch.slurm import SlurmOptions, job_state, log_path, sbatch_script, submit_training
from pivot_jax.preemption import PREEMPTED_EXIT_CODE
from pivot_jax.run_status import read_status

REPO = Path(__file__).resolve().parents[1]
TINY = ("--config.train.steps=3", "--config.train.global_batch_size=8", "--config.train.seq_len=32",
        "--config.eval.steps=1", "--config.checkpoint.async_save=False")


def _train(workdir, *flags):
    return [sys.executable, "-m", "pivot_jax.train", "--config", str(REPO / "configs" / "tiny.py"), "--workdir",
            str(workdir), *flags]


def _slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, check=False).stdout
    nodes = subprocess.run(["sinfo", "--noheader", "--format", "%T"], capture_output=True, text=True, check=False)
    return "is UP" in ping and any(s in nodes.stdout for s in ("idle", "mixed", "allocated"))


@pytest.fixture(scope="session")
def slurm():
    """A running single-node SLURM: this machine's, or started by launch/local_slurm.sh (root: apt, daemons)."""
    if _slurm_up():
        return
    if os.geteuid() != 0:
        pytest.skip("no SLURM running, and starting one needs root: sudo bash launch/local_slurm.sh start")
    start = subprocess.run(["bash", str(REPO / "launch" / "local_slurm.sh"), "start"], capture_output=True,
                           text=True, timeout=900, check=False)
    if start.returncode:
        pytest.skip(f"launch/local_slurm.sh start failed (no SLURM for these tests):\n{start.stderr[-2000:]}")


def _wait(job, timeout=240):
    deadline = time.time() + timeout
    while (state := job_state(job)).running:
        assert time.time() < deadline, f"SLURM job {job} still running after {timeout} s"
        time.sleep(0.5)
    return state


def test_dry_run_sbatch_file_of_a_two_node_gpu_job(tmp_path):
    options = SlurmOptions(partition="gpu", nodes=2, gpus_per_node=8, cpus_per_task=16, mem_gb=200, time_min=90,
                           account="lm", extra={"exclusive": True})
    text = sbatch_script(_train("runs/big"), options, tmp_path / "slurm")
    lines = text.splitlines()
    for directive in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=8", "--partition=gpu", "--time=90",
                      "--cpus-per-task=16", "--mem=200G", "--account=lm", "--exclusive", "--signal=USR2@90",
                      f"--output={tmp_path}/slurm/%j_0_log.out"):
        assert f"#SBATCH {directive}" in lines, (directive, text)
    assert lines[0] == "#!/bin/bash" and lines[-1].startswith("srun --unbuffered")
    assert "pivot_jax.train --config" in text and " -m submitit.core._submit " in lines[-1]
    assert not (tmp_path / "slurm").exists()  # nothing written, nothing submitted

    with pytest.raises(ConfigError, match="nodes must be at least 1"):
        SlurmOptions(nodes=0)
    with pytest.raises(ConfigError, match="unknown --backend_option.*gpus"):
        make_executor("slurm", 1, {"gpus": "8"})
    with pytest.raises(ConfigError, match=r"mem_gb='lots': expected float"):
        make_executor("slurm", 1, {"mem_gb": "lots"})


def test_the_launch_command_prints_the_sbatch_file_it_would_submit(tmp_path, capsys):
    folder = tmp_path / "slurm"
    launch_main(["slurm", "--partition", "gpu", "--nodes", "2", "--gpus_per_node", "8", "--time_min", "90",
                 "--sbatch", "exclusive", "--sbatch", "mail-type=END", "--folder", str(folder), "--dry_run", "--",
                 *_train("runs/big")])
    printed = capsys.readouterr().out
    options = SlurmOptions(partition="gpu", nodes=2, gpus_per_node=8, time_min=90,
                           extra={"exclusive": True, "mail-type": "END"})
    assert printed == sbatch_script(_train("runs/big"), options, folder) and not folder.exists()
    with pytest.raises(SystemExit):
        launch_main(["slurm", "--dry_run"])
    assert "slurm needs the command to run after `--`" in capsys.readouterr().err


def test_training_job_finishes_with_its_checkpoint(slurm, tmp_path, capsys):
    command = _train(tmp_path / "run", *TINY)
    options = SlurmOptions(time_min=10, job_name="tiny")
    launch_main(["slurm", "--time_min", "10", "--job_name", "tiny", "--folder", str(tmp_path / "slurm"), "--",
                 *command])  # the user's command line
    printed = capsys.readouterr().out
    assert printed.startswith("submitted SLURM job ") and str(tmp_path / "slurm") in printed
    job = printed.split()[3].rstrip(";")
    assert _wait(job).returncode == 0
    assert read_status(tmp_path / "run")["state"] == "finished" and saved_steps(tmp_path / "run") == [3]
    assert "step 3/3" in log_path(tmp_path / "slurm", job).read_text()  # the trainer's output, live in the job log
    submitted = (tmp_path / "slurm" / f"{job}_submission.sh").read_text()
    assert submitted == sbatch_script(command, options, tmp_path / "slurm")  # --dry_run shows what is submitted

    with pytest.raises(ConfigError, match="sbatch refused the job: .*invalid partition"):
        submit_training(command, SlurmOptions(partition="no-such-partition"), tmp_path / "slurm")


def test_sweep_on_slurm_runs_its_points_as_one_job_array(slurm, tmp_path):
    sweep_file = write_tiny_sweep(tmp_path)
    directory = tmp_path / "sweep"
    run = subprocess.run([sys.executable, "-m", "pivot_jax.sweep", "--config", sweep_file,
                          "--workdir", str(directory), "--backend", "slurm", "--parallel", "2",
                          "--backend_option", "time_min=10"], cwd=REPO, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "0 finished before, 2 finished now, 0 failed" in run.stdout
    points = json.loads((directory / "sweep.json").read_text())["points"]
    jobs = [points[name]["job"] for name in ("tiny-seed0", "tiny-seed1")]
    array = jobs[0].split("_")[0]
    assert jobs == [f"{array}_0", f"{array}_1"] and all(p["backend"] == "slurm" for p in points.values())
    log = (directory / "points" / "tiny-seed1" / "train.log").read_text()
    assert log.startswith("[pivot_jax] ") and f"SLURM job {array}_1 submitted" in log and "step 3/3" in log
    assert (directory / "slurm" / f"{array}_1_0_log.out").exists()  # submitit's own log of the array task
    rows = (directory / "results.csv").read_text().splitlines()
    assert {row.split(",")[0] for row in rows[1:]} == {"tiny-seed0", "tiny-seed1"}


def test_a_new_executor_reattaches_to_a_running_job_and_cancel_preempts_it(slurm, tmp_path):
    first = make_executor("slurm", 1, {"time_min": "10", "folder": str(tmp_path / "slurm")})
    workdir = tmp_path / "run"
    command = _train(workdir, "--config.train.steps=100000", "--config.train.log_every_steps=1",
                     "--config.checkpoint.every_steps=0", "--config.eval.every_steps=0")
    job = first.submit("long", command, epath.Path(workdir / "train.log"), dict(os.environ))
    deadline = time.time() + 240
    metrics = workdir / "metrics.jsonl"
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        assert time.time() < deadline and job_state(job).running, (workdir / "train.log").read_text()
        time.sleep(0.5)

    again = make_executor("slurm", 1, {})  # what a restarted sweep command builds: it knows only the job id
    assert again.poll(job).running
    again.cancel(job)
    assert _wait(job, timeout=120).returncode == PREEMPTED_EXIT_CODE
    status = read_status(workdir)
    assert status["state"] == "preempted" and status["signal"] == "SIGTERM"
    assert saved_steps(workdir) == [status["step"]]


def test_two_processes_of_a_slurm_step_train_as_one_run(slurm, tmp_path):
    """What each node of a multi-node job does, on the one node here: two tasks of one SLURM step, and
    `jax.distributed` set up from SLURM's environment alone (no coordinator flags) trains one run over both."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
    run = subprocess.run(["srun", "--ntasks=2", "--time=5", *_train(tmp_path / "run", *TINY)], env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("mesh {'data': 2,") == 2  # each process sees the two processes' devices
    assert read_status(tmp_path / "run")["state"] == "finished" and saved_steps(tmp_path / "run") == [3]
