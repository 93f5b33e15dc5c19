"""Preemption: a real signal at a log step, during a held-out evaluation and during a generation evaluation saves
the step and exits with PREEMPTED_EXIT_CODE; the same command resumes (redoing the cut evaluation); two hosts
agree on the step when only one receives the signal."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pivot_jax.checkpoint import saved_steps
from pivot_jax.errors import ConfigError
from pivot_jax.preemption import PREEMPTED_EXIT_CODE, EvaluationAbandoned, PreemptionWatch, preemption_signals
from pivot_jax.run_status import read_status

REPO = Path(__file__).resolve().parents[1]
LONG_RUN = ("--config.train.steps=100000", "--config.train.log_every_steps=1", "--config.checkpoint.every_steps=0")


def _cmd(workdir, *flags, config="tiny.py"):
    return [sys.executable, "-m", "pivot_jax.train", "--config", str(REPO / "configs" / config),
            "--workdir", str(workdir), *flags]


def _env(devices=2, **extra):
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu",
            **extra}


class _Run:
    """A trainer subprocess whose output is read as it comes, to signal it at a chosen moment."""

    def __init__(self, cmd, env):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self._reader.start()

    def wait_for(self, text, timeout=300):
        deadline = time.time() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None and time.time() < deadline, f"no {text!r} in:\n{self.output}"
            time.sleep(0.05)

    def finish(self, timeout=300):
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return self.proc.returncode

    @property
    def output(self):
        return "".join(self.lines)


def _metrics(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().split("\n") if line]


def _assert_preempted(run, workdir):
    assert run.finish() == PREEMPTED_EXIT_CODE, run.output
    status = read_status(workdir)
    assert status["state"] == "preempted"
    assert saved_steps(workdir)[-1] == status["step"] > 0
    return status["step"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2])
def test_signal_at_a_log_step_saves_that_step_and_the_same_command_resumes(tmp_path, sig):
    flags = ("--config.train.steps=400", "--config.train.log_every_steps=1", "--config.checkpoint.every_steps=0",
             "--config.eval.every_steps=0")
    run = _Run(_cmd(tmp_path, *flags), _env())
    run.wait_for("step 3/")  # logging every step: the signal lands in or around a log step
    run.proc.send_signal(sig)
    step = _assert_preempted(run, tmp_path)
    assert f"preempted ({sig.name}): saved step {step}" in run.output
    assert read_status(tmp_path)["signal"] == sig.name

    done = subprocess.run(_cmd(tmp_path, *flags), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"resumed from step {step}" in done.stderr
    assert f"it was preempted ({sig.name}) at step {step}" in done.stderr  # from the status.json it left
    assert read_status(tmp_path)["state"] == "finished" and saved_steps(tmp_path)[-1] == 400


@pytest.mark.slow
def test_signal_during_held_out_evaluation_abandons_it_and_resume_redoes_it(tmp_path):
    # 100000 held-out batches every 3 steps: the evaluation of step 3 runs far longer than the test waits.
    flags = ("--config.train.steps=6", "--config.train.log_every_steps=1", "--config.checkpoint.every_steps=0",
             "--config.eval.every_steps=3")
    run = _Run(_cmd(tmp_path, *flags, "--config.eval.steps=100000"), _env(SUBMITIT_PREEMPT_SIGNAL="USR1"))
    run.wait_for("step 2/")
    time.sleep(1.0)
    run.proc.send_signal(signal.SIGUSR1)  # the signal submitit is told to use
    assert _assert_preempted(run, tmp_path) == 3
    assert "step 3: evaluation cut short by SIGUSR1" in run.output
    assert [("eval_loss" in row) for row in _metrics(tmp_path) if row["step"] == 3] == [False]

    done = subprocess.run(_cmd(tmp_path, *flags, "--config.eval.steps=2"), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "redoing the evaluation of step 3 (loss)" in done.stderr
    assert any("eval_loss" in row for row in _metrics(tmp_path) if row["step"] == 3)


@pytest.mark.slow
def test_signal_during_generation_evaluation_abandons_it_and_resume_redoes_it(tmp_path):
    flags = ("--config.train.steps=4", "--config.train.log_every_steps=1", "--config.checkpoint.every_steps=0",
             "--config.eval.every_steps=0", "--config.eval.generate_every_steps=2",
             "--config.eval.generate_at_start=false")
    cmd = _cmd(tmp_path, *flags, config="quickstart.py:langs=es,steps=4")
    run = _Run(cmd, _env(devices=1))
    run.wait_for("items from")  # the generation evaluation of step 2 has started (its decoding compiles next)
    run.proc.send_signal(signal.SIGTERM)
    assert _assert_preempted(run, tmp_path) == 2
    assert "step 2: evaluation cut short by SIGTERM" in run.output

    done = subprocess.run(cmd, env=_env(devices=1), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "redoing the evaluation of step 2 (generate)" in done.stderr
    assert any(key.startswith("gen/") for row in _metrics(tmp_path) if row["step"] == 2 for key in row)
    assert read_status(tmp_path)["state"] == "finished"


@pytest.mark.slow
def test_two_hosts_save_the_same_step_when_only_one_is_signalled(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    flags = (*LONG_RUN, "--config.eval.every_steps=0", f"--coordinator_address=127.0.0.1:{port}",
             "--num_processes=2")
    runs = [_Run(_cmd(tmp_path, *flags, f"--process_id={i}"), _env()) for i in range(2)]
    runs[0].wait_for("step 5/")
    runs[1].proc.send_signal(signal.SIGTERM)  # process 1 only: JAX's preemption service tells process 0
    codes = [run.finish() for run in runs]
    assert codes == [PREEMPTED_EXIT_CODE] * 2, runs[0].output + runs[1].output
    saved = [int(run.output.split("saved step ")[1].split(";")[0]) for run in runs]
    assert saved[0] == saved[1] == saved_steps(tmp_path)[-1] == read_status(tmp_path)["step"]


def test_watch_cuts_short_only_abandonable_work_and_restores_handlers():
    before = signal.getsignal(signal.SIGUSR2)
    watch = PreemptionWatch()
    try:
        assert not watch.agreed(1)
        with pytest.raises(EvaluationAbandoned):
            with watch.abandonable():
                os.kill(os.getpid(), signal.SIGUSR2)
                time.sleep(5)  # interrupted by the handler's exception
        assert watch.agreed(2) and watch.signal_name == "SIGUSR2"
        with pytest.raises(EvaluationAbandoned):  # already signalled: no new evaluation starts
            with watch.abandonable():
                pass
        os.kill(os.getpid(), signal.SIGUSR2)  # outside abandonable work: only remembered
    finally:
        watch.restore()
    assert signal.getsignal(signal.SIGUSR2) == before


def test_submitit_preempt_signal_is_honoured_and_checked(monkeypatch):
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    assert signal.SIGUSR1 in preemption_signals()
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "SIGHUP")
    assert signal.SIGHUP in preemption_signals()
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR9")
    with pytest.raises(ConfigError, match="SUBMITIT_PREEMPT_SIGNAL='USR9'"):
        preemption_signals()
