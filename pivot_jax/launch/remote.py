"""What runs on the TPU workers: small bash scripts built from argument lists, every value quoted with shlex, so
a config value holding shell metacharacters (`--config.data.langs='es;rm -rf /'`) reaches the trainer as one
literal argument. Each script is one string for `gcloud ... ssh --command=`, which the worker's login shell runs;
they keep to POSIX sh, so any login shell does.

    ssh_command(slice, 0, run_script(["python", "-m", "pivot_jax.train", ...], tpu))

Layout on a worker, all under the ssh user's home: `pivot_jax/` (the checkout at the launching commit, with its
`.venv`), `.pivot_jax/JOB.pid|exit|log` (a run's process id, exit status and, for detached runs, output), and
`.pivot_jax_env-TOKEN` (secrets for one run: copied in with mode 600, sourced, deleted by the run).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence

from pivot_jax.launch.accelerators import LIBTPU_LOCKFILE, TpuType

CHECKOUT = "pivot_jax"  # the project on a worker, relative to the home directory
JOBS = ".pivot_jax"  # pid / exit / log files of runs, relative to the home directory
PYTHON = "3.11"  # setup.py's python_requires; TPU VM images ship an older python3, so uv installs this one
SETUP_MARKER = ".venv/pivot_jax_commit"  # the commit whose install the venv holds (setup skips a repeat)
POLL_PREFIX = "pivot_jax_job:"


def free_accelerator(tpu: TpuType) -> str:
    """Kill whatever holds this host's TPU (a run that died, a notebook) and remove libtpu's lock file: the cure
    for "TPU already in use". The device glob stays unquoted so that the shell expands it."""
    return (f"pids=$(sudo lsof -t {tpu.devices} 2>/dev/null | sort -u || true); "
            'if [ -n "$pids" ]; then echo "pivot_jax: freeing the TPU from leftover processes:" $pids; '
            "sudo kill -9 $pids || true; sleep 2; fi; "
            f"sudo rm -f {LIBTPU_LOCKFILE}")


def setup_script(repo: str, commit: str) -> str:
    """Clone (or fetch) `repo` into ~/pivot_jax at exactly `commit` and install it with its [tpu] extra in a
    Python 3.11 venv made by uv; a worker already set up at that commit only checks out."""
    q = shlex.quote
    return "; ".join([
        "set -e", 'cd "$HOME"', 'export PATH="$HOME/.local/bin:$PATH"',
        f"if [ ! -d {CHECKOUT}/.git ]; then git clone --quiet {q(repo)} {CHECKOUT}; fi",
        f"cd {CHECKOUT}", f"git remote set-url origin {q(repo)}",
        f"git fetch --quiet origin {q(commit)} || git fetch --quiet origin",  # a bare SHA needs server support
        f"git checkout --quiet --force {q(commit)}",
        f'if [ "$(cat {SETUP_MARKER} 2>/dev/null)" != {q(commit)} ]; then '
        "command -v uv >/dev/null || python3 -m pip install --user --quiet uv; "
        f"uv venv --quiet --allow-existing --python {PYTHON} .venv; "
        "uv pip install --quiet --python .venv/bin/python -e '.[tpu]'; "
        f"echo {q(commit)} > {SETUP_MARKER}; fi",
        "echo pivot_jax: $(hostname) at $(git rev-parse --short HEAD)",
    ])


def _prelude(tpu: TpuType, secrets_file: str | None) -> list[str]:
    """Free the TPU, enter the checkout and its venv, load the run's secrets (then delete their file)."""
    steps = ["set -e", 'cd "$HOME"', free_accelerator(tpu), f"mkdir -p {JOBS}", f"cd {CHECKOUT}",
             ". .venv/bin/activate"]
    if secrets_file:
        path = f'"$HOME"/{shlex.quote(secrets_file)}'
        steps.append(f"set -a; . {path}; set +a; rm -f {path}")
    return steps


def _with_env(argv: Sequence[str], env: Mapping[str, str]) -> str:
    return shlex.join(["env", *(f"{k}={v}" for k, v in env.items()), *argv] if env else list(argv))


def run_script(argv: Sequence[str], tpu: TpuType, job: str = "run", secrets_file: str | None = None,
               env: Mapping[str, str] | None = None) -> str:
    """Run `argv` in the foreground (its output is the ssh session's): the shell records its pid, then becomes
    the command (`exec`), so `stop_script(job)` finds the trainer itself."""
    return "; ".join([*_prelude(tpu, secrets_file), f'echo $$ > "$HOME"/{JOBS}/{job}.pid',
                      "exec " + _with_env(argv, env or {})])


def detached_script(argv: Sequence[str], tpu: TpuType, job: str, log: str, secrets_file: str | None = None,
                    env: Mapping[str, str] | None = None) -> str:
    """Start `argv` in the background and return: its output goes to `log` (a path on a shared mount) or, for a
    gs:// log, to ~/.pivot_jax/JOB.log, copied to `log` when it ends; its exit status to ~/.pivot_jax/JOB.exit.
    The pid file names the wrapping bash, whose child is the run."""
    base = f'"$HOME"/{JOBS}/{job}'
    local = log.startswith("gs://")
    out = f"{base}.log" if local else shlex.quote(log)
    inner = f"{_with_env(argv, env or {})}; code=$?; echo $code > {base}.exit"
    if local:
        inner += f"; gcloud storage cp --quiet {base}.log {shlex.quote(log)} || true"
    steps = _prelude(tpu, secrets_file) + [f"rm -f {base}.exit"]
    if not local:
        steps.append(f"mkdir -p {shlex.quote(os.path.dirname(log) or '.')}")
    return "; ".join([*steps, f"nohup bash -c {shlex.quote(inner)} >> {out} 2>&1 < /dev/null &",
                      f"echo $! > {base}.pid"])


def stop_script(tpu: TpuType, job: str = "run", signal: str = "KILL") -> str:
    """Stop the run `job` on this worker. KILL (fail fast): the recorded process and its children, then whatever
    still holds the TPU. TERM (cancel): its children only, so a trainer saves, exits 75 and the status is kept."""
    pid = f'"$HOME"/{JOBS}/{job}.pid'
    kill = (f'if [ -f {pid} ]; then p=$(cat {pid}); pkill -{signal} -P "$p" || true; '
            + (f'kill -{signal} "$p" 2>/dev/null || true; ' if signal == "KILL" else "") + "fi")
    return f"{kill}; {free_accelerator(tpu)}" if signal == "KILL" else kill


def poll_script(job: str) -> str:
    """One line per worker: `pivot_jax_job: exit N`, `... running`, or `... gone` (no trace: a new VM)."""
    base = f'"$HOME"/{JOBS}/{job}'
    return (f"if [ -f {base}.exit ]; then echo {POLL_PREFIX} exit $(cat {base}.exit); "
            f'elif [ -f {base}.pid ] && kill -0 "$(cat {base}.pid)" 2>/dev/null; then echo {POLL_PREFIX} running; '
            f"else echo {POLL_PREFIX} gone; fi")


def parse_poll(output: str) -> list[str]:
    """The workers' answers to `poll_script`: ["exit 0", "running", ...]."""
    return [line.split(POLL_PREFIX, 1)[1].strip() for line in output.splitlines() if POLL_PREFIX in line]


def remote_argv(argv: Sequence[str], checkout: str) -> list[str]:
    """A local command as the workers run it: this interpreter becomes the venv's `python`, and a path inside the
    local checkout becomes the same path relative to the workers' checkout (their working directory)."""
    root = os.path.abspath(checkout).rstrip("/") + "/"
    out = []
    for i, arg in enumerate(argv):
        if i == 0 and os.path.abspath(arg) == os.path.abspath(sys.executable):
            out.append("python")
        else:
            out.append(arg.replace(root, "") if root in arg else arg)
    return out
