"""The local GCS emulator (tests/gcs_emulator.py) carries real gs:// code paths: etils.epath -> gcsfs for our own
files, Orbax -> TensorStore's `gcs` kvstore (OCDBT) for checkpoints, google-cloud-storage for Orbax's bucket checks,
and child processes that inherit the environment. Each test checks that the bytes are in the emulator, not on disk.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest


def _relative(path) -> str:
    """`gs://pivot-test/a/b` -> `a/b` (an object-name prefix)."""
    return str(path).split("://", 1)[1].split("/", 1)[1]


def test_text_roundtrip(gcs_workdir, gcs_server):
    path = gcs_workdir / "notes" / "hello.txt"
    path.write_text("héllo\n")
    assert path.read_text() == "héllo\n" and path.read_bytes() == "héllo\n".encode()
    assert gcs_server.list_objects(_relative(gcs_workdir)) == [_relative(path)]


def test_append_mode_overwrites_and_read_modify_write_appends(gcs_workdir):
    """gcsfs has no append: open("a") warns and starts the object anew, so the first line is lost. (Under the
    emulator epath goes through gcsfs; tf.io.gfile, epath's default backend when TensorFlow is installed, does
    append on GCS but cannot be pointed at an emulator.)"""
    log = gcs_workdir / "metrics.jsonl"
    for line in ('{"step": 1}\n', '{"step": 2}\n'):
        with pytest.warns(UserWarning, match="Append mode 'a' is not supported"), log.open("a") as f:
            f.write(line)
    assert log.read_text() == '{"step": 2}\n'

    # Nor is anything visible before close(): flush() uploads nothing below gcsfs's 5 MiB block.
    log.unlink()
    with log.open("w") as f:
        f.write("partial\n")
        f.flush()
        assert not log.exists()
    assert log.read_text() == "partial\n"

    # What works on GCS: read the object, write it back whole (one writer at a time).
    log.unlink()
    for line in ('{"step": 1}\n', '{"step": 2}\n'):
        log.write_text((log.read_text() if log.exists() else "") + line)
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_rename_and_replace(gcs_workdir, gcs_server):
    a, b, c = (gcs_workdir / name for name in ("a.txt", "b.txt", "c.txt"))
    a.write_text("A")
    assert a.rename(b) == b
    assert not a.exists() and b.read_text() == "A"

    c.write_text("C")
    with pytest.raises(FileExistsError):
        c.rename(b)  # rename never overwrites
    c.replace(b)  # replace does
    assert not c.exists() and b.read_text() == "C"

    # A "directory" is a prefix: renaming it moves every object under it (one by one; not atomic on GCS).
    (gcs_workdir / "old" / "x" / "f.txt").write_text("F")
    (gcs_workdir / "old" / "g.txt").write_text("G")
    (gcs_workdir / "old").rename(gcs_workdir / "new")
    assert not (gcs_workdir / "old").exists()
    assert (gcs_workdir / "new" / "x" / "f.txt").read_text() == "F"
    root = _relative(gcs_workdir)
    assert gcs_server.list_objects(root) == [f"{root}/b.txt", f"{root}/new/g.txt", f"{root}/new/x/f.txt"]

    # etils (fsspec backend) wants the target's parent to exist, and a just-made empty "directory" does not.
    (gcs_workdir / "aside").mkdir(parents=True, exist_ok=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        (gcs_workdir / "new").rename(gcs_workdir / "aside" / "new")


def test_directories_listing_and_rmtree(gcs_workdir, gcs_server):
    assert not gcs_workdir.exists()
    run = gcs_workdir / "run" / "eval"
    run.mkdir(parents=True, exist_ok=True)
    # GCS has no directories: mkdir writes nothing, and an empty "directory" does not exist.
    assert not run.exists() and not run.is_dir()
    assert gcs_server.list_objects(_relative(gcs_workdir)) == []
    run.mkdir(parents=True)  # no FileExistsError either: there is nothing to exist

    (run / "es.json").write_text("{}")
    (run / "fr.json").write_text("{}")
    (run / "plots" / "bleu.png").write_bytes(b"\x89PNG")
    (gcs_workdir / "run" / "config.yaml").write_text("steps: 2\n")

    assert run.exists() and run.is_dir() and (gcs_workdir / "run").is_dir()
    assert not (run / "es.json").is_dir()
    assert sorted(p.name for p in run.iterdir()) == ["es.json", "fr.json", "plots"]
    assert sorted(p.name for p in run.glob("*.json")) == ["es.json", "fr.json"]
    assert [str(p) for p in (gcs_workdir / "run").glob("*/*.json")] == [str(run / "es.json"), str(run / "fr.json")]
    assert all(str(p).startswith("gs://") for p in run.glob("*"))

    (gcs_workdir / "run").rmtree()
    assert not (gcs_workdir / "run").exists()
    assert gcs_server.list_objects(_relative(gcs_workdir)) == []
    with pytest.raises(FileNotFoundError):
        (gcs_workdir / "run").rmtree()
    (gcs_workdir / "run").rmtree(missing_ok=True)
    with pytest.raises(FileNotFoundError):
        (gcs_workdir / "missing.txt").read_text()


def _tree(step: int):
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()[:4]), ("d",))
    sharded = jax.device_put(jnp.arange(32, dtype=jnp.float32).reshape(8, 4) + step,
                             NamedSharding(mesh, PartitionSpec("d")))
    return {"params": {"w": sharded, "b": jnp.full((5,), step, jnp.bfloat16)}, "step": jnp.int32(step)}


def test_orbax_checkpoint_manager_async(gcs_workdir, gcs_server, tmp_path, monkeypatch):
    import jax
    import orbax.checkpoint as ocp

    monkeypatch.chdir(tmp_path)  # anything written to a local "gs:/..." by mistake would land here
    directory = gcs_workdir / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=3, create=True, enable_async_checkpointing=True)
    with ocp.CheckpointManager(directory, options=options, item_names=("state", "data")) as manager:
        for step in (10, 20):
            manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_tree(step)),
                                                       data=ocp.args.JsonSave({"epoch": step // 10})))
        manager.wait_until_finished()
        assert manager.latest_step() == 20 and manager.all_steps() == [10, 20]

    # A new manager finds both steps by listing the bucket, and restores them exactly (values, dtypes, sharding).
    with ocp.CheckpointManager(directory, options=options, item_names=("state", "data")) as manager:
        assert manager.latest_step() == 20 and manager.all_steps() == [10, 20]
        for step in (10, 20):
            expected = _tree(step)
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, expected)
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                     data=ocp.args.JsonRestore()))
            assert restored.data == {"epoch": step // 10}
            for got, want in zip(jax.tree.leaves(restored.state), jax.tree.leaves(expected), strict=True):
                assert got.dtype == want.dtype and got.sharding == want.sharding
                np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

    # The bytes are in the emulator: listed through gcsfs, and straight from its JSON API.
    prefix = _relative(directory)
    names = sorted(name.split(f"{prefix}/", 1)[1] for name in gcs_server.fs().find(f"{gcs_server.bucket}/{prefix}"))
    assert names == sorted(name.split(f"{prefix}/", 1)[1] for name in gcs_server.list_objects(prefix))
    for step in ("10", "20"):
        assert f"{step}/commit_success.txt" in names  # Orbax's gs:// commit marker (no atomic rename on GCS)
        assert f"{step}/state/manifest.ocdbt" in names  # TensorStore wrote OCDBT through its gcs driver
        assert f"{step}/data/metadata" in names
        assert any(n.startswith(f"{step}/state/ocdbt.process_0/d/") for n in names)
    assert os.listdir(tmp_path) == [] and not os.path.exists("gs:")


def test_orbax_max_to_keep_deletes_on_gcs(gcs_workdir, gcs_server):
    import orbax.checkpoint as ocp

    directory = gcs_workdir / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
    with ocp.CheckpointManager(directory, options=options) as manager:
        for step in (1, 2):
            manager.save(step, args=ocp.args.StandardSave({"x": np.arange(3)}))
        manager.wait_until_finished()
        assert manager.all_steps() == [2]
    assert not (directory / "1").exists()
    assert not any(name.startswith(f"{_relative(directory)}/1/") for name in gcs_server.list_objects())


def test_tensorstore_conditional_write_after_read(gcs_workdir, gcs_server):
    """OCDBT's manifest update: read (generation from x-goog-generation), then write only if unchanged."""
    import tensorstore as ts

    kv = ts.KvStore.open({"driver": "gcs", "bucket": gcs_server.bucket, "path": f"{_relative(gcs_workdir)}/"}).result()
    kv.write("manifest", b"v1").result()
    read = kv.read("manifest").result()
    assert read.value == b"v1" and read.stamp.generation.strip(b"\0")  # a real (non-zero) generation
    assert kv.write("manifest", b"v2", if_equal=read.stamp.generation).result().generation  # condition held
    assert kv.write("manifest", b"v3", if_equal=read.stamp.generation).result().generation == b""  # stale: refused
    assert kv.read("manifest").result().value == b"v2"


def test_child_process_inherits_the_emulator(gcs_workdir):
    (gcs_workdir / "from_parent.txt").write_text("written by the parent")
    code = ("import sys; from etils import epath; root = epath.Path(sys.argv[1]); "
            "print((root / 'from_parent.txt').read_text()); (root / 'from_child.txt').write_text('child')")
    child = subprocess.run([sys.executable, "-c", code, str(gcs_workdir)], capture_output=True, text=True,
                           timeout=120, check=False)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "written by the parent"
    assert (gcs_workdir / "from_child.txt").read_text() == "child"


@pytest.mark.usefixtures("gcs_server")  # for its skip when the emulator is not installed
def test_context_manager_sets_and_restores_everything(monkeypatch):
    import urllib.error
    import urllib.request

    from etils import epath
    from gcs_emulator import gcs_emulator

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/adc.json")
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    before = dict(os.environ)
    with gcs_emulator("other-bucket") as gcs:
        assert os.environ["STORAGE_EMULATOR_HOST"] == os.environ["TENSORSTORE_GCS_HTTP_URL"] == gcs.url
        assert os.environ["EPATH_USE_TF"] == "false" and "GOOGLE_APPLICATION_CREDENTIALS" not in os.environ
        gcs.create_bucket("second-bucket")
        for bucket in ("other-bucket", "second-bucket"):
            path = epath.Path(f"gs://{bucket}/x.txt")
            path.write_text(bucket)
            assert path.read_text() == bucket
        assert gcs.list_objects() == ["x.txt"]
        url = gcs.url
    assert dict(os.environ) == before
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2)  # the server is gone
