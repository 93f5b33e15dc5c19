"""The trainer: `python -m pivot_jax.train --config configs/FILE.py[:ARGS] --workdir DIR [--config.KEY=VALUE]`.

One jitted `train_step` with explicit shardings over a (data, fsdp, tensor) mesh; parameters and optimizer
state are created already sharded; Orbax checkpoints (periodic, on SIGTERM, at the end) hold the state and the
data position, and a restarted run continues bit-identically. Logs a progress line, `metrics.jsonl` and
TensorBoard events under WORKDIR.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from ml_collections import ConfigDict

from pivot_jax import distributed, sharding, throughput
from pivot_jax.checkpoint import Checkpointer, saved_steps
from pivot_jax.config import resume_differences, validate
from pivot_jax.data import BATCH_KEYS, BatchStream
from pivot_jax.data.synthetic import SyntheticStream
from pivot_jax.errors import ConfigError
from pivot_jax.jsonl import Appender, read_json, read_jsonl
from pivot_jax.preemption import PREEMPTED_EXIT_CODE, EvaluationAbandoned, Preempted, PreemptionWatch
from pivot_jax.pretrained import model_config
from pivot_jax.run_status import write_status, write_text_atomic
from pivot_jax.trainer.build import Setup, build, check_fits
from pivot_jax.trainer.data import register_data

log = logging.getLogger("pivot_jax.train")


def setup(config: ConfigDict, devices: list[jax.Device] | None = None) -> Setup:
    """The run's data registered (and `train.steps` measured from `train.epochs`), then `trainer.build`."""
    validate(config)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices)
    model_cfg = model_config(config.model)
    check_fits(config, model_cfg, mesh)  # before the data, whose registration takes time
    data_name, bos_id = register_data(config, model_cfg)
    if config.train.epochs > 0:
        config = _with_steps_from_epochs(config, data_name, bos_id)
    return dataclasses.replace(build(config, mesh, config.train.steps, model_cfg), data_name=data_name,
                               bos_id=bos_id)


def _with_steps_from_epochs(config: ConfigDict, data_name: str, bos_id: int, sample_batches: int = 8
                            ) -> ConfigDict:
    """`train.steps` for `train.epochs` passes over the training examples, at the measured packing rate."""
    import seqio

    from pivot_jax.data.tasks import SeqioStream

    mixture = seqio.get_mixture_or_task(data_name)
    examples = sum(task.num_input_examples("train") for task in getattr(mixture, "tasks", [mixture]))
    stream = SeqioStream(data_name, "train", config.train.seq_len, config.train.global_batch_size, config.seed,
                         bos_id)
    per_row = np.mean([next(stream)["decoder_segment_ids"].max(axis=1).mean() for _ in range(sample_batches)])
    steps = max(1, math.ceil(config.train.epochs * examples / (config.train.global_batch_size * per_row)))
    log.info("train.epochs=%g over %d examples at %.2f examples per packed row -> train.steps=%d",
             config.train.epochs, examples, per_row, steps)
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.train.steps = steps
    return config


def make_stream(s: Setup, split: str) -> BatchStream:
    config = s.config
    if config.data.source == "seqio":
        from pivot_jax.data.tasks import SeqioStream

        return SeqioStream(s.data_name, split, config.train.seq_len, config.train.global_batch_size,
                           config.seed, s.bos_id, jax.process_index(), jax.process_count(),
                           shuffle=split == "train")
    return SyntheticStream(config.seed, split, config.train.global_batch_size, config.train.seq_len,
                           config.data.vocab_size, jax.process_index(), jax.process_count())


def global_batch(local: dict[str, np.ndarray], batch_sharding: jax.sharding.NamedSharding) -> dict[str, jax.Array]:
    """Assemble the global batch from each process's rows (no host ever holds all of it)."""
    return {k: jax.make_array_from_process_local_data(batch_sharding, local[k]) for k in BATCH_KEYS}


class MetricsLog:
    """`metrics.jsonl` + TensorBoard events (process 0 only)."""

    def __init__(self, workdir: Path):
        self.enabled = jax.process_index() == 0
        if not self.enabled:
            return
        from clu import metric_writers

        self.jsonl = Appender(workdir / "metrics.jsonl")  # a line cut short by a kill is repaired, not continued
        self.tensorboard = metric_writers.create_default_writer(str(workdir / "tensorboard"), asynchronous=False)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write({"step": step, **scalars})
        self.jsonl.flush()
        self.tensorboard.write_scalars(step, scalars)
        self.tensorboard.flush()

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tensorboard.close()


def _check_finite(pending: list[tuple[int, dict[str, jax.Array]]], checkpointer: Checkpointer) -> None:
    for step, metrics in pending:
        loss = float(metrics["loss"])
        if not math.isfinite(loss):
            checkpointer.wait()
            last = checkpointer.latest_step()
            raise FloatingPointError(
                f"loss is {loss} at step {step}; stopping. The last good checkpoint is "
                f"{'step ' + str(last) if last is not None else 'none'} in {checkpointer.directory}")


def _generation_eval(s: Setup, workdir: Path) -> Callable[[dict[str, Any], int], dict[str, float]]:
    """`eval.generate_config` on the current weights, into WORKDIR/eval/step_N and WORKDIR/results_index.jsonl."""
    from pivot_jax.config import load_config_file
    from pivot_jax.eval.run import evaluate, protocol_name
    from pivot_jax.pretrained import load_tokenizer

    config = s.config
    eval_cfg = load_config_file(config.eval.generate_config)
    spec = config.data.tokenizer or config.model.init_from
    if not spec:
        raise ConfigError("eval.generate_every_steps needs a tokenizer: set data.tokenizer (or model.init_from)")
    tokenizer = load_tokenizer(spec)
    name = protocol_name(eval_cfg).replace("/", "_")

    def run(params: dict[str, Any], step: int) -> dict[str, float]:
        model = nnx.merge(s.graphdef, params)
        results = evaluate(eval_cfg, f"{workdir}@step{step}", workdir / "eval" / f"step_{step}" / name,
                           workdir / "results_index.jsonl", {"step": str(step)},
                           loaded=(model, tokenizer, s.mesh, s.rules))
        return {f"gen/{r['name']}": r["value"] for r in results}

    return run


def _fmt_eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def run_eval(s: Setup, params: dict[str, Any]) -> float:
    stream = make_stream(s, "validation")
    total, weight = 0.0, 0.0
    for _ in range(s.config.eval.steps):
        loss_sum, w = s.eval_fn(params, global_batch(next(stream), s.batch_sharding))
        total, weight = total + float(loss_sum), weight + float(w)
    return total / max(weight, 1.0)


def _due_evaluations(config: ConfigDict, step: int) -> set[str]:
    """Which evaluations step `step` runs: "loss" (held-out loss) and/or "generate" (`eval.generate_config`)."""
    every = {"loss": config.eval.every_steps, "generate": config.eval.generate_every_steps}
    return {name for name, n in every.items() if n and step % n == 0}


def _evaluate(s: Setup, params: dict[str, Any], step: int, which: set[str],
              generation_eval: Callable[[dict[str, Any], int], dict[str, float]] | None) -> dict[str, float]:
    results = {}
    if "loss" in which:
        results["eval_loss"] = run_eval(s, params)
    if "generate" in which and generation_eval:
        results.update(generation_eval(params, step))
    return results


def _unfinished_evaluations(config: ConfigDict, workdir: Path, step: int) -> set[str]:
    """Evaluations due at `step` that metrics.jsonl does not hold (preempted or killed during them). Process 0
    reads the file and every host takes its answer, since evaluations run collectives on all of them."""
    due = sorted(_due_evaluations(config, step))
    missing = np.zeros(len(due), np.int32)
    if jax.process_index() == 0 and due:
        rows = [row for row in read_jsonl(workdir / "metrics.jsonl", torn_tail_ok=True) if row.get("step") == step]
        done = {"loss": any("eval_loss" in row for row in rows),
                "generate": any(key.startswith("gen/") for row in rows for key in row)}
        missing = np.array([not done[name] for name in due], np.int32)
    if jax.process_count() > 1:
        missing = multihost_utils.broadcast_one_to_all(missing)
    return {name for name, m in zip(due, missing) if m}


def check_resumable(workdir: Path, config: ConfigDict) -> None:
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


def _latest_saved(checkpointer: Checkpointer) -> int | None:
    """The newest committed step, for a run that failed (the failure may be the checkpointer's own)."""
    try:
        checkpointer.wait()
        return checkpointer.latest_step()
    except Exception:  # noqa: BLE001 - the original error is the one to report
        return None


def train(config: ConfigDict, workdir: str | Path) -> dict[str, float]:
    """Run (or resume) training; returns the last logged metrics.

    On a preemption signal the current step is saved and `Preempted` is raised (the same call resumes).
    WORKDIR/status.json says whether the run is running, preempted, failed or finished.
    """
    workdir = Path(workdir)
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
        stream = make_stream(s, "train")
        with s.activate():
            restored = checkpointer.restore_latest(s.abstract_state, config.checkpoint.fallback)
            if restored is None:
                state, start_step = s.init_fn(), 0
            else:
                start_step, state, data_state = restored
                stream.set_state(data_state)
                log.info("resumed from step %d (%s)", start_step, checkpointer.directory)
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
        from pivot_jax.report import write_report

        report = write_report([workdir], workdir)[0] if config.eval.generate_every_steps else None
        start = next((row for row in read_jsonl(workdir / "metrics.jsonl", torn_tail_ok=True) if row["step"] == 0),
                     None)
        print(results_table(workdir, step, last, checkpointer.latest_step(), report, start))
        write_status(workdir, "finished", checkpointer.latest_step())
    return last


def _loop(s: Setup, workdir: Path, state: dict[str, Any], start_step: int, stream: BatchStream,
          checkpointer: Checkpointer, metrics_log: MetricsLog, watch: PreemptionWatch
          ) -> tuple[dict[str, float], int]:
    """Steps from `start_step` to `train.steps`: logging, evaluations, checkpoints, preemption."""
    config = s.config
    total_steps = config.train.steps
    n_devices = s.mesh.size
    tokens_per_step = config.train.global_batch_size * config.train.seq_len
    flops_per_step = throughput.training_flops_per_token(s.model_cfg, config.train.seq_len) * tokens_per_step
    peak = throughput.peak_tflops()
    log.info("model %s: %s parameters | mesh %s | %d steps x %d tokens", config.model.init_from or config.model.preset,
             f"{s.model_cfg.num_params():,}", dict(s.mesh.shape), total_steps, tokens_per_step)

    generation_eval = _generation_eval(s, workdir) if config.eval.generate_every_steps else None
    # Before training (the "before" of report.md), or the evaluations a preemption cut short at the saved step.
    if start_step == 0:
        before = {"loss", "generate"} if generation_eval and config.eval.generate_at_start else set()
        if not config.eval.every_steps:
            before.discard("loss")
    else:
        before = _unfinished_evaluations(config, workdir, start_step)
        if before:
            log.info("redoing the evaluation of step %d (%s), cut short before it finished", start_step,
                     ", ".join(sorted(before)))
    if before:
        try:
            with s.activate(), watch.abandonable():
                results = _evaluate(s, state["params"], start_step, before, generation_eval)
        except EvaluationAbandoned:
            raise Preempted(start_step, saved=start_step > 0) from None
        metrics_log.write(start_step, results)
        log.info("step %d (evaluation): %s", start_step, " | ".join(f"{k} {v:.4g}" for k, v in sorted(results.items())))

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
            due = _due_evaluations(config, step)
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
                tflops = window_steps * flops_per_step / elapsed / n_devices / 1e12
                last = dict(loss=float(metrics["loss"]), lr=float(metrics["lr"]),
                            grad_norm=float(metrics["grad_norm"]), tokens_per_sec=tps, tflops_per_device=tflops)
                if peak:
                    last["mfu"] = tflops / peak
                try:
                    if due:
                        with watch.abandonable():
                            last.update(_evaluate(s, state["params"], step, due, generation_eval))
                except EvaluationAbandoned:
                    log.warning("step %d: evaluation cut short by %s (it is redone on resume)", step,
                                watch.signal_name)
                metrics_log.write(step, last)
                remaining = (total_steps - step) * elapsed / window_steps
                mfu = f"MFU {last['mfu']:.1%}" if peak else "MFU n/a (cpu)"
                evl = f" | eval {last['eval_loss']:.4f}" if "eval_loss" in last else ""
                log.info("step %d/%d | loss %.4f%s | lr %.2e | %s tok/s | %.3f TFLOP/s/device | %s | ETA %s",
                         step, total_steps, last["loss"], evl, last["lr"], f"{tps:,.0f}", tflops, mfu,
                         _fmt_eta(remaining))
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
    log.info("done in %s", _fmt_eta(time.perf_counter() - run_start))
    return last, step


def results_table(workdir: Path, step: int, last: dict[str, float], checkpoint_step: int | None,
                  report: Path | None = None, start: dict[str, float] | None = None) -> str:
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


# --------------------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str]) -> None:
    from absl import flags

    from pivot_jax.cli import exit_on_user_error, setup_logging

    del argv
    f = flags.FLAGS
    setup_logging("pivot_jax")

    def run() -> None:
        distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
        train(f.config, f.workdir)

    try:
        exit_on_user_error(run, f.verbose)
    except Preempted:
        raise SystemExit(PREEMPTED_EXIT_CODE) from None  # not 0: schedulers and sweeps run it again


def cli() -> None:
    from absl import app, flags
    from ml_collections import config_flags

    from pivot_jax.cli import define_verbose_flag

    config_flags.DEFINE_config_file("config", None, "config file (configs/FILE.py[:ARGS])", lock_config=True)
    flags.DEFINE_string("workdir", None, "checkpoints, metrics and TensorBoard logs go here")
    distributed.define_flags()
    define_verbose_flag()
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)


if __name__ == "__main__":
    cli()
