"""The path layer: appends and atomic writes on a local disk and on an object store, and the trainer, evaluate,
report and a sweep with `gs://` directories (a local GCS emulator: tests/gcs_emulator.py)."""

import json
import os

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_sweep import write_tiny_sweep

from pivot_jax.checkpoint import saved_steps
from pivot_jax.config import base_config, load_config_file
from pivot_jax.eval.run import evaluate
from pivot_jax.jsonl import Appender, read_jsonl
from pivot_jax.launch.local import LocalExecutor
from pivot_jax.paths import AppendFile, absolute, as_path, write_text_atomic
from pivot_jax.report import main as report_command
from pivot_jax.results import read_results
from pivot_jax.run_status import read_status
from pivot_jax.sweep.collect import collect
from pivot_jax.sweep.runner import run_sweep
from pivot_jax.sweep.spec import load_sweep
from pivot_jax.trainer import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=["local", "gs"])
def directory(request, tmp_path):
    return as_path(tmp_path) if request.param == "local" else request.getfixturevalue("gcs_workdir")


def test_appends_survive_reopening_and_show_at_flush(directory):
    path = directory / "sub" / "log.jsonl"
    for step in (1, 2):
        with Appender(path) as out:
            out.write({"step": step})
    out = AppendFile(path)
    out.write(b'{"step": 3}\n')
    out.flush()  # visible before close (object stores: the object is rewritten)
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3]
    out.close()
    path.write_bytes(path.read_bytes() + b'{"st')  # a write cut short
    with Appender(path) as out:
        out.write({"step": 4})
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3, 4]


def test_atomic_write_replaces_and_leaves_no_temporary(directory):
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(directory / "config.json", "a")
    write_text_atomic(directory / "config.json", "b")
    assert (directory / "config.json").read_text() == "b"
    assert [p.name for p in directory.iterdir()] == ["config.json"]


def test_urls_stay_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(absolute("gs://bucket/run")) == "gs://bucket/run"  # epath's .absolute() gives /cwd/gs:/bucket/run
    assert str(absolute("runs/a")) == str(tmp_path / "runs" / "a")


def tiny(steps, **overrides):
    c = base_config()
    c.model.preset = "tiny"
    c.train.steps, c.train.global_batch_size, c.train.seq_len, c.train.log_every_steps = steps, 8, 32, 1
    c.checkpoint.every_steps, c.checkpoint.async_save = 2, True
    c.eval.every_steps, c.eval.steps = 2, 1
    c.update(overrides)
    return c


def test_trainer_runs_and_resumes_in_a_bucket(gcs_workdir, gcs_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written locally by mistake would land here
    loop.train(tiny(4), str(gcs_workdir))
    assert saved_steps(gcs_workdir) == [2, 4]
    assert read_status(gcs_workdir)["state"] == "finished"
    loop.train(tiny(6, resume_allow="train.steps"), str(gcs_workdir))  # longer: resumes from the bucket's step 4
    assert saved_steps(gcs_workdir) == [2, 4, 6] and read_status(gcs_workdir)["step"] == 6
    rows = read_jsonl(gcs_workdir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and all("eval_loss" in r for r in rows[1::2])
    assert json.loads((gcs_workdir / "config.json").read_text())["train"]["steps"] == 6
    events = sorted((gcs_workdir / "tensorboard").iterdir())
    assert len(events) == 2  # one file per start, as TensorBoard expects
    (tmp_path / "tb").mkdir()
    for event in events:
        (tmp_path / "tb" / event.name).write_bytes(event.read_bytes())
    scalars = EventAccumulator(str(tmp_path / "tb")).Reload().Scalars("loss")
    assert [s.step for s in scalars] == [1, 2, 3, 4, 5, 6]
    assert [s.value for s in scalars] == pytest.approx([r["loss"] for r in rows])
    assert sorted(os.listdir(tmp_path)) == ["tb"]  # nothing under ./gs: or elsewhere on the local disk
    prefix = str(gcs_workdir).removeprefix("gs://") + "/"
    names = {o.removeprefix(prefix) for o in gcs_server.fs().find(str(gcs_workdir))}
    assert {"config.json", "status.json", "metrics.jsonl", "checkpoints/6/state/_METADATA"} <= names


@pytest.mark.slow
def test_generation_evaluations_and_report_in_a_bucket(gcs_workdir, tmp_path, monkeypatch, capsys):
    """The quickstart config in a bucket: evaluations during training, `run:gs://` weights evaluated again into
    the bucket, and the report read from and written to it."""
    monkeypatch.chdir(tmp_path)
    config = load_config_file(f"{REPO}/configs/quickstart.py:langs=es,steps=2")
    config.train.log_every_steps, config.eval.steps = 1, 1
    config.eval.generate_config = f"{REPO}/configs/eval/cldr.py:tgt=es,limit=2"
    loop.train(config, str(gcs_workdir))
    index = read_results(gcs_workdir / "results_index.jsonl")
    assert {r.step for r in index} == {0, 2} and {"chrf++", "language_fidelity"} <= {r.metric for r in index}
    assert (gcs_workdir / "eval" / "step_2" / "cldr_en-es_alpaca_greedy" / "predictions.jsonl").exists()
    assert (gcs_workdir / "report.png").read_bytes()[:4] == b"\x89PNG"

    eval_cfg = load_config_file(f"{REPO}/configs/eval/cldr.py:tgt=es,limit=2")
    eval_cfg.max_new_tokens = 4
    evaluate(eval_cfg, f"run:{gcs_workdir}", gcs_workdir / "again", gcs_workdir / "again" / "index.jsonl",
             {"pairs": "0"})
    again = read_results(gcs_workdir / "again" / "index.jsonl")
    assert again[0].run == f"run:{gcs_workdir}" and again[0].tags == {"pairs": "0"}
    assert json.loads((gcs_workdir / "again" / "results.json").read_text())["model"] == f"run:{gcs_workdir}"

    report_command([str(gcs_workdir), "--output", str(gcs_workdir / "report_again")])
    assert "@ step 0" in capsys.readouterr().out
    assert "| chrf++ |" in (gcs_workdir / "report_again" / "report.md").read_text()
    assert os.listdir(tmp_path) == []


def test_a_sweep_runs_and_collects_in_a_bucket(gcs_workdir, tmp_path):
    """A sweep directory on GCS (what the TPU backend needs): points train there, sweep.json and the results
    index are kept there, and `collect` reads the points back from it."""
    sweep_file = write_tiny_sweep(tmp_path, name="gcs", axes='[("seed", [0])]', steps=2)
    sweep = load_sweep(sweep_file)
    summary = run_sweep(sweep, gcs_workdir, LocalExecutor(1), poll_s=0.2)
    assert summary.done == ["gcs-seed0"] and not summary.failed
    assert json.loads((gcs_workdir / "sweep.json").read_text())["points"]["gcs-seed0"]["status"] == "done"
    csv_path, _, rows = collect(load_sweep(sweep_file), str(gcs_workdir))
    assert str(csv_path).startswith("gs://") and rows == 1
    assert csv_path.read_text().splitlines()[1].startswith("gcs-seed0,,,0,eval_loss,")
