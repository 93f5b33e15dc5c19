"""Training checkpoints: Orbax `CheckpointManager` holding the train state and the data position.

Orbax writes each step into a temporary directory and renames it only once every process has finished, so a
checkpoint half-written when a process died is never listed, and `latest_step` is always a complete one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

STATE, DATA = "state", "data"


class Checkpointer:
    """Saves `{params, opt_state, step, rng}` + the data stream's position under `WORKDIR/checkpoints`."""

    def __init__(self, workdir: str | Path, every_steps: int, keep: int, async_save: bool = True):
        self.directory = Path(workdir).absolute() / "checkpoints"
        self.every_steps = every_steps
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=(STATE, DATA))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def due(self, step: int) -> bool:
        return bool(self.every_steps) and step % self.every_steps == 0

    def save(self, step: int, state: Any, data_state: dict[str, Any]) -> None:
        """Start saving `step` (asynchronously when enabled); a step already saved is skipped."""
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(state), DATA: ocp.args.JsonSave(data_state)}), force=True)

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """The state placed as `abstract_state`'s shardings say, and the data position, of `step`."""
        restored = self.manager.restore(step, args=ocp.args.Composite(**{
            STATE: ocp.args.StandardRestore(abstract_state), DATA: ocp.args.JsonRestore()}))
        return restored[STATE], restored[DATA]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def step_directory(workdir: str | Path, step: int | None = None) -> Path:
    """WORKDIR/checkpoints/STEP of a trainer run (default: the latest complete one)."""
    directory = Path(workdir).absolute() / "checkpoints"
    steps = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []
    if not steps:
        raise FileNotFoundError(f"{workdir}: no checkpoints/<step> (not a trainer workdir, or nothing saved yet)")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise FileNotFoundError(f"{workdir}: no checkpoint of step {step} (saved steps: {steps})")
    return directory / str(step)


def restore_params(step_dir: Path, abstract_params: Any) -> Any:
    """Only the parameters of a training checkpoint (no optimizer state is read), cast and placed as
    `abstract_params` (a tree of `jax.ShapeDtypeStruct` with shardings) says."""
    restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, dtype=a.dtype), abstract_params)
    with ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(step_dir / STATE, args=ocp.args.PyTreeRestore(
            item={"params": abstract_params}, restore_args={"params": restore_args}, partial_restore=True))
    return restored["params"]
