"""The run: data, weights or a checkpoint, the steps, logging, evaluations, checkpoints and preemption.

    last_metrics = train(config, workdir)      # resumes WORKDIR's latest checkpoint when there is one

On a preemption signal the current step is saved and `Preempted` is raised (the same call resumes);
WORKDIR/status.json says whether the run is running, preempted, failed or finished. `setup(config)` is the
compiled step with the run's data registered (what benchmarks and tests drive step by step).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import time
from typing import Any

import jax
from etils import epath
from ml_collections import ConfigDict

from pivot_jax import sharding, throughput
from pivot_jax.checkpoint import Checkpointer, saved_steps
from pivot_jax.config import resume_differences, validate
from pivot_jax.data import BatchStream
from pivot_jax.errors import ConfigError
from pivot_jax.eval.report import write_report
from pivot_jax.jsonl import read_json, read_jsonl
from pivot_jax.paths import PathLike, as_path, write_text_atomic
from pivot_jax.preemption import PREEMPTED_EXIT_CODE, EvaluationAbandoned, Preempted, PreemptionWatch
from pivot_jax.pretrained import model_config, tokenizer_spec
from pivot_jax.run_status import read_status, write_status
from pivot_jax.trainer import evals
from pivot_jax.trainer.build import Setup, build, check_fits
from pivot_jax.trainer.data import global_batch, make_stream, register_data, steps_from_epochs
from pivot_jax.trainer.metrics_log import MetricsLog

log = logging.getLogger("pivot_jax.train")


def setup(config: ConfigDict, devices: list[jax.Device] | None = None) -> Setup:
    """The run's data registered (and `train.steps` measured from `train.epochs`), then `trainer.build`."""
    validate(config)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices)
    model_cfg = model_config(config.model)
    check_fits(config, model_cfg, mesh)  # before the data, whose registration takes time
    data_name, bos_id = register_data(config, model_cfg)
    if config.train.epochs > 0:
        config = config.copy_and_resolve_references()
        with config.unlocked():
            config.train.steps = steps_from_epochs(config, data_name, bos_id)
    return dataclasses.replace(build(config, mesh, config.train.steps, model_cfg), data_name=data_name,
                               bos_id=bos_id)


def check_resumable(workdir: epath.Path, config: ConfigDict) -> None:
    """Refuse to continue WORKDIR's checkpoints under a config that defines another run, before any work."""
    saved_path = workdir / "config.json"
    if not saved_path.is_file() or not saved_steps(workdir):
        return
    saved = read_json(saved_path)  # an unreadable one names itself; it describes the checkpoints here
    differences = resume_differences(saved, config)
    if differences:
        keys = ",".join(d.split(":")[0] for d in differences)
        raise ConfigError(
            f"{workdir} holds checkpoints of a run whose config differs from this one ({saved_path}): "
            + "; ".join(differences),
            hint=f"use a new --workdir, or accept the change deliberately with --config.resume_allow={keys}")


def train(config: ConfigDict, workdir: PathLike) -> dict[str, float]:
    """Run (or resume) training in WORKDIR (a local directory or a `gs://` URL); returns the last logged metrics."""
    workdir = as_path(workdir)
    watch = PreemptionWatch()  # first: a signal during setup is honoured at the first step
    checkpointer: Checkpointer | None = None
    metrics_log: MetricsLog | None = None
    started = False
    try:
        validate(config)
        check_resumable(workdir, config)
        workdir.mkdir(parents=True, exist_ok=True)
        s = setup(config)
        config = s.config  # resolved: train.steps derived from train.epochs where set
        checkpointer = Checkpointer(workdir, config.checkpoint.every_steps, config.checkpoint.keep,
                                    config.checkpoint.async_save)
        stream = make_stream(config, s.data_name, s.bos_id, "train")
        with s.activate():
            restored = checkpointer.restore_latest(s.abstract_state, config.checkpoint.fallback)
            if restored is None:
                state, start_step = s.init_fn(), 0
            else:
                start_step, state, data_state = restored
                stream.set_state(data_state)
                log.info("resumed from step %d (%s)%s", start_step, checkpointer.directory, _previous_run(workdir))
        if jax.process_index() == 0:  # only now: a run that could not start leaves the workdir as it was
            write_text_atomic(workdir / "config.json", config.to_json_best_effort(indent=2))
            write_status(workdir, "running", start_step)
        started = True
        metrics_log = MetricsLog(workdir)
        last, step = _loop(s, workdir, state, start_step, stream, checkpointer, metrics_log, watch)
        checkpointer.close()  # the final save committed before the run says it finished
    except Preempted:
        if started and jax.process_index() == 0:
            write_status(workdir, "preempted", checkpointer.latest_step(), signal=watch.signal_name)
        raise
    except BaseException as e:
        if started and jax.process_index() == 0:
            write_status(workdir, "failed", _latest_saved(checkpointer), error=f"{type(e).__name__}: {e}")
        raise
    finally:
        if checkpointer is not None:
            checkpointer.close()
        if metrics_log is not None:
            metrics_log.close()
        watch.restore()
    if jax.process_index() == 0:
        report = write_report([workdir], workdir)[0] if evals.generation_wanted(config) else None
        start = next((row for row in read_jsonl(workdir / "metrics.jsonl", torn_tail_ok=True) if row["step"] == 0),
                     None)
        if step == 0 and start:  # train.steps=0: the starting weights' evaluations are the results
            last, start = {k: v for k, v in start.items() if k != "step"}, None
        print(results_table(workdir, step, last, checkpointer.latest_step(), report, start))
        write_status(workdir, "finished", checkpointer.latest_step())
    return last


def _loop(s: Setup, workdir: epath.Path, state: dict[str, Any], start_step: int, stream: BatchStream,
          checkpointer: Checkpointer, metrics_log: MetricsLog, watch: PreemptionWatch
          ) -> tuple[dict[str, float], int]:
    """Steps from `start_step` to `train.steps`: logging, evaluations, checkpoints, preemption."""
    config = s.config
    total_steps = config.train.steps
    tokens_per_step = config.train.global_batch_size * config.train.seq_len
    flops_per_step = throughput.training_flops_per_token(s.model_cfg, config.train.seq_len) * tokens_per_step
    peak = throughput.peak_tflops()
    log.info("model %s: %s parameters | mesh %s | %d steps x %d tokens", config.model.init_from or config.model.preset,
             f"{s.model_cfg.num_params():,}", dict(s.mesh.shape), total_steps, tokens_per_step)

    generation = None
    if evals.generation_wanted(config):
        spec = tokenizer_spec(config.data, config.model, needed_for="eval.generate_config")
        generation = evals.generation_eval(s, workdir, spec)
    _evaluate_start(s, workdir, state, start_step, generation, metrics_log, watch)

    pending: list[tuple[int, dict[str, jax.Array]]] = []
    last: dict[str, float] = {}
    window_start, window_steps, run_start = time.perf_counter(), 0, time.perf_counter()
    step = start_step
    with s.activate():
        while step < total_steps:
            batch = global_batch(next(stream), s.batch_sharding)
            state, metrics = s.step_fn(state, batch)
            step += 1
            window_steps += 1
            pending.append((step, metrics))
            # Evaluation steps are logged steps too, so their cadence does not depend on log_every_steps.
            due = evals.due_evaluations(config, step, total_steps)
            log_now = step % config.train.log_every_steps == 0 or step == total_steps or bool(due)
            save_due = checkpointer.due(step) or step == total_steps
            if step == start_step + 1 and not log_now:  # compilation is not throughput
                jax.block_until_ready(metrics)
                log.info("first step done (compiled) in %.1fs", time.perf_counter() - window_start)
                window_start, window_steps = time.perf_counter(), 0
            if log_now:
                _check_finite(pending, checkpointer)
                jax.block_until_ready(metrics)
                elapsed = time.perf_counter() - window_start
                tps = window_steps * tokens_per_step / elapsed
                tflops = window_steps * flops_per_step / elapsed / s.mesh.size / 1e12
                last = dict(loss=float(metrics["loss"]), lr=float(metrics["lr"]),
                            grad_norm=float(metrics["grad_norm"]), tokens_per_sec=tps, tflops_per_device=tflops)
                if peak:
                    last["mfu"] = tflops / peak
                try:
                    if due:
                        with watch.abandonable():
                            last.update(evals.run_evaluations(s, state["params"], step, due, generation))
                except EvaluationAbandoned:
                    log.warning("step %d: evaluation cut short by %s (it is redone on resume)", step,
                                watch.signal_name)
                metrics_log.write(step, last)
                _log_progress(step, total_steps, last, tps, tflops, peak,
                              remaining=(total_steps - step) * elapsed / window_steps)
                window_start, window_steps = time.perf_counter(), 0
            # Decided after the step's logging and evaluations, so a signal that arrived during them counts.
            preempted = watch.agreed(step)
            if save_due or preempted:
                _check_finite(pending, checkpointer)
                pending.clear()
                checkpointer.save(step, state, stream.get_state())
            if preempted:
                checkpointer.wait()  # committed before the process leaves
                since = watch.seconds_since_signal()
                log.warning("preempted (%s): saved step %d%s; exiting with status %d, run the same command to "
                            "resume", watch.signal_name or "preemption notice", step,
                            f", {since:.1f} s after the signal" if since is not None else "", PREEMPTED_EXIT_CODE)
                raise Preempted(step, saved=True)
            if not log_now and not save_due and len(pending) > 1000:
                pending = pending[-1:]  # bounded; finiteness of older steps was never needed
    log.info("done in %s", _fmt_duration(time.perf_counter() - run_start))
    return last, step


def _evaluate_start(s: Setup, workdir: epath.Path, state: dict[str, Any], start_step: int,
                    generation: evals.GenerationEval | None, metrics_log: MetricsLog, watch: PreemptionWatch
                    ) -> None:
    """Before training: the starting weights (the "before" of report.md); on resume: the evaluations of the saved
    step that a preemption cut short."""
    config = s.config
    if start_step == 0:
        before = {"loss", "generate"} if generation and config.eval.generate_at_start else set()
        if not config.eval.every_steps:
            before.discard("loss")
        if config.train.steps == 0:  # nothing to train: the evaluations of the starting weights (a baseline)
            before |= evals.due_evaluations(config, 0, 0)
    else:
        before = evals.unfinished_evaluations(config, workdir / "metrics.jsonl", start_step, config.train.steps)
        if before:
            log.info("redoing the evaluation of step %d (%s), cut short before it finished", start_step,
                     ", ".join(sorted(before)))
    if not before:
        return
    try:
        with s.activate(), watch.abandonable():
            results = evals.run_evaluations(s, state["params"], start_step, before, generation)
    except EvaluationAbandoned:
        raise Preempted(start_step, saved=start_step > 0) from None
    metrics_log.write(start_step, results)
    log.info("step %d (evaluation): %s", start_step, " | ".join(f"{k} {v:.4g}" for k, v in sorted(results.items())))


def _log_progress(step: int, total_steps: int, last: dict[str, float], tps: float, tflops: float,
                  peak: float | None, remaining: float) -> None:
    mfu = f"MFU {last['mfu']:.1%}" if peak else "MFU n/a (cpu)"
    evl = f" | eval {last['eval_loss']:.4f}" if "eval_loss" in last else ""
    log.info("step %d/%d | loss %.4f%s | lr %.2e | %s tok/s | %.3f TFLOP/s/device | %s | ETA %s", step,
             total_steps, last["loss"], evl, last["lr"], f"{tps:,.0f}", tflops, mfu, _fmt_duration(remaining))


def _fmt_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def _previous_run(workdir: epath.Path) -> str:
    """How the run being resumed ended, from its status.json: `; it was preempted (SIGTERM) at step 40`."""
    status = read_status(workdir)
    if not status or status.get("state") == "running":  # killed without a word: nothing to add
        return ""
    how = status["state"] + (f" ({status['signal']})" if status.get("signal") else "")
    return f"; it {'had ' if how == 'finished' else 'was '}{how} at step {status.get('step')}" + (
        f": {status['error']}" if status.get("error") else "")


def _check_finite(pending: list[tuple[int, dict[str, jax.Array]]], checkpointer: Checkpointer) -> None:
    for step, metrics in pending:
        loss = float(metrics["loss"])
        if not math.isfinite(loss):
            checkpointer.wait()
            last = checkpointer.latest_step()
            raise FloatingPointError(
                f"loss is {loss} at step {step}; stopping. The last good checkpoint is "
                f"{'step ' + str(last) if last is not None else 'none'} in {checkpointer.directory}")


def _latest_saved(checkpointer: Checkpointer | None) -> int | None:
    """The newest committed step, for a run that failed (the failure may be the checkpointer's own)."""
    if checkpointer is None:
        return None
    try:
        checkpointer.wait()
        return checkpointer.latest_step()
    except Exception:  # noqa: BLE001 - the original error is the one to report
        return None


def results_table(workdir: epath.Path, step: int, last: dict[str, float], checkpoint_step: int | None,
                  report: epath.Path | None = None, start: dict[str, float] | None = None) -> str:
    """The short summary printed at the end of a run: losses and generation metrics by language (beside the
    step-0 values of `start` when the run evaluated its starting weights), and where things are."""
    start = start or {}
    fmt = lambda v: f"{v:>10.4g}" if v is not None else " " * 10  # noqa: E731
    lines = [f"\nResults after {step} steps ({workdir})"]
    if start:
        lines.append(f"  {'':<28} {'step 0':>10} {'step ' + str(step):>10}")
    rows = [("train loss", "loss"), ("held-out loss", "eval_loss")] + [
        (key[4:], key) for key in sorted(k for k in last if k.startswith("gen/"))]
    for label, key in rows:
        if key in last:
            lines.append(f"  {label:<28} " + (f"{fmt(start.get(key))} " if start else "") + fmt(last[key]))
    lines += [f"  TensorBoard: tensorboard --logdir {workdir / 'tensorboard'}",
              f"  metrics:     {workdir / 'metrics.jsonl'}",
              f"  checkpoint:  {workdir / 'checkpoints' / str(checkpoint_step)}" if checkpoint_step is not None
              else "  checkpoint:  none"]
    if report is not None:
        lines.append(f"  report:      {report} (+ {report.with_suffix('.png').name}: before/after, loss curves)")
    return "\n".join(lines)
