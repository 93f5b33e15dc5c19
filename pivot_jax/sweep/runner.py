"""Run a sweep: every point's training command on the executor, finished points skipped, interrupted ones
resumed (the trainer resumes from its checkpoints), preempted ones resubmitted, a failing one recorded without
stopping the others; a live table of the points and the sweep's ETA; each finished point's final evaluation
appended, with its tags, to `SWEEP_DIR/results_index.jsonl`.

    summary = run_sweep(load_sweep("configs/sweeps/quickstart.py"), "runs/sweep", LocalExecutor(2))
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence

from etils import epath

from pivot_jax.jsonl import read_json, read_jsonl
from pivot_jax.launch.job import Executor
from pivot_jax.paths import PathLike, as_path
from pivot_jax.preemption import PREEMPTED_EXIT_CODE
from pivot_jax.results import FILENAME as RESULTS_FILENAME
from pivot_jax.results import append_results, read_results
from pivot_jax.run_status import read_status
from pivot_jax.sweep.spec import Point, Sweep, train_config_of
from pivot_jax.sweep.state import PointState, SweepState

log = logging.getLogger("pivot_jax.sweep")
POINTS_DIR = "points"
LOG_NAME = "train.log"


def point_workdir(directory: epath.Path, point: Point) -> epath.Path:
    return directory / POINTS_DIR / point.name


def train_command(sweep: Sweep, point: Point, workdir: PathLike) -> list[str]:
    """The normal trainer command of `point` (what `--dry_run` prints)."""
    return [sys.executable, "-m", "pivot_jax.train", "--config", train_config_of(sweep, point), "--workdir",
            os.fspath(workdir), *(f"--config.{key}={value}" for key, value in point.overrides.items())]


def point_env(directory: epath.Path) -> dict[str, str]:
    """The points' environment: JAX's persistent compilation cache shared by the sweep (same shapes compile once)."""
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": os.fspath(directory / "jax_cache"),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


@dataclasses.dataclass
class Summary:
    done: list[str]
    failed: dict[str, str]  # point -> its log
    skipped: list[str]  # finished before this command


def run_sweep(sweep: Sweep, directory: PathLike, executor: Executor, only: Callable[[str], bool] = lambda _: True,
              poll_s: float = 1.0, table_every_s: float = 30.0) -> Summary:
    directory = as_path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = SweepState.load(directory, sweep.source, sweep.allocation)
    points = [p for p in sweep.points if only(p.name)]
    env = point_env(directory)
    summary = Summary([], {}, [])
    queue: list[Point] = []
    running: dict[str, Point] = {}
    for point in points:
        record = state.point(point.name)
        if _finished(point_workdir(directory, point)):
            _index(directory, point, record)
            record.status = "done"
            summary.skipped.append(point.name)
        elif record.status == "running" and record.job and executor.poll(record.job).running:
            running[point.name] = point  # started by an earlier sweep command, still at work: reattach
            log.info("%s: still running (job %s), reattached", point.name, record.job)
        else:
            queue.append(point)
    state.save()
    log.info("sweep %s: %d points (%d finished before, %d to run) in %s", sweep.source, len(points),
             len(summary.skipped), len(queue) + len(running), directory)
    last_table = 0.0
    while queue or running:
        ready = queue[:max(0, executor.slots - len(running))]
        if ready:
            del queue[:len(ready)]
            _submit(directory, sweep, ready, state, executor, env)
            running.update((point.name, point) for point in ready)
        changed = False
        for name, point in list(running.items()):
            record = state.point(name)
            job = executor.poll(record.job)
            if job.running:
                continue
            changed = True
            del running[name]
            record.wall_s += time.time() - record.started
            record.returncode = job.returncode
            outcome = _outcome(point_workdir(directory, point), job.returncode)
            if outcome == "done":
                record.status = "done"
                _index(directory, point, record)
                summary.done.append(name)
            elif outcome == "preempted":
                log.warning("%s: preempted; resubmitting (it resumes from its checkpoint)", name)
                queue.insert(0, point)
                record.status = "pending"
            else:
                record.status = "failed"
                summary.failed[name] = record.log
                log.error("%s: failed (%s); see %s", name, outcome, record.log)
            state.save()
        if time.time() - last_table > table_every_s or changed and not (queue or running):
            log.info("\n%s", progress_table(directory, points, state, executor.slots))
            last_table = time.time()
        elif changed:  # the whole table every table_every_s; in between, the count line
            log.info("%s", progress_table(directory, points, state, executor.slots).splitlines()[-1])
        if queue or running:
            time.sleep(poll_s)
    return summary


def _submit(directory: epath.Path, sweep: Sweep, points: list[Point], state: SweepState, executor: Executor,
            env: dict[str, str]) -> None:
    """Start `points`: all at once where the executor takes a batch (SLURM: one job array), else one by one."""
    jobs = [(p.name, train_command(sweep, p, point_workdir(directory, p)), point_workdir(directory, p) / LOG_NAME,
             env) for p in points]
    batch = getattr(executor, "submit_batch", None)
    ids = iter(batch(jobs)) if batch and len(jobs) > 1 else (executor.submit(*job) for job in jobs)
    for (name, _, log_file, _), job in zip(jobs, ids):  # one by one: each recorded as soon as it started
        record = state.point(name)
        record.log, record.job = os.fspath(log_file), job
        record.backend, record.status, record.started = executor.name, "running", time.time()
        record.attempts += 1
        log.info("%s: started (attempt %d, job %s)", name, record.attempts, record.job)
        state.save()  # a sweep command killed from here on still knows the job


def _finished(workdir: epath.Path) -> bool:
    status = read_status(workdir) if workdir.exists() else None
    return bool(status) and status.get("state") == "finished"


def _outcome(workdir: epath.Path, returncode: int | None) -> str:
    """done, preempted, or why it failed: from the exit code when known, else from the trainer's status.json."""
    status = (read_status(workdir) if workdir.exists() else None) or {}
    if returncode == 0 or returncode is None and status.get("state") == "finished":
        return "done"
    if returncode == PREEMPTED_EXIT_CODE or returncode is None and status.get("state") == "preempted":
        return "preempted"
    if status.get("state") == "failed":
        return status.get("error", "failed")
    return f"exit status {returncode}" if returncode is not None else "ended without a status"


def _index(directory: epath.Path, point: Point, record: PointState) -> None:
    """The point's final evaluation records into the sweep's results index, once."""
    if record.indexed:
        return
    results = read_results(point_workdir(directory, point) / RESULTS_FILENAME)
    final = max((r.step for r in results if r.step is not None), default=None)
    append_results(directory / RESULTS_FILENAME, [r for r in results if r.step == final])
    record.indexed = True


def progress_table(directory: epath.Path, points: Sequence[Point], state: SweepState, slots: int) -> str:
    """One line per point (status, step, ETA) and the sweep's ETA."""
    rows, remaining, durations = [], [], []
    for point in points:
        record = state.point(point.name)
        step, total = _progress(point_workdir(directory, point))
        eta = ""
        if record.status == "running":
            elapsed = time.time() - record.started
            left = elapsed / step * (total - step) if step and total else None
            eta = _duration(left) if left is not None else "starting"
            remaining.append(left or 0.0)
        elif record.status == "pending":
            remaining.append(None)
        elif record.status == "done" and record.wall_s:
            durations.append(record.wall_s)
        where = f"step {step}/{total}" if total else ""
        rows.append((point.name, record.status, where, eta, record.log if record.status == "failed" else ""))
    typical = sum(durations) / len(durations) if durations else None
    waiting = sum(1 for r in remaining if r is None)
    started = [r for r in remaining if r is not None]
    whole = None if typical is None and waiting else (max(started, default=0.0) + waiting * (typical or 0) / slots)
    width = max(len(r[0]) for r in rows)
    lines = [f"{'point':<{width}}  {'status':<8} {'progress':<14} {'ETA':<9} log"]
    lines += [f"{n:<{width}}  {s:<8} {w:<14} {e:<9} {lg}".rstrip() for n, s, w, e, lg in rows]
    counts = {s: sum(r[1] == s for r in rows) for s in ("done", "running", "pending", "failed")}
    lines.append(", ".join(f"{v} {k}" for k, v in counts.items() if v) + (
        f"; sweep ETA {_duration(whole)}" if whole is not None and (counts["running"] or counts["pending"]) else ""))
    return "\n".join(lines)


def _progress(workdir: epath.Path) -> tuple[int, int]:
    """(last logged step, train.steps) from the point's metrics.jsonl and config.json; (0, 0) before it starts."""
    config = workdir / "config.json"
    if not config.exists():
        return 0, 0
    total = int(read_json(config).get("train", {}).get("steps", 0))
    rows = read_jsonl(workdir / "metrics.jsonl", torn_tail_ok=True)
    return (rows[-1]["step"] if rows else 0), total


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
