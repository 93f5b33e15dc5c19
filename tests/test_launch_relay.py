"""A command's output into its log through the relay: a local file, or an object on GCS (rewritten as it grows);
the exit code passes through, and a SIGTERM reaches the command (which ends as it chooses) while the relay
keeps the output."""

import os
import signal
import subprocess
import sys
import time

from pivot_jax.launch.relay import run_logged

PRINT_THEN_FAIL = [sys.executable, "-c", "import sys; print('line 1'); print('line 2', file=sys.stderr); sys.exit(3)"]


def test_output_and_exit_code_to_a_local_log(tmp_path):
    log = tmp_path / "a" / "train.log"
    assert run_logged(PRINT_THEN_FAIL, log) == 3
    assert run_logged(PRINT_THEN_FAIL, log) == 3  # appended across attempts
    assert log.read_text().splitlines() == ["line 1", "line 2"] * 2


def test_output_and_exit_code_to_an_object(gcs_workdir):
    log = gcs_workdir / "points" / "p" / "train.log"
    assert run_logged(PRINT_THEN_FAIL, log, flush_s=0) == 3
    assert log.read_text().splitlines() == ["line 1", "line 2"]


def test_a_sigterm_reaches_the_command_and_the_relay_keeps_its_output(gcs_workdir):
    log = gcs_workdir / "train.log"
    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *a: (print('saving', flush=True), sys.exit(75)))\n"
              "print('started', flush=True)\n"
              "time.sleep(60)\n")
    relay = subprocess.Popen([sys.executable, "-c", "import sys; from pivot_jax.launch.relay import run_logged; "
                              "sys.exit(run_logged(sys.argv[2:], sys.argv[1], flush_s=0.2))", str(log),
                              sys.executable, "-c", script], start_new_session=True)
    deadline = time.time() + 60
    while not (log.exists() and "started" in log.read_text()):
        assert time.time() < deadline and relay.poll() is None
        time.sleep(0.2)
    os.killpg(relay.pid, signal.SIGTERM)  # what the local backend's cancel does
    assert relay.wait(timeout=60) == 75
    assert log.read_text().splitlines() == ["started", "saving"]
