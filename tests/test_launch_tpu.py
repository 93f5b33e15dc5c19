"""`python -m pivot_jax.launch tpu` against a fake gcloud (tests/fake_cloud): the exact commands for single-host
slices, pod slices and queued resources; fail fast; preemption retries; secrets kept out of every argument list
and printout; shell metacharacters arriving literally; dry runs that run nothing; and the `tpu` sweep backend."""

import json
import os
import shlex
import stat
import subprocess
import time

import pytest
from etils import epath
from fake_cloud import FakeCloud

from pivot_jax.errors import ConfigError
from pivot_jax.launch import remote
from pivot_jax.launch.__main__ import main
from pivot_jax.launch.accelerators import tpu_type
from pivot_jax.launch.backends import make_executor
from pivot_jax.launch.job import JobState

ZONE = "us-east5-a"
TRAIN = ["python", "-m", "pivot_jax.train", "--config", "configs/quickstart.py", "--workdir", "gs://b/run1",
         "--config.data.langs=es;rm -rf /"]  # a value with shell metacharacters: must arrive as one argument
SECRET = "hf_s3cr3t-VALUE"


@pytest.fixture
def checkout(tmp_path):
    """A clean git checkout with an origin remote, its HEAD on a remote-tracking branch."""
    repo = tmp_path / "checkout"
    repo.mkdir()
    git = lambda *args: subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (repo / "README.md").write_text("x\n")
    git("add", "README.md")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    git("remote", "add", "origin", "https://example.com/pivot_jax.git")
    git("update-ref", "refs/remotes/origin/main", "HEAD")
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    return repo, commit


def tpu(action, *flags, name="run1", accelerator="v5p-8", command=()):
    argv = ["tpu", action, "--name", name, "--zone", ZONE, *flags]
    argv += ["--accelerator", accelerator] if accelerator else []
    return main([*argv, "--poll_s", "0", *(["--", *command] if command else [])])


def ssh_calls(calls, contains=""):
    return [c for c in calls if c[3:5] == ["tpu-vm", "ssh"] and contains in _command(c)]


def _command(argv):
    return next((a.split("=", 1)[1] for a in argv if a.startswith("--command=")), "")


def _exec_argv(argv):
    """The argument list that the remote script's final `exec` runs, as the worker's shell parses it."""
    words = shlex.split(_command(argv))
    return words[words.index("exec") + 1:]


# --- accelerator types ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, hosts, chips, devices", [
    ("v5p-8", 1, 4, "/dev/vfio/*"), ("v5p-64", 8, 32, "/dev/vfio/*"), ("v4-8", 1, 4, "/dev/accel*"),
    ("v4-32", 4, 16, "/dev/accel*"), ("v6e-8", 1, 8, "/dev/vfio/*"), ("v6e-4", 1, 4, "/dev/vfio/*"),
    ("v6e-256", 64, 256, "/dev/vfio/*"), ("v5litepod-8", 1, 8, "/dev/vfio/*"), ("v5litepod-16", 4, 16, "/dev/vfio/*"),
])
def test_hosts_and_chips_per_generation(name, hosts, chips, devices):
    t = tpu_type(name)
    assert (t.hosts, t.chips, t.devices) == (hosts, chips, devices)


@pytest.mark.parametrize("name, message", [
    ("v5p-12", "multiple of 8"), ("v6e-12", "multiple of 4 from 16"), ("v5e-16", "v5litepod"), ("h100-8", "not a TPU"),
])
def test_unknown_types_are_errors_naming_them(name, message):
    with pytest.raises(ConfigError, match=message):
        tpu_type(name)


# --- create -----------------------------------------------------------------------------------------------------

def test_single_host_create_setup_run(tmp_path, monkeypatch, checkout, capsys):
    cloud = FakeCloud(tmp_path, monkeypatch, create_states=["CREATING", "CREATING", "READY"])
    repo, commit = checkout
    tpu("create")
    assert cloud.calls() == [
        ["gcloud", "compute", "tpus", "tpu-vm", "describe", "run1", f"--zone={ZONE}", "--format=json"],
        ["gcloud", "compute", "tpus", "tpu-vm", "create", "run1", f"--zone={ZONE}", "--accelerator-type=v5p-8",
         "--version=v2-alpha-tpuv5"],
        *[["gcloud", "compute", "tpus", "tpu-vm", "describe", "run1", f"--zone={ZONE}", "--format=json"]] * 3]
    logdir = tmp_path / "logs"
    tpu("setup", "--source_dir", str(repo), "--logdir", str(logdir))
    setup, = ssh_calls(cloud.calls(), "git clone")
    assert setup[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "run1", f"--zone={ZONE}", "--worker=0"]
    words = shlex.split(_command(setup))
    assert "https://example.com/pivot_jax.git" in words and commit in words
    assert "-e" in words and any(w.startswith(".[tpu]") for w in words)
    tpu("run", "--logdir", str(logdir), command=TRAIN)
    run, = ssh_calls(cloud.calls(), "exec ")
    assert _exec_argv(run) == TRAIN and run[-1] == "--quiet"
    assert "ok from worker 0" in capsys.readouterr().out  # worker 0 on the terminal
    assert "ok from worker 0" in (logdir / "worker-0.log").read_text()


def test_spot_and_project_and_runtime_version(tmp_path, monkeypatch):
    cloud = FakeCloud(tmp_path, monkeypatch)
    tpu("create", "--spot", "--project", "p1", "--runtime_version", "tpu-ubuntu2204-base", accelerator="v4-8")
    assert cloud.calls()[1] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "run1", f"--zone={ZONE}",
                                "--project=p1", "--accelerator-type=v4-8", "--version=tpu-ubuntu2204-base", "--spot"]


def test_a_ready_slice_is_reused_and_a_preempted_one_recreated(tmp_path, monkeypatch):
    cloud = FakeCloud(tmp_path, monkeypatch, nodes={"run1": ["READY"]})
    tpu("create")
    assert [c[4] for c in cloud.calls()] == ["describe"]
    cloud.set(nodes={"run1": ["PREEMPTED"]})
    tpu("create")
    assert [c[4] for c in cloud.calls()[1:]] == ["describe", "delete", "create", "describe"]


@pytest.mark.parametrize("flags, track, tier", [
    (["--queued", "--reserved"], [], ["--reserved"]),
    (["--queued", "--spot"], [], ["--spot"]),
    (["--queued", "--best_effort"], ["alpha"], ["--best-effort"]),
    (["--queued"], [], []),
])
def test_queued_resources(tmp_path, monkeypatch, flags, track, tier):
    cloud = FakeCloud(tmp_path, monkeypatch, queued_create_states=["WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"])
    tpu("create", *flags, accelerator="v5p-64")
    calls = cloud.calls()
    assert calls[1] == ["gcloud", *track, "compute", "tpus", "queued-resources", "create", "run1", f"--zone={ZONE}",
                        "--accelerator-type=v5p-64", "--runtime-version=v2-alpha-tpuv5", "--node-id=run1", *tier]
    polls = [c for c in calls[2:] if c[3:5] == ["queued-resources", "describe"]]
    assert len(polls) == 3  # waiting, provisioning, active
    assert calls[-1][3:5] == ["tpu-vm", "describe"]  # and its node is not preempted


def test_a_failed_queued_resource_is_deleted_and_created_again(tmp_path, monkeypatch):
    cloud = FakeCloud(tmp_path, monkeypatch, queued={"run1": ["FAILED"]}, nodes={"run1": ["READY"]})
    tpu("create", "--queued", "--spot")
    verbs = [tuple(c[3:5]) for c in cloud.calls()]
    assert verbs[:3] == [("queued-resources", "describe"), ("queued-resources", "delete"),
                         ("queued-resources", "create")]
    assert cloud.calls()[1][-2:] == ["--force", "--quiet"]


def test_a_queued_resource_that_fails_while_waiting_is_an_error(tmp_path, monkeypatch, capsys):
    FakeCloud(tmp_path, monkeypatch, queued_create_states=["WAITING_FOR_RESOURCES", "FAILED"])
    with pytest.raises(SystemExit) as e:
        tpu("create", "--queued")
    assert e.value.code == 1 and "run1 became FAILED while waiting for ACTIVE" in capsys.readouterr().err


def test_the_wait_is_bounded(tmp_path, monkeypatch, capsys):
    FakeCloud(tmp_path, monkeypatch, create_states=["CREATING"])
    with pytest.raises(SystemExit):
        tpu("create", "--wait_minutes", "0")
    err = capsys.readouterr().err
    assert "run1 is not READY after " in err and "(last state CREATING)" in err and "--wait_minutes" in err


def test_capacity_flag_conflicts(tmp_path, monkeypatch, capsys):
    FakeCloud(tmp_path, monkeypatch)
    for flags, message in [(["--reserved"], "--reserved needs --queued"),
                           (["--queued", "--spot", "--best_effort"], "choose one capacity tier")]:
        with pytest.raises(SystemExit):
            tpu("create", *flags)
        assert message in capsys.readouterr().err


# --- run on all workers -----------------------------------------------------------------------------------------

def test_pod_slice_runs_on_every_worker_with_its_own_log(tmp_path, monkeypatch, capsys):
    cloud = FakeCloud(tmp_path, monkeypatch, nodes={"run1": ["READY"]})
    tpu("run", "--logdir", str(tmp_path / "logs"), accelerator="v5p-64", command=TRAIN)
    runs = ssh_calls(cloud.calls(), "exec ")
    assert sorted(c[7] for c in runs) == [f"--worker={i}" for i in range(8)]
    assert all(_exec_argv(c) == TRAIN for c in runs)
    script = _command(runs[0])
    assert "sudo lsof -t /dev/vfio/*" in script and "sudo rm -f /tmp/libtpu_lockfile" in script
    assert script.index("libtpu_lockfile") < script.index("exec ")  # the TPU is freed before the command
    for i in range(8):
        assert f"ok from worker {i}" in (tmp_path / "logs" / f"worker-{i}.log").read_text()
    out = capsys.readouterr().out
    assert "ok from worker 0" in out and "ok from worker 1" not in out


def test_v4_frees_accel_devices(tmp_path, monkeypatch):
    cloud = FakeCloud(tmp_path, monkeypatch, nodes={"run1": ["READY"]})
    tpu("run", "--logdir", str(tmp_path / "logs"), accelerator="v4-16", command=TRAIN)
    runs = ssh_calls(cloud.calls(), "exec ")
    assert len(runs) == 2 and all("sudo lsof -t /dev/accel*" in _command(c) for c in runs)


def test_a_failing_worker_stops_the_others(tmp_path, monkeypatch, capsys):
    cloud = FakeCloud(tmp_path, monkeypatch, nodes={"run1": ["READY"]}, ssh=[
        {"worker": "2", "contains": "exec ", "output": "worker 2 breaks", "sleep": 0.5, "exit": 1},
        {"contains": "exec ", "output": "training", "sleep": 60}])
    start = time.monotonic()
    with pytest.raises(SystemExit) as e:
        tpu("run", "--logdir", str(tmp_path / "logs"), accelerator="v4-32", command=TRAIN)
    assert time.monotonic() - start < 30 and e.value.code == 1
    err = capsys.readouterr().err
    assert f"worker 2 failed (exit status 1); its log: {tmp_path / 'logs' / 'worker-2.log'}" in err
    assert sorted(e["worker"] for e in cloud.events("terminated")) == ["0", "1", "3"]
    stop, = [c for c in ssh_calls(cloud.calls(), "pkill") if "--worker=all" in c]
    assert "pkill -KILL -P" in _command(stop) and "sudo lsof -t /dev/accel*" in _command(stop)
    assert "worker 2 breaks" in (tmp_path / "logs" / "worker-2.log").read_text()


def test_preemption_recreates_sets_up_and_reruns(tmp_path, monkeypatch, checkout, capsys):
    repo, _ = checkout
    cloud = FakeCloud(tmp_path, monkeypatch, nodes={"run1": ["READY"]}, create_states=["CREATING", "READY"], ssh=[
        {"worker": "0", "contains": "exec ", "times": 1, "exit": 255, "set_node": "PREEMPTED", "sleep": 0.2},
        {"worker": "1", "contains": "exec ", "times": 1, "sleep": 30}])
    tpu("run", "--retries", "2", "--source_dir", str(repo), "--logdir", str(tmp_path / "logs"),
        accelerator="v5p-16", command=TRAIN)
    steps = []
    for c in cloud.calls():
        step = "run" if "exec " in _command(c) else "setup" if "git clone" in _command(c) else \
            "stop" if "pkill" in _command(c) else c[4]
        if not steps or steps[-1] != step:
            steps.append(step)
    assert steps == ["run", "stop", "describe", "delete", "create", "describe", "setup", "run"]
    assert len(ssh_calls(cloud.calls(), "exec ")) == 4  # 2 workers, 2 attempts
    log = (tmp_path / "logs" / "worker-0.log").read_text()
    assert "=== attempt 1" in log and "=== attempt 2" in log


def test_a_failure_on_a_ready_slice_is_not_retried(tmp_path, monkeypatch, capsys):
    cloud = FakeCloud(tmp_path, monkeypatch, nodes={"run1": ["READY"]},
                      ssh=[{"contains": "exec ", "exit": 3}])
    with pytest.raises(SystemExit):
        tpu("run", "--retries", "2", "--allow_dirty", "--repo", "https://x/y.git", "--logdir", str(tmp_path / "l"),
            command=TRAIN)
    assert "so this is not a preemption: not retried" in capsys.readouterr().err
    assert len(ssh_calls(cloud.calls(), "exec ")) == 1


def test_a_preempted_trainer_on_a_ready_slice_is_rerun(tmp_path, monkeypatch, checkout):
    repo, _ = checkout
    cloud = FakeCloud(tmp_path, monkeypatch, nodes={"run1": ["READY"]},
                      ssh=[{"contains": "exec ", "exit": 75, "times": 1}])
    tpu("run", "--retries", "1", "--source_dir", str(repo), "--logdir", str(tmp_path / "l"), command=TRAIN)
    assert len(ssh_calls(cloud.calls(), "exec ")) == 2
    assert not [c for c in cloud.calls() if c[4] in ("delete", "create")]


# --- secrets and quoting ----------------------------------------------------------------------------------------

def test_secrets_never_reach_an_argument_list_or_the_terminal(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    cloud = FakeCloud(tmp_path, monkeypatch, nodes={"run1": ["READY"]})
    tpu("run", "--env_from_local", "HF_TOKEN", "--logdir", str(tmp_path / "logs"), accelerator="v5p-16",
        command=TRAIN)
    tpu("run", "--env_from_local", "HF_TOKEN", "--dry_run", "--logdir", str(tmp_path / "logs"), command=TRAIN)
    assert not any(SECRET in arg for argv in cloud.calls() for arg in argv)
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err + caplog.text
    scp, = [c for c in cloud.calls() if c[4] == "scp"]
    remote_name = scp[6].split(":", 1)[1]
    assert scp[5].startswith("/") and not os.path.exists(scp[5])  # the local file is gone
    assert cloud.events("scp")[0]["mode"] == "0o600" and "--worker=all" in scp
    copied = cloud.remote / remote_name
    assert copied.read_text() == f"HF_TOKEN={SECRET}\n" and stat.S_IMODE(copied.stat().st_mode) == 0o600
    for run in ssh_calls(cloud.calls(), "exec "):
        script = _command(run)
        assert f'set -a; . "$HOME"/{remote_name}; set +a; rm -f "$HOME"/{remote_name}' in script
        assert script.index(remote_name) < script.index("exec ")


def test_a_missing_secret_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    FakeCloud(tmp_path, monkeypatch, nodes={"run1": ["READY"]})
    with pytest.raises(SystemExit):
        tpu("run", "--env_from_local", "WANDB_API_KEY", command=TRAIN)
    assert "--env_from_local WANDB_API_KEY: not set in this environment" in capsys.readouterr().err


def test_the_run_script_in_a_real_shell(tmp_path, monkeypatch):
    """The script a worker runs, run by sh here: the secret is loaded into the environment and its file deleted,
    and a value with shell metacharacters arrives as one argument. `sudo` is a stub, so nothing is killed here."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    (home / remote.CHECKOUT / ".venv" / "bin").mkdir(parents=True)
    (home / remote.CHECKOUT / ".venv" / "bin" / "activate").write_text("ACTIVATED=1; export ACTIVATED\n")
    bin_dir.mkdir()
    (bin_dir / "sudo").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sudo").chmod(0o755)
    (home / ".pivot_jax_env-t").write_text(f"HF_TOKEN='{SECRET} with $pace'\n")
    probe = ["python3", "-c", "import json, os, sys; print(json.dumps([sys.argv[1:], os.environ['HF_TOKEN'], "
             "os.environ['ACTIVATED'], os.environ['JAX_COMPILATION_CACHE_DIR']]))",
             "--config.data.langs=es;rm -rf /", "$(touch pwned)", "a'b\"c"]
    script = remote.run_script(probe, tpu_type("v5p-8"), secrets_file=".pivot_jax_env-t",
                               env={"JAX_COMPILATION_CACHE_DIR": "gs://b/cache"})
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path,
                          env={"HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    args, token, activated, cache = json.loads(done.stdout.strip().splitlines()[-1])
    assert args == probe[3:] and token == f"{SECRET} with $pace" and activated == "1" and cache == "gs://b/cache"
    assert not (home / ".pivot_jax_env-t").exists() and not list(tmp_path.rglob("pwned"))
    assert (home / remote.JOBS / "run.pid").read_text().strip().isdigit()


# --- dry runs, delete, status, ssh ------------------------------------------------------------------------------

@pytest.mark.parametrize("action, flags, command, expected", [
    ("create", ["--queued", "--best_effort"], (), "gcloud alpha compute tpus queued-resources create run1"),
    ("setup", [], (), "git clone --quiet https://example.com/pivot_jax.git pivot_jax"),
    ("run", ["--retries", "2"], TRAIN, "--worker=7"),
    ("delete", ["--queued"], (), "gcloud compute tpus queued-resources delete run1 --zone=us-east5-a --force --quiet"),
    ("status", [], (), "gcloud compute tpus tpu-vm describe run1"),
    ("ssh", ["--worker", "3"], (), "gcloud compute tpus tpu-vm ssh run1 --zone=us-east5-a --worker=3"),
])
def test_dry_run_prints_and_runs_nothing(tmp_path, monkeypatch, checkout, capsys, action, flags, command, expected):
    repo, _ = checkout
    cloud = FakeCloud(tmp_path, monkeypatch, nodes={"run1": ["READY"]})
    try:
        tpu(action, "--dry_run", "--source_dir", str(repo), "--logdir", str(tmp_path / "logs"), *flags,
            accelerator="v5p-64", command=command)
    except SystemExit as e:  # ssh exits with its (dry) status
        assert e.code == 0
    out = capsys.readouterr().out
    assert expected in out and all(line.startswith("$ ") for line in out.splitlines())
    assert cloud.calls() == [] and not (tmp_path / "logs").exists()


def test_delete_and_status(tmp_path, monkeypatch, capsys):
    cloud = FakeCloud(tmp_path, monkeypatch, nodes={"run1": ["READY"]}, queued={"run1": ["ACTIVE"]})
    tpu("status", "--queued", accelerator=None)
    assert "run1 (us-east5-a): node READY, queued resource ACTIVE" in capsys.readouterr().out
    tpu("delete", accelerator=None)
    assert cloud.calls()[-1] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "run1", f"--zone={ZONE}", "--quiet"]
    tpu("delete", accelerator=None)  # nothing left: not an error
    assert cloud.calls()[-1][4] == "describe"


def test_setup_refuses_a_dirty_checkout(tmp_path, monkeypatch, checkout, capsys):
    repo, _ = checkout
    (repo / "README.md").write_text("changed\n")
    cloud = FakeCloud(tmp_path, monkeypatch, nodes={"run1": ["READY"]})
    with pytest.raises(SystemExit):
        tpu("setup", "--source_dir", str(repo))
    assert "has uncommitted changes (README.md)" in capsys.readouterr().err and cloud.calls() == []
    tpu("setup", "--source_dir", str(repo), "--allow_dirty", "--logdir", str(tmp_path / "logs"))
    assert len(ssh_calls(cloud.calls(), "git clone")) == 1


def test_usage_errors(tmp_path, monkeypatch, capsys):
    FakeCloud(tmp_path, monkeypatch)
    for argv, message in [(["tpu", "launch", "--name", "a", "--zone", "z"], "one of create, setup, run"),
                          (["tpu", "create", "--name", "a", "--zone", "z"], "tpu create needs --accelerator"),
                          (["tpu", "create", "--name", "A_1", "--zone", "z", "--accelerator", "v5p-8"], "--name 'A_1'"),
                          (["tpu", "status", "--name", "a"], "needs --zone")]:
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err


# --- the sweep backend ------------------------------------------------------------------------------------------

def _answer(cloud, answer):
    """The slice pivot-sweep-0 READY, its workers answering `answer` when polled."""
    rule = {"contains": "pivot_jax_job:", "output": f"pivot_jax_job: {answer}"}
    cloud.set(nodes={"pivot-sweep-0": ["READY"]}, ssh=[rule])


def _executor(repo, **options):
    return make_executor("tpu", 2, {"zone": ZONE, "accelerator": "v5p-8", "source_dir": str(repo), "poll_s": "0",
                                    **options})


def test_sweep_backend_starts_a_point_on_a_pool_slice_and_polls_it(tmp_path, monkeypatch, checkout):
    repo, _ = checkout
    monkeypatch.chdir(tmp_path)
    cloud = FakeCloud(tmp_path, monkeypatch, nodes={"pivot-sweep-0": ["READY"]})
    executor = _executor(repo, pool="2")
    assert executor.slots == 2
    command = ["/usr/bin/python3", "-m", "pivot_jax.train", "--config", f"{repo}/configs/a.py:x=1"]
    job = executor.submit("pt-es-1", command, epath.Path("gs://b/s/points/pt-es-1/train.log"),
                          {**os.environ, "JAX_COMPILATION_CACHE_DIR": "gs://b/s/jax_cache"})
    assert job.startswith("pivot-sweep-0:pt-es-1-")
    start, = [c for c in ssh_calls(cloud.calls(), "nohup ")]
    words = shlex.split(_command(start))
    assert ["env", "JAX_COMPILATION_CACHE_DIR=gs://b/s/jax_cache"] == words[words.index("-c") + 1].split()[:2]
    assert "configs/a.py:x=1" in _command(start) and str(repo) not in _command(start)
    _answer(cloud, "running")
    assert executor.poll(job) == JobState(True)
    job2 = executor.submit("pt-es-2", command, epath.Path("gs://b/s/points/pt-es-2/train.log"), dict(os.environ))
    assert job2.startswith("pivot-sweep-1:")  # the pool's next slice, created
    assert any(c[4] == "create" and c[5] == "pivot-sweep-1" for c in cloud.calls())
    _answer(cloud, "exit 0")
    assert executor.poll(job) == JobState(False, 0)


def test_sweep_backend_reports_a_preempted_slice(tmp_path, monkeypatch, checkout):
    repo, _ = checkout
    cloud = FakeCloud(tmp_path, monkeypatch, nodes={"pivot-sweep-0": ["PREEMPTED"]})
    executor = _executor(repo)
    assert executor.poll("pivot-sweep-0:pt-1-1") == JobState(False, 75)
    _answer(cloud, "exit 3")
    assert executor.poll("pivot-sweep-0:pt-2-1") == JobState(False, 3)


def test_sweep_backend_needs_a_shared_workdir_and_known_options(tmp_path, monkeypatch, checkout):
    repo, _ = checkout
    FakeCloud(tmp_path, monkeypatch)
    with pytest.raises(ConfigError, match="must be on GCS"):
        _executor(repo).submit("p", ["python"], epath.Path(str(tmp_path / "train.log")), {})
    with pytest.raises(ConfigError, match="unknown --backend_option flavor"):
        _executor(repo, flavor="x")
    with pytest.raises(ConfigError, match="needs --backend_option zone"):
        make_executor("tpu", 1, {"accelerator": "v5p-8"})
