import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pivot_jax.checkpoint import Checkpointer
from pivot_jax.config import base_config
from pivot_jax.errors import ConfigError
from pivot_jax.run_status import read_status
from pivot_jax.trainer import loop
from pivot_jax.trainer.data import global_batch, make_stream

REPO = Path(__file__).resolve().parents[1]


def tiny_config(**overrides):
    c = base_config()
    c.model.preset = "tiny"
    c.train.steps = 5
    c.train.global_batch_size = 8
    c.train.seq_len = 32
    c.optimizer.lr = 1e-2
    c.optimizer.warmup_ratio = 0.0
    c.checkpoint.async_save = False
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def run_steps(config, devices, steps):
    """Losses of `steps` train steps and the final state, on a mesh over `devices`."""
    s = loop.setup(config, devices)
    stream = make_stream(s.config, s.data_name, s.bos_id, "train")
    losses = []
    with s.activate():
        state = s.init_fn()
        for _ in range(steps):
            state, metrics = s.step_fn(state, global_batch(next(stream), s.batch_sharding))
            losses.append(float(metrics["loss"]))
    return losses, state


@pytest.fixture(scope="module")
def single_device_run():
    return run_steps(tiny_config(**{"mesh.data": 1}), jax.devices()[:1], 5)


@pytest.mark.parametrize("mesh", [(8, 1, 1), (2, 4, 1), (2, 2, 2)])
def test_meshes_match_one_device(mesh, single_device_run):
    assert len(jax.devices()) == 8, "conftest forces 8 CPU devices"
    data, fsdp, tensor = mesh
    config = tiny_config(**{"mesh.data": data, "mesh.fsdp": fsdp, "mesh.tensor": tensor})
    losses, state = run_steps(config, jax.devices(), 5)
    np.testing.assert_allclose(losses, single_device_run[0], rtol=1e-5)
    assert losses[-1] < losses[0]
    gate = state["params"]["layers"]["mlp"]["gate_proj"]  # [layers, embed, mlp] = [2, 64, 128]
    assert gate.addressable_shards[0].data.shape == (2, 64 // fsdp, 128 // tensor)
    mu = jax.tree.leaves(state["opt_state"])[1]  # Adam moments are placed like their parameters
    assert len(mu.sharding.device_set) == 8


def test_trainer_step_with_grad_accumulation_matches_one_big_batch():
    big_losses, _ = run_steps(tiny_config(**{"mesh.data": 1}), jax.devices()[:1], 3)
    acc_losses, _ = run_steps(tiny_config(**{"mesh.data": 1, "train.grad_accum_steps": 4}), jax.devices()[:1], 3)
    np.testing.assert_allclose(acc_losses, big_losses, rtol=1e-5)


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="grad_accum_steps"):
        loop.setup(tiny_config(**{"train.grad_accum_steps": 3}))
    with pytest.raises(ValueError, match="optimizer.schedule"):
        loop.setup(tiny_config(**{"optimizer.schedule": "cosnie"}))
    with pytest.raises(ValueError, match="mesh"):
        loop.setup(tiny_config(**{"mesh.data": 3}))


def test_rerun_with_another_run_defining_config_is_refused_and_config_json_kept(tmp_path):
    loop.train(tiny_config(**{"train.steps": 2}), tmp_path)
    saved = (tmp_path / "config.json").read_bytes()
    other = tiny_config(**{"train.steps": 2, "model.preset": "tiny-llama3", "optimizer.lr": 5e-3})
    with pytest.raises(ConfigError, match=r"model.preset: saved 'tiny', now 'tiny-llama3'; optimizer.lr") as error:
        loop.train(other, tmp_path)  # before: config.json rewritten first, then the restore failed
    assert "--config.resume_allow=model.preset,optimizer.lr" in error.value.hint
    assert (tmp_path / "config.json").read_bytes() == saved
    import pivot_jax

    assert pivot_jax.load_pretrained(f"run:{tmp_path}").config.num_layers == 2  # still the run it describes
    # What may change on resume: logging, evaluation, checkpointing, the mesh; and keys allowed by name.
    loop.train(tiny_config(**{"train.steps": 2, "train.log_every_steps": 1, "eval.every_steps": 1,
                               "checkpoint.keep": 5, "mesh.data": 2, "mesh.fsdp": -1}), tmp_path)
    loop.train(tiny_config(**{"train.steps": 3, "resume_allow": "train"}), tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 3
    with pytest.raises(ConfigError, match=r"resume_allow='trian': 'trian' is not a config key"):
        loop.train(tiny_config(**{"resume_allow": "trian"}), tmp_path)


def test_config_json_is_written_only_once_the_run_has_started(tmp_path):
    bad = tiny_config(**{"train.seq_len": 100000})  # fails in setup: longer than the model's context
    with pytest.raises(ValueError, match="max_seq_len"):
        loop.train(bad, tmp_path)
    assert not (tmp_path / "config.json").exists() and read_status(tmp_path) is None


def test_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(**{"train.steps": 30, "optimizer.lr": 1e12, "optimizer.clip_norm": 0.0,
                            "train.log_every_steps": 1, "checkpoint.every_steps": 1})
    with pytest.raises(FloatingPointError, match=r"at step (\d+)") as err:
        loop.train(config, tmp_path)
    bad_step = int(err.value.args[0].split("at step ")[1].split(";")[0])
    latest = Checkpointer(tmp_path, 1, 3).latest_step()
    assert latest == bad_step - 1
    status = read_status(tmp_path)
    assert (status["state"], status["step"]) == ("failed", latest) and "FloatingPointError" in status["error"]
    s = loop.setup(config)
    with s.activate():
        state, _ = Checkpointer(tmp_path, 1, 3).restore(latest, s.abstract_state)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))


def test_half_written_checkpoint_is_never_the_latest(tmp_path):
    loop.train(tiny_config(**{"train.steps": 2, "checkpoint.every_steps": 1}), tmp_path)
    (tmp_path / "checkpoints" / "7.orbax-checkpoint-tmp-1234").mkdir()
    assert Checkpointer(tmp_path, 1, 3).latest_step() == 2


# ---------------------------------------------------------------------------------------------- subprocess runs


def _train_cmd(workdir, *overrides):
    return [sys.executable, "-m", "pivot_jax.train", "--config", str(REPO / "configs" / "tiny.py"),
            "--workdir", str(workdir), *overrides]


def _env():
    return {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}


RESUME_FLAGS = ("--config.train.steps=24", "--config.train.log_every_steps=1", "--config.checkpoint.every_steps=4",
                "--config.eval.every_steps=0", "--config.train.seq_len=32")


def _last_losses(workdir):
    losses = {}
    for line in (workdir / "metrics.jsonl").read_text().split("\n"):
        record = json.loads(line) if line else {}
        if "loss" in record:  # rows of evaluations redone on resume hold no train loss
            losses[record["step"]] = record["loss"]
    return [losses[k] for k in sorted(losses)]


def _final_params(workdir, step):
    config = tiny_config(**{"train.seq_len": 32})
    s = loop.setup(config, jax.devices()[:2])
    with s.activate():
        state, data = Checkpointer(workdir, 4, 3).restore(step, s.abstract_state)
    return state, data


@pytest.mark.slow
def test_sigkill_then_restart_is_bit_identical(tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(straight, *RESUME_FLAGS), check=True, env=_env(), capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed, *RESUME_FLAGS), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "8").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps_before = Checkpointer(killed, 4, 3).latest_step()
    assert steps_before is not None and steps_before < 24, "the run must die before its end"
    subprocess.run(_train_cmd(killed, *RESUME_FLAGS), check=True, env=_env(), capture_output=True)

    assert _last_losses(killed) == _last_losses(straight)
    a, data_a = _final_params(straight, 24)
    b, data_b = _final_params(killed, 24)
    assert data_a == data_b == {"batch_index": 24}
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    flags = ("--config.train.steps=4", "--config.train.log_every_steps=1", "--config.mesh.data=2",
             "--config.mesh.fsdp=4", "--config.train.seq_len=32", "--config.eval.every_steps=0")
    one = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    subprocess.run(_train_cmd(tmp_path / "one", *flags), check=True, env=one, capture_output=True)

    port = _free_port()
    half = {**one, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    procs = [subprocess.Popen(_train_cmd(tmp_path / "two", *flags, f"--coordinator_address=127.0.0.1:{port}",
                                         "--num_processes=2", f"--process_id={i}"),
                              env=half, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    np.testing.assert_allclose(_last_losses(tmp_path / "two"), _last_losses(tmp_path / "one"), rtol=1e-5)
    assert Checkpointer(tmp_path / "two", 0, 3).latest_step() == 4


def test_unknown_override_or_wrong_type_stops_before_running(tmp_path):
    for flag, message in (("--config.train.stepz=3", "stepz"), ("--config.train.steps=many", "many")):
        result = subprocess.run(_train_cmd(tmp_path / "w", flag), env=_env(), capture_output=True, text=True)
        assert result.returncode != 0
        assert message in result.stderr
        assert not (tmp_path / "w").exists()


def test_progress_line_metrics_and_tensorboard(tmp_path):
    result = subprocess.run(_train_cmd(tmp_path, "--config.train.steps=6", "--config.train.log_every_steps=3",
                                       "--config.eval.every_steps=4"),
                            env=_env(), capture_output=True, text=True, check=True)
    line = next(l for l in result.stderr.splitlines() if "step 4/6" in l)
    for part in ("loss", "eval", "lr", "tok/s", "TFLOP/s/device", "MFU n/a (cpu)", "ETA"):
        assert part in line, line
    records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 4, 6]  # evaluation steps are logged whatever log_every_steps is
    assert {"step", "loss", "lr", "tokens_per_sec", "tflops_per_device"} <= set(records[0])
    assert ["eval_loss" in r for r in records] == [False, True, False]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 6


@pytest.mark.slow
def test_trainer_consumes_seqio_mixture_and_resumes_it_exactly(tmp_path, smollm2_gguf):
    import shutil

    config = tiny_config(**{"data.source": "seqio", "data.method": "coit", "data.langs": "es",
                            "data.tokenizer": f"gguf:{smollm2_gguf}", "model.vocab_size": 49152,
                            "train.seq_len": 64, "train.steps": 6, "train.log_every_steps": 1,
                            "checkpoint.every_steps": 3, "eval.every_steps": 3, "eval.steps": 2})
    last = loop.train(config, tmp_path / "a")
    records = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 7))
    assert records[-1]["loss"] < records[0]["loss"] and np.isfinite(last["eval_loss"])

    # A run that died after its step-3 checkpoint, restarted: the same data and the same numbers.
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "6")
    (tmp_path / "b" / "metrics.jsonl").write_text("")
    loop.train(config, tmp_path / "b")
    assert _last_losses(tmp_path / "b") == [r["loss"] for r in records[3:]]
    s = loop.setup(config)
    with s.activate():
        a, data_a = Checkpointer(tmp_path / "a", 3, 3).restore(6, s.abstract_state)
        b, data_b = Checkpointer(tmp_path / "b", 3, 3).restore(6, s.abstract_state)
    assert data_a == data_b == {"batch_index": 6}
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a["params"],
                 b["params"])


def test_epochs_set_steps_from_examples_and_measured_packing(smollm2_gguf):
    config = tiny_config(**{"data.source": "seqio", "data.method": "coit", "data.langs": "ko",
                            "data.tokenizer": f"gguf:{smollm2_gguf}", "model.vocab_size": 49152,
                            "train.seq_len": 512, "model.max_seq_len": 512, "train.epochs": 2.0,
                            "mesh.data": 1})
    s = loop.setup(config, jax.devices()[:1])
    examples = 1285  # CLDR en->ko training pairs (tests/test_cldr.py pins the split)
    per_row_lower, per_row_upper = 4, 9  # 60-95 token examples (the Alpaca prompt is ~60) in 512-token rows
    assert 2 * examples / (8 * per_row_upper) <= s.config.train.steps <= 2 * examples / (8 * per_row_lower)
    with pytest.raises(ValueError, match="epochs"):
        loop.setup(tiny_config(**{"train.epochs": 1.0}))


def test_bf16_compute_keeps_float32_master_weights(single_device_run):
    losses, state = run_steps(tiny_config(**{"mesh.data": 1, "model.dtype": "bfloat16",
                                             "model.remat_policy": "dots_no_batch"}), jax.devices()[:1], 5)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state["params"]))
    np.testing.assert_allclose(losses, single_device_run[0], rtol=0.02)


@pytest.mark.slow
def test_generation_eval_at_checkpoints(tmp_path, smollm2_gguf):
    config = tiny_config(**{"data.source": "seqio", "data.method": "coit", "data.langs": "es",
                            "data.tokenizer": f"gguf:{smollm2_gguf}", "model.vocab_size": 49152,
                            "train.seq_len": 128, "train.steps": 2, "train.log_every_steps": 1,
                            "eval.generate_every_steps": 2, "eval.generate_at_start": True,
                            "eval.generate_config": f"{REPO}/configs/eval/cldr.py:tgt=es,limit=4"})
    last = loop.train(config, tmp_path)
    assert {"gen/bleu", "gen/chrf++", "gen/language_fidelity"} <= set(last)
    index = [json.loads(l) for l in (tmp_path / "results_index.jsonl").read_text().splitlines()]
    assert {r["step"] for r in index} == {0, 2} and {r["metric"] for r in index} >= {"bleu", "chrf++"}
    for step in (0, 2):
        assert len((tmp_path / "eval" / f"step_{step}" / "cldr_en-es_alpaca_greedy" / "predictions.jsonl")
                   .read_text().splitlines()) == 4
    logged = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged[0]["step"] == 0 and "gen/chrf++" in logged[0] and "loss" not in logged[0]
    report = (tmp_path / "report.md").read_text()
    assert "| chrf++ |" in report and "@ step 0" in report and "@ step 2" in report
    assert (tmp_path / "report.png").stat().st_size > 0
    loop.train(config, tmp_path)  # finished: resuming evaluates nothing again
    assert len((tmp_path / "results_index.jsonl").read_text().splitlines()) == len(index)


def test_trained_run_loads_as_a_model(tmp_path):
    """`run:WORKDIR[@STEP]`: a finished run's weights for evaluate / generate / export, without optimizer state."""
    import pivot_jax

    config = tiny_config(**{"train.steps": 4, "checkpoint.every_steps": 2, "model.dtype": "bfloat16"})
    loop.train(config, tmp_path)
    s = loop.setup(config)
    checkpointer = Checkpointer(tmp_path, 0, 3, async_save=False)
    with s.activate():
        state, _ = checkpointer.restore(4, s.abstract_state)
        early, _ = checkpointer.restore(2, s.abstract_state)
    checkpointer.close()
    loaded = pivot_jax.load_pretrained(f"run:{tmp_path}")
    assert loaded.config.dtype == "bfloat16" and loaded.tokenizer is None  # synthetic data: no tokenizer
    for got, want in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(state["params"])):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    at_2 = pivot_jax.load_pretrained(f"run:{tmp_path}@2").params
    for got, want in zip(jax.tree.leaves(at_2), jax.tree.leaves(early["params"])):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 3 \(saved steps: \[2, 4\]\)"):
        pivot_jax.load_pretrained(f"run:{tmp_path}@3")
    with pytest.raises(FileNotFoundError, match="not a trainer workdir"):
        pivot_jax.load_pretrained(f"run:{tmp_path / 'checkpoints'}")


def test_evaluations_at_the_end_and_a_baseline_that_trains_nothing(tmp_path):
    last = loop.train(tiny_config(**{"train.steps": 3, "eval.at_end": True}), tmp_path / "end")
    rows = [json.loads(line) for line in (tmp_path / "end" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval_loss" in r] == [3] and "eval_loss" in last  # only at the last step

    base = loop.train(tiny_config(**{"train.steps": 0, "eval.at_end": True}), tmp_path / "base")
    rows = [json.loads(line) for line in (tmp_path / "base" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0] and base == {"eval_loss": rows[0]["eval_loss"]}
    assert read_status(tmp_path / "base")["state"] == "finished"
    assert not (tmp_path / "base" / "checkpoints").exists() or not list((tmp_path / "base" / "checkpoints").iterdir())
    with pytest.raises(ConfigError, match="train.steps=0 trains nothing and evaluates nothing"):
        loop.train(tiny_config(**{"train.steps": 0}), tmp_path / "nothing")
    with pytest.raises(ConfigError, match="'amount' is not KEY=VALUE"):
        loop.train(tiny_config(**{"eval.tags": "language=es,amount"}), tmp_path / "tags")
