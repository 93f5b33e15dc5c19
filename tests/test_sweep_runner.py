"""Running sweeps: real trainer processes on the local backend (finished points skipped, a failing point
isolated and named, results collected), and the executor protocol's preempted and reattached jobs."""

import json
import os

import pytest
from tiny_sweep import write_tiny_sweep

from pivot_jax.launch.job import JobState
from pivot_jax.launch.local import LocalExecutor
from pivot_jax.paths import as_path
from pivot_jax.run_status import write_status
from pivot_jax.sweep.__main__ import main as sweep_main
from pivot_jax.sweep.collect import collect
from pivot_jax.sweep.runner import point_workdir, progress_table, run_sweep
from pivot_jax.sweep.spec import load_sweep
from pivot_jax.sweep.state import SweepState

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def test_local_sweep_runs_skips_finished_points_and_isolates_failures(tmp_path):
    # lr -1: the trainer refuses it
    sweep = load_sweep(write_tiny_sweep(tmp_path, '[("seed", [0, 1]), ("optimizer.lr", [0.01, -1.0])]'))
    directory = tmp_path / "sweep"
    summary = run_sweep(sweep, directory, LocalExecutor(2), poll_s=0.2)
    assert sorted(summary.done) == ["tiny-seed0-lr0.01", "tiny-seed1-lr0.01"]
    assert sorted(summary.failed) == ["tiny-seed0-lr-1.0", "tiny-seed1-lr-1.0"]
    failed_log = summary.failed["tiny-seed0-lr-1.0"]
    assert "optimizer.lr=-1.0" in open(failed_log).read()  # the trainer's own one-line error, in the point's log
    state = json.loads((directory / "sweep.json").read_text())["points"]
    assert state["tiny-seed0-lr0.01"]["status"] == "done" and state["tiny-seed0-lr-1.0"]["status"] == "failed"
    assert state["tiny-seed0-lr0.01"]["wall_s"] > 0

    csv_path, jsonl_path, rows = collect(sweep, directory)
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "point,language,amount,seed,optimizer.lr,metric,value,samples,steps,tokens,flops,wall_s"
    records = [json.loads(line) for line in jsonl_path.read_text().splitlines()]
    assert rows == 2 and {r["point"] for r in records} == {"tiny-seed0-lr0.01", "tiny-seed1-lr0.01"}
    assert all(r["metric"] == "eval_loss" and r["steps"] == 3 and r["tokens"] == 3 * 8 * 32 and r["flops"] > 0
               for r in records)
    assert records[0]["seed"] == 0 and records[0]["language"] == "" and records[0]["samples"] == 8

    again = run_sweep(sweep, directory, LocalExecutor(2), poll_s=0.2)  # the same command again
    assert sorted(again.skipped) == ["tiny-seed0-lr0.01", "tiny-seed1-lr0.01"] and not again.done
    assert sorted(again.failed) == ["tiny-seed0-lr-1.0", "tiny-seed1-lr-1.0"]  # retried, failing again
    assert json.loads((directory / "sweep.json").read_text())["points"]["tiny-seed0-lr-1.0"]["attempts"] == 2


class ScriptedExecutor:
    """Jobs that end as scripted, leaving the status.json a trainer would (no process is started)."""

    name, slots = "scripted", 1

    def __init__(self, outcomes, running=()):
        self.outcomes = {name: list(codes) for name, codes in outcomes.items()}  # exit codes, attempt by attempt
        self.running = set(running)  # jobs of an earlier sweep command, running until polled once
        self.submitted = []

    def submit(self, name, command, log, env):
        workdir = as_path(command[command.index("--workdir") + 1])
        code = self.outcomes[name].pop(0)
        workdir.mkdir(parents=True, exist_ok=True)
        write_status(workdir, {0: "finished", 75: "preempted"}.get(code, "failed"), 1)
        self.submitted.append(name)
        return f"{name}#{len(self.submitted)}:{code}"

    def poll(self, job):
        if job in self.running:
            self.running.discard(job)
            return JobState(True)
        return JobState(False, int(job.rpartition(":")[2]) if "#" in job else None)

    def cancel(self, job):
        pass


def test_preempted_points_are_resubmitted_and_running_ones_reattached(tmp_path):
    sweep = load_sweep(write_tiny_sweep(tmp_path, '[("seed", [0, 1, 2])]'))
    directory = as_path(tmp_path / "sweep")
    directory.mkdir()
    state = SweepState(directory / "sweep.json", sweep.source, {})
    record = state.point("tiny-seed2")  # an earlier sweep command started it; it is still at work
    record.status, record.job, record.attempts = "running", "old-job", 1
    state.save()
    point_workdir(directory, sweep.points[2]).mkdir(parents=True)
    write_status(point_workdir(directory, sweep.points[2]), "finished", 3)  # what it leaves when it ends
    (point_workdir(directory, sweep.points[2]) / "status.json").rename(directory / "later.json")

    executor = ScriptedExecutor({"tiny-seed0": [75, 0], "tiny-seed1": [0]}, running={"old-job"})
    original_poll = executor.poll

    def poll(job):  # the reattached job ends: its status.json appears
        result = original_poll(job)
        if job == "old-job" and not result.running:
            (directory / "later.json").rename(point_workdir(directory, sweep.points[2]) / "status.json")
        return result

    executor.poll = poll
    summary = run_sweep(sweep, directory, executor, poll_s=0)
    assert executor.submitted == ["tiny-seed0", "tiny-seed0", "tiny-seed1"]  # preempted: submitted again first
    assert sorted(summary.done) == ["tiny-seed0", "tiny-seed1", "tiny-seed2"] and not summary.failed
    points = json.loads((directory / "sweep.json").read_text())["points"]
    assert points["tiny-seed0"]["attempts"] == 2 and points["tiny-seed2"]["attempts"] == 1  # never restarted
    table = progress_table(directory, sweep.points, SweepState.load(directory, sweep.source), 1)
    assert table.splitlines()[-1] == "3 done"


def test_a_killed_sweep_command_reattaches_to_its_running_point(tmp_path):
    """The sweep command dies (SIGKILL) while a point trains; the same command again finds the point's process
    still at work, waits for it instead of starting it again, and records it done."""
    import signal
    import subprocess
    import sys
    import time

    slow = write_tiny_sweep(tmp_path, '[("seed", [0])]', steps=400)
    directory = tmp_path / "sweep"
    command = [sys.executable, "-m", "pivot_jax.sweep", "--config", slow, "--workdir",
               str(directory)]
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = directory / "points" / "tiny-seed0" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3) and time.time() < deadline:
        time.sleep(0.5)  # the point is training
    first.send_signal(signal.SIGKILL)
    first.wait()
    job = json.loads((directory / "sweep.json").read_text())["points"]["tiny-seed0"]["job"]
    assert os.path.exists(f"/proc/{job.split(':')[0]}")  # the point outlived its sweep command

    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "still running" in again.stderr and "reattached" in again.stderr
    record = json.loads((directory / "sweep.json").read_text())["points"]["tiny-seed0"]
    assert record["status"] == "done" and record["attempts"] == 1 and record["job"] == job


def test_an_allocation_check_trains_both_splits_and_compares_with_the_prediction(tmp_path, capfd):
    """The loop closed for real: `--check_allocation` trains MuIT on the allocated and the uniform amounts (the
    quickstart sweep's model, a few steps), scores each language, collects, and `scaling check` compares."""
    allocation = tmp_path / "allocation.json"
    allocation.write_text(json.dumps({
        "budget": 60, "metric": "chrf++", "amounts": {"es": 45, "zh": 15}, "uniform_amounts": {"es": 30, "zh": 30},
        "predicted": {"es": 5.0, "zh": 2.0}, "uniform_predicted": {"es": 4.0, "zh": 2.5}, "gain": 0.5,
        "gain_ci": [0.1, 0.9], "weights": {"es": 1.0, "zh": 1.0}, "higher_is_better": True}))
    directory = tmp_path / "check"
    sweep_main(["--config", f"{REPO}/configs/sweeps/quickstart.py:langs=es+zh,epochs=1", "--workdir", str(directory),
                "--check_allocation", str(allocation), "--parallel", "2"])
    out = capfd.readouterr().out
    assert "0 finished before, 2 finished now, 0 failed" in out
    rows = [json.loads(line) for line in (directory / "results.jsonl").read_text().splitlines()]
    chrf = {(r["split"], r["language"]): r["amount"] for r in rows if r["metric"] == "chrf++"}
    assert chrf == {("allocated", "es"): 45, ("allocated", "zh"): 15, ("uniform", "es"): 30, ("uniform", "zh"): 30}
    loss = [r for r in rows if r["metric"] == "eval_loss"]
    assert len(loss) == 2 and all(r["language"] == "" and r["value"] > 0 for r in loss)
    record = json.loads((directory / "check" / "check.json").read_text())
    measured = record["splits"]["allocated"]["measured"]
    assert set(measured) == {"es", "zh"} and record["predicted_gain"] == 0.5
    assert record["measured_gain"] == pytest.approx(
        sum(measured.values()) - sum(record["splits"]["uniform"]["measured"].values()))
    assert "gain of the allocation over the uniform split: predicted +0.5 [0.1, 0.9], measured" in out
    assert json.loads((directory / "sweep.json").read_text())["allocation"] == str(allocation)
