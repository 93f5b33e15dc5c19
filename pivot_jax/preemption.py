"""Preemption: the signals that announce it, the step every host agrees to save, and the evaluations it cuts short.

TPU VMs send SIGTERM before maintenance or when a spot/preemptible VM is reclaimed; SLURM (and submitit) send
SIGUSR2, or the signal named by `$SUBMITIT_PREEMPT_SIGNAL`, before requeueing a job. The trainer then saves the
step it is at, waits for the save to be committed, and exits with `PREEMPTED_EXIT_CODE` so that the scheduler or
sweep runs the same command again, which resumes from that step.

Usage:

    watch = PreemptionWatch()
    ...
    with watch.abandonable():          # an evaluation: cut short by a signal (redone on resume)
        ...
    if watch.agreed(step): save, raise Preempted(step)
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator

import jax
from jax.experimental import multihost_utils

from pivot_jax.errors import ConfigError

log = logging.getLogger(__name__)

# EX_TEMPFAIL (sysexits.h): a temporary failure, "try again". Not 0, so nothing mistakes the run for finished.
PREEMPTED_EXIT_CODE = 75


class Preempted(Exception):
    """The run was preempted at `step` after saving it; the same command resumes from there."""

    def __init__(self, step: int, saved: bool):
        self.step = step
        self.saved = saved
        what = f"saved step {step}" if saved else f"nothing to save at step {step}"
        super().__init__(f"preempted: {what}; run the same command again to resume")


class EvaluationAbandoned(BaseException):
    """Raised inside `abandonable()` when a preemption signal arrives there. A BaseException, so that library
    code catching `Exception` (a judge retry loop, a reader) cannot swallow it."""


def preemption_signals() -> list[signal.Signals]:
    """SIGTERM, SIGUSR2, and the signal `$SUBMITIT_PREEMPT_SIGNAL` names ("USR2", "SIGUSR1" or a number)."""
    signals = [signal.SIGTERM, signal.SIGUSR2]
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "").strip()
    if name:
        try:
            extra = signal.Signals(int(name)) if name.isdigit() else signal.Signals[
                name if name.startswith("SIG") else "SIG" + name]
        except (KeyError, ValueError):
            raise ConfigError(f"environment variable SUBMITIT_PREEMPT_SIGNAL={name!r}: not a signal name or "
                              "number (e.g. USR2, SIGUSR1, 12)") from None
        if extra not in signals:
            signals.append(extra)
    return signals


class PreemptionWatch:
    """Listens for the preemption signals and tells the training loop when to save and stop.

    One process: the handler sets a flag (and cuts short an `abandonable()` evaluation in progress).
    Several processes: every host must save the same step, or Orbax waits forever for the hosts that did not.
    JAX's preemption service (started by `jax.distributed.initialize`) owns SIGTERM there, passes the notice to
    every host and picks the step they all save (`reached_preemption_sync_point`, called at every step); our
    handler for the other signals hands them on to it as SIGTERM. An evaluation is not cut short there (one host
    leaving it alone would desynchronise the hosts' collectives): it finishes, then the agreed step is saved.
    """

    def __init__(self) -> None:
        self.multihost = jax.process_count() > 1
        self.signal_name: str | None = None
        self.signal_time: float | None = None
        self._in_abandonable = False
        self._previous: dict[signal.Signals, object] = {}
        for sig in preemption_signals():
            if self.multihost and sig == signal.SIGTERM:
                continue
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal_name is None:
            self.signal_name, self.signal_time = signal.Signals(signum).name, time.monotonic()
        if self.multihost:
            os.kill(os.getpid(), signal.SIGTERM)
        elif self._in_abandonable:
            self._in_abandonable = False  # raise once; the handler may run again before the stack unwinds
            raise EvaluationAbandoned(self.signal_name)

    @property
    def received(self) -> bool:
        """A signal reached this process (always False on multi-host SIGTERM, which JAX's service takes)."""
        return self.signal_name is not None

    @contextlib.contextmanager
    def abandonable(self) -> Iterator[None]:
        """Work that a preemption signal may cut short (single process): it raises `EvaluationAbandoned`."""
        if self.received and not self.multihost:
            raise EvaluationAbandoned(self.signal_name)
        self._in_abandonable = not self.multihost
        try:
            yield
        finally:
            self._in_abandonable = False

    def agreed(self, step: int) -> bool:
        """Whether to save `step` and stop. Call at every step on every host (JAX's sync protocol counts them)."""
        if self.multihost:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.received

    def seconds_since_signal(self) -> float | None:
        return None if self.signal_time is None else time.monotonic() - self.signal_time

    def restore(self) -> None:
        """Put back the handlers that were there before."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
