"""`python -m pivot_jax.launch xpk` against a fake xpk (tests/fake_cloud): the workload command printed or run, its
--command parsed back to the exact argument list, secrets by name only, and a sweep point's training command."""

import shlex
import sys

import pytest
from fake_cloud import FakeCloud

from pivot_jax.launch.__main__ import main
from pivot_jax.launch.xpk import workload_name

TRAIN = ["python", "-m", "pivot_jax.train", "--config", "configs/quickstart.py", "--workdir", "gs://b/run1",
         "--config.data.langs=es;rm -rf /", "$(touch pwned)"]
BASE = ["xpk", "--cluster", "c1", "--name", "coit-es", "--accelerator", "v5p-64", "--docker_image", "gcr.io/p/img:1"]


def _command(argv):
    return next(a.split("=", 1)[1] for a in argv if a.startswith("--command="))


def test_prints_the_workload_and_runs_nothing(tmp_path, monkeypatch, capsys):
    cloud = FakeCloud(tmp_path, monkeypatch)
    main([*BASE, "--num_slices", "2", "--project", "p1", "--zone", "us-east5-a", "--", *TRAIN])
    line, = capsys.readouterr().out.splitlines()
    argv = shlex.split(line.removeprefix("$ "))
    assert argv[:8] == ["xpk", "workload", "create", "--cluster=c1", "--workload=coit-es", "--tpu-type=v5p-64",
                         "--num-slices=2", "--docker-image=gcr.io/p/img:1"]
    assert argv[8].startswith("--command=") and argv[9:] == ["--project=p1", "--zone=us-east5-a"]
    assert shlex.split(_command(argv)) == TRAIN  # the container's shell gets each argument literally
    assert cloud.calls() == []


def test_run_runs_it_and_dry_run_does_not(tmp_path, monkeypatch, capsys):
    cloud = FakeCloud(tmp_path, monkeypatch)
    main([*BASE, "--run", "--dry_run", "--", *TRAIN])
    assert cloud.calls() == []
    main([*BASE, "--run", "--retries", "3", "--priority", "high", "--", *TRAIN])
    argv, = cloud.calls()
    assert argv[:3] == ["xpk", "workload", "create"] and shlex.split(_command(argv)) == TRAIN
    assert argv[-3:] == ["--priority=high", "--max-restarts=3", "--restart-on-user-code-failure"]
    assert "xpk workload delete --cluster=c1 --workload=coit-es" in capsys.readouterr().out


def test_secrets_go_by_name(tmp_path, monkeypatch, capsys):
    secret = "wandb-s3cr3t"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    cloud = FakeCloud(tmp_path, monkeypatch)
    main([*BASE, "--run", "--env_from_local", "WANDB_API_KEY", "--logdir", str(tmp_path / "logs"), "--", *TRAIN])
    entry, = cloud.entries()
    assert f"--env-file={tmp_path / 'logs' / 'xpk.env'}" in entry["argv"]
    assert entry["env"] == {"WANDB_API_KEY": True}  # xpk found the value in its own environment
    assert (tmp_path / "logs" / "xpk.env").read_text() == "WANDB_API_KEY\n"
    assert not any(secret in arg for arg in entry["argv"]) and secret not in "".join(capsys.readouterr())


def test_a_sweep_point(tmp_path, monkeypatch, capsys):
    FakeCloud(tmp_path, monkeypatch)
    sweep = "configs/sweeps/quickstart.py:langs=es,amounts=0+75"
    point = "quickstart-es-pairs75-seed0"
    base = [a for a in BASE if a not in ("--name", "coit-es")]
    main([*base, "--sweep", sweep, "--workdir", "gs://b/sweep", "--point", point])
    argv = shlex.split(capsys.readouterr().out.removeprefix("$ "))
    assert f"--workload={point}" in argv
    command = shlex.split(_command(argv))
    assert command[:3] == ["python", "-m", "pivot_jax.train"] and sys.executable not in command
    assert command[command.index("--config") + 1] == "configs/quickstart.py:langs=es"  # relative to the checkout
    assert command[command.index("--workdir") + 1] == f"gs://b/sweep/points/{point}"
    with pytest.raises(SystemExit):
        main([*base, "--sweep", sweep, "--workdir", str(tmp_path), "--point", point])
    assert "must be on GCS" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    ([*BASE[:4], "Coit_ES", *BASE[5:], "--", "python"], "--name 'Coit_ES'"),
    ([*BASE[:6], "v5e-16", *BASE[7:], "--", "python"], "v5litepod"),
    (BASE, "no command to run"),
    (["xpk", "--name", "a", "--", "python"], "needs --cluster"),
])
def test_errors_name_the_flag(tmp_path, monkeypatch, capsys, argv, message):
    FakeCloud(tmp_path, monkeypatch)
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


def test_workload_names_from_points():
    assert workload_name("Quickstart_es.pairs75") == "quickstart-es-pairs75"
    assert workload_name("7x") == "p-7x" and len(workload_name("a" * 80)) == 40
