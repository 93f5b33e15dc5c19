"""Checkpoints: how many are kept, and a damaged latest step (named, moved aside, the one before restored)."""

import logging
from pathlib import Path

import pytest

from pivot_jax.checkpoint import UNREADABLE_DIR, Checkpointer, CheckpointError, saved_steps
from pivot_jax.config import base_config
from pivot_jax.errors import ConfigError
from pivot_jax.run_status import read_status
from pivot_jax.trainer import loop


def tiny(steps=4, **checkpoint):
    c = base_config()
    c.train.steps, c.train.global_batch_size, c.train.seq_len = steps, 8, 32
    c.checkpoint.every_steps, c.checkpoint.async_save = 2, False
    for key, value in checkpoint.items():
        c.checkpoint[key] = value
    return c


def test_keep_zero_keeps_every_step_and_keep_one_the_final_step(tmp_path):
    loop.train(tiny(6, keep=0), tmp_path / "all")  # before: keep=0 deleted every checkpoint (exit 0)
    assert saved_steps(tmp_path / "all") == [2, 4, 6]
    loop.train(tiny(5, keep=1), tmp_path / "one")
    assert saved_steps(tmp_path / "one") == [5]
    with pytest.raises(ConfigError, match=r"checkpoint.keep=-1: must be >= 0"):
        loop.train(tiny(keep=-1), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def _biggest_array_file(step_dir: Path) -> Path:
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"),
               key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["truncated", "garbled", "metadata deleted"])
def test_damaged_latest_step_is_named_moved_aside_and_the_previous_one_restores(tmp_path, damage, caplog):
    loop.train(tiny(keep=0), tmp_path)
    step_dir = tmp_path / "checkpoints" / "4"
    if damage == "metadata deleted":
        (step_dir / "state" / "_METADATA").unlink()
        named = "missing file " + str(step_dir / "state" / "_METADATA")
    else:
        target = _biggest_array_file(step_dir)
        data = target.read_bytes()
        target.write_bytes(data[:100] if damage == "truncated" else data[:64] + bytes(len(data) - 64))
        named = "array "  # the array whose bytes are damaged, e.g. opt_state.1.0.mu.lm_head
    files_before = sorted(str(p.relative_to(step_dir)) for p in step_dir.rglob("*"))

    with caplog.at_level(logging.WARNING, logger="pivot_jax.checkpoint"):
        loop.train(tiny(keep=0), tmp_path)  # the same run again: falls back to step 2 and trains 3..4 again
    warning = next(r.getMessage() for r in caplog.records if "does not restore" in r.getMessage())
    assert "checkpoint step 4" in warning and named in warning and UNREADABLE_DIR in warning
    moved = tmp_path / UNREADABLE_DIR / "4"
    assert sorted(str(p.relative_to(moved)) for p in moved.rglob("*")) == files_before  # kept, never deleted
    assert saved_steps(tmp_path) == [2, 4] and read_status(tmp_path)["state"] == "finished"


def test_without_fallback_a_damaged_step_stops_naming_it_and_nothing_moves(tmp_path):
    loop.train(tiny(keep=0), tmp_path)
    (tmp_path / "checkpoints" / "4" / "state" / "_METADATA").unlink()
    with pytest.raises(CheckpointError, match=r"checkpoint step 4 .* missing file .*_METADATA") as error:
        loop.train(tiny(keep=0, fallback=False), tmp_path)
    assert "checkpoint.fallback" in error.value.hint
    assert saved_steps(tmp_path) == [2, 4] and not (tmp_path / UNREADABLE_DIR).exists()


def test_a_different_model_is_not_mistaken_for_damage(tmp_path):
    loop.train(tiny(), tmp_path)
    other = tiny()
    other.model.preset = "tiny-llama3"
    other.resume_allow = "model.preset"  # accepted deliberately, yet the weights cannot fit
    with pytest.raises(CheckpointError, match=r"holds other parameters .*k_proj'\] saved \(2, 64, 2, 16\)"):
        loop.train(other, tmp_path)
    assert saved_steps(tmp_path) == [2, 4] and not (tmp_path / UNREADABLE_DIR).exists()


def test_closed_checkpointer_still_reports_its_latest_step(tmp_path):
    loop.train(tiny(), tmp_path)
    checkpointer = Checkpointer(tmp_path, 2, 3)
    checkpointer.close()
    checkpointer.close()  # twice is fine
    assert checkpointer.latest_step() == 4
