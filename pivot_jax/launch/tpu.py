"""Cloud TPU slices end to end: create one and wait for it, set the project up at the local commit on every
worker, run a command on all workers (each worker's output in its own log, fail fast), recreate and rerun after
a preemption, delete, status, ssh. Every cloud command goes through a `Runner`, so `--dry_run` prints them all.

    tpu = TpuLauncher(Slice("run1", "us-east5-a", tpu_type("v5p-64")), Runner())
    tpu.create()
    tpu.setup(source_of("."), Path("runs/launch/run1"))
    tpu.run(["python", "-m", "pivot_jax.train", ...], Path("runs/launch/run1"), secrets=["HF_TOKEN"], retries=3)

Secrets (`secrets=` names of local environment variables) never enter an argument list, a log or a printed
command: their values go into a mode-600 temporary file, copied with `gcloud ... scp` to each worker, where the
run sources it (`set -a; . FILE; set +a`) and deletes it before starting the command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets as token
import shlex
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pivot_jax.errors import ConfigError
from pivot_jax.launch import remote
from pivot_jax.launch.gcloud import (
    NODE_GONE,
    NOT_FOUND,
    QUEUED_GONE,
    LaunchError,
    Runner,
    Slice,
    create_command,
    delete_command,
    describe_command,
    scp_command,
    ssh_command,
    state,
)
from pivot_jax.launch.workers import WorkersResult, run_workers
from pivot_jax.preemption import PREEMPTED_EXIT_CODE

log = logging.getLogger("pivot_jax.launch")

READY = {False: "READY", True: "ACTIVE"}  # a node's ready state, a queued resource's


@dataclasses.dataclass(frozen=True)
class Source:
    """What the workers install: `repo` (a URL they can clone) at `commit`."""

    repo: str
    commit: str


def default_checkout() -> str:
    """The repository this pivot_jax is imported from (an editable install's checkout)."""
    return str(Path(__file__).resolve().parents[2])


def _git(checkout: str, *args: str) -> str:
    done = subprocess.run(["git", "-C", checkout, *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise ConfigError(f"--source_dir {checkout}: `git {' '.join(args)}` failed: {done.stderr.strip()[-200:]}")
    return done.stdout.rstrip()  # keep the first line's indent: `git status --porcelain` columns


def source_of(checkout: str, repo: str = "", allow_dirty: bool = False) -> Source:
    """The local checkout's commit (HEAD) and the URL to clone (`repo`, or its `origin` remote).

    Uncommitted changes to tracked files are refused: the workers get the commit, not the working tree, and a run
    that silently differs from the code on screen is worse than no run. `allow_dirty` turns that into a warning."""
    commit = _git(checkout, "rev-parse", "HEAD")
    changed = _git(checkout, "status", "--porcelain", "--untracked-files=no")
    if changed:
        files = ", ".join(line[3:] for line in changed.splitlines()[:5])
        if not allow_dirty:
            raise ConfigError(f"--source_dir {checkout} has uncommitted changes ({files}); the workers would get "
                              f"commit {commit[:12]} without them",
                              hint="commit (and push) them, or pass --allow_dirty to run the commit as it is")
        log.warning("uncommitted changes (%s) stay here: the workers get commit %s", files, commit[:12])
    if not repo:
        done = subprocess.run(["git", "-C", checkout, "remote", "get-url", "origin"], capture_output=True, text=True,
                              check=False)
        repo = done.stdout.strip()
        if done.returncode or not repo:
            raise ConfigError(f"--repo: {checkout} has no `origin` remote; give the URL the workers clone")
    if not _git(checkout, "branch", "-r", "--contains", commit):
        log.warning("commit %s is on no remote-tracking branch: push it, or the workers cannot fetch it", commit[:12])
    return Source(repo, commit)


@dataclasses.dataclass(frozen=True)
class Staged:
    local: str  # the mode-600 file here
    remote: str  # its name in each worker's home directory


@contextlib.contextmanager
def staged_secrets(names: Sequence[str], dry_run: bool = False) -> Iterator[Staged | None]:
    """The values of the environment variables `names` in a mode-600 temporary file (removed on exit); None when
    there are none. Dry: the names are checked, no file is written."""
    missing = [name for name in names if name not in os.environ]
    if missing:
        raise ConfigError(f"--env_from_local {', '.join(missing)}: not set in this environment")
    if not names:
        yield None
        return
    remote_name = f".pivot_jax_env-{token.token_hex(6)}"
    if dry_run:
        yield Staged("/tmp/pivot_jax_env-XXXXXX", remote_name)
        return
    fd, path = tempfile.mkstemp(prefix="pivot_jax_env-")  # mode 600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(f"{name}={shlex.quote(os.environ[name])}\n" for name in names)
        yield Staged(path, remote_name)
    finally:
        os.unlink(path)


class TpuLauncher:
    """One slice: its lifecycle and the commands run on its workers. `wait_s` bounds the wait for READY/ACTIVE,
    checked every `poll_s`."""

    def __init__(self, spec: Slice, runner: Runner, wait_s: float = 3600.0, poll_s: float = 15.0):
        self.spec, self.runner, self.wait_s, self.poll_s = spec, runner, wait_s, poll_s
        self.queued = spec.capacity.queued

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def condition(self) -> tuple[str, bool]:
        """(the state, as shown to the user; gone: it will not come back by itself, so delete and recreate).
        A queued resource that is ACTIVE is gone when its node was preempted."""
        current = state(self.runner, self.spec)
        if not self.queued:
            return current, current in NODE_GONE
        if current == "ACTIVE" and not self.runner.dry_run:
            node = state(self.runner, self.spec, queued=False)
            if node in NODE_GONE:
                return f"ACTIVE, node {node}", True
        return current, current in QUEUED_GONE

    def create(self) -> None:
        """Create the slice, unless it is ready (reused) or on its way (waited for); one that is gone (preempted,
        failed, suspended) is deleted first. Then wait until it is ready."""
        s = self.spec
        current, gone = self.condition()
        if current == READY[self.queued]:
            log.info("%s is %s already: reusing it", s.name, current)
            return
        if gone and current != NOT_FOUND:
            log.warning("%s is %s: deleting it and creating it again", s.name, current)
            self.runner.run(delete_command(s))
        if gone:
            log.info("creating %s: %s, %s (%d host%s), %s", s.name, s.tpu.name, s.capacity.describe(),
                     s.tpu.hosts, "s" if s.tpu.hosts > 1 else "", s.version)
            self.runner.run(create_command(s))
        else:
            log.info("%s is %s: waiting for it", s.name, current)
        self.wait()

    def wait(self) -> None:
        """Poll until the slice is ready, logging each change and a line a minute; a failure or the `wait_s`
        timeout is a LaunchError naming the last state."""
        s, ready = self.spec, READY[self.queued]
        if self.runner.dry_run:
            self.runner.show(describe_command(s), f"repeated every {self.poll_s:g}s until {ready}, at most "
                                                  f"{self.wait_s / 60:g} min")
            return
        start = time.monotonic()
        last, last_line = "", start
        while True:
            current, gone = self.condition()
            waited = time.monotonic() - start
            if current == ready:
                log.info("%s is %s after %s", s.name, ready, _duration(waited))
                return
            if gone and current != NOT_FOUND:  # NOT_FOUND: a queued resource may take a moment to appear
                raise LaunchError(f"{s.name} became {current} while waiting for {ready}",
                                  hint="try another zone or capacity tier, or create it again")
            if current != last or time.monotonic() - last_line >= 60:
                log.info("%s: %s (waited %s of %s)", s.name, current, _duration(waited), _duration(self.wait_s))
                last, last_line = current, time.monotonic()
            if waited >= self.wait_s:
                raise LaunchError(f"{s.name} is not {ready} after {_duration(waited)} (last state {current}); it is "
                                  "left as it is", hint="wait longer with --wait_minutes, or delete it")
            time.sleep(self.poll_s)

    def delete(self) -> None:
        """Delete the node, or the queued resource and its node; nothing to delete is not an error."""
        if not self.runner.dry_run and state(self.runner, self.spec) == NOT_FOUND:
            log.info("%s: not found, nothing to delete", self.spec.name)
            return
        self.runner.run(delete_command(self.spec))
        log.info("%s deleted", self.spec.name)

    def status(self) -> str:
        """One line: the node's state and, for a queued resource, its state too."""
        s = self.spec
        node = state(self.runner, s, queued=False)
        line = f"{s.name} ({s.zone}): node {node}"
        if self.queued:
            line += f", queued resource {state(self.runner, s, queued=True)}"
        return line

    def ssh(self, worker: int) -> int:
        """An interactive shell on `worker`; returns ssh's exit status."""
        return self.runner.run(ssh_command(self.spec, worker), check=False, interactive=True).returncode

    # --- on the workers ----------------------------------------------------------------------------------------

    def _on_workers(self, script: str, logdir: Path, label: str, header: str = "",
                    stop: bool = False) -> WorkersResult | None:
        commands = [ssh_command(self.spec, i, script) for i in range(self.spec.tpu.hosts)]
        if self.runner.dry_run:
            for i, argv in enumerate(commands):
                self.runner.show(argv, f"{label} {i}, output to {logdir / f'{label}-{i}.log'}")
            return None
        return run_workers(commands, logdir, label, stop=self.stop if stop else None, header=header)

    def setup(self, source: Source, logdir: Path) -> None:
        """The project at `source` on every worker (clone or fetch, checkout, install): see remote.setup_script."""
        log.info("setting up %s on %d worker(s) at %s from %s", self.spec.name, self.spec.tpu.hosts,
                 source.commit[:12], source.repo)
        result = self._on_workers(remote.setup_script(source.repo, source.commit), logdir, "setup",
                                  header=f"setup at {source.commit} {time.ctime()}")
        if result is not None and not result.ok:
            raise LaunchError(f"setup failed on worker {result.failed} (exit status {result.codes[result.failed]}); "
                              f"its log: {result.logs[result.failed]}")

    def stop(self, job: str = "run", signal: str = "KILL") -> None:
        """Stop the run `job` on every worker (remote.stop_script); best effort."""
        script = remote.stop_script(self.spec.tpu, job, signal)
        self.runner.run(ssh_command(self.spec, "all", script), check=False)

    def run(self, argv: Sequence[str], logdir: Path, secrets: Sequence[str] = (), retries: int = 0,
            source: Source | None = None, env: Mapping[str, str] | None = None) -> None:
        """`argv` on every worker at once, after freeing their TPUs; output in LOGDIR/worker-i.log, worker 0's
        also here. A failure stops the other workers. Then, up to `retries` times: a slice found preempted or
        gone is recreated and set up again (at `source`), and the command rerun (it resumes from its checkpoint);
        a trainer that exited preempted (75) on a slice still READY is just rerun."""
        if not argv:
            raise ConfigError("no command to run: give it after `--`, e.g. -- python -m pivot_jax.train ...")
        for attempt in range(1, retries + 2):
            result = self._run_once(argv, logdir, secrets, env, f"attempt {attempt} {time.ctime()}")
            if result is None or result.ok:
                if result is not None:
                    log.info("%s: the command finished on all %d worker(s)", self.spec.name, len(result.codes))
                return
            code = result.codes[result.failed]
            failure = f"worker {result.failed} failed (exit status {code}); its log: {result.logs[result.failed]}"
            if attempt > retries:
                raise LaunchError(failure + (f" (after {retries} retries)" if retries else ""))
            current, gone = self.condition()
            if gone:
                log.warning("%s; %s is %s: recreating it (retry %d of %d)", failure, self.spec.name, current,
                            attempt, retries)
                if source is None:
                    raise LaunchError(f"{failure}; {self.spec.name} is {current} and there is no source to set up "
                                      "a new slice with")
                self.create()
                self.setup(source, logdir)
            elif code == PREEMPTED_EXIT_CODE:
                log.warning("%s: the trainer was preempted and %s is %s: running it again (retry %d of %d)", failure,
                            self.spec.name, current, attempt, retries)
            else:
                raise LaunchError(f"{failure}; {self.spec.name} is {current}, so this is not a preemption: "
                                  "not retried")

    def _run_once(self, argv: Sequence[str], logdir: Path, secrets: Sequence[str], env: Mapping[str, str] | None,
                  header: str) -> WorkersResult | None:
        with staged_secrets(secrets, self.runner.dry_run) as staged:
            if staged is not None:
                self.runner.run(scp_command(self.spec, staged.local, staged.remote),
                                note=f"a mode-600 file of {', '.join(secrets)}; values not shown")
            script = remote.run_script(argv, self.spec.tpu, "run", staged.remote if staged else None, env)
            return self._on_workers(script, logdir, "worker", header=header, stop=True)

    # --- detached runs (the sweep backend) ---------------------------------------------------------------------

    def start(self, argv: Sequence[str], job: str, log_path: str, logdir: Path, secrets: Sequence[str] = (),
              env: Mapping[str, str] | None = None) -> None:
        """Start `argv` on every worker in the background as `job` and return; worker 0's output goes to
        `log_path`, worker i's to LOG_PATH.worker-i (see remote.detached_script)."""
        with staged_secrets(secrets, self.runner.dry_run) as staged:
            if staged is not None:
                self.runner.run(scp_command(self.spec, staged.local, staged.remote),
                                note=f"a mode-600 file of {', '.join(secrets)}; values not shown")
            commands = [ssh_command(self.spec, i, remote.detached_script(
                argv, self.spec.tpu, job, log_path if i == 0 else f"{log_path}.worker-{i}",
                staged.remote if staged else None, env)) for i in range(self.spec.tpu.hosts)]
            result = run_workers(commands, logdir, f"start-{job}", show=None)
        if not result.ok:
            raise LaunchError(f"starting {job} on {self.spec.name} failed on worker {result.failed}; its log: "
                              f"{result.logs[result.failed]}")

    def poll(self, job: str) -> list[str] | None:
        """Each worker's answer about `job` ("exit N", "running", "gone"); None when ssh failed."""
        done = self.runner.run(ssh_command(self.spec, "all", remote.poll_script(job)),
                               capture=True, check=False)
        return None if done.returncode else remote.parse_poll(done.stdout)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
