"""Training checkpoints: Orbax `CheckpointManager` holding the train state and the data position.

Orbax writes each step into a temporary directory and renames it only once every process has finished, so a
checkpoint half-written when a process died is never listed, and `latest_step` is always a complete one.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from pivot_jax.errors import PivotError
from pivot_jax.paths import PathLike, absolute

log = logging.getLogger(__name__)

STATE, DATA = "state", "data"
# Files every complete step has; a missing one names the damage better than the pytree error Orbax gives.
REQUIRED_FILES = (f"{STATE}/_METADATA", f"{DATA}/metadata")
UNREADABLE_DIR = "unreadable_checkpoints"  # WORKDIR/unreadable_checkpoints/STEP: moved aside, never deleted
UNREADABLE_README = ("Checkpoint steps that did not restore, moved here by the trainer (checkpoint.fallback) so that\n"
                     "the step before could be restored. Nothing here is read again; delete what you do not need.\n")


class CheckpointError(PivotError):
    """A checkpoint step that does not restore."""


class Checkpointer:
    """Saves `{params, opt_state, step, rng}` + the data stream's position under `WORKDIR/checkpoints`."""

    def __init__(self, workdir: PathLike, every_steps: int, keep: int, async_save: bool = True):
        """`keep` newest steps are kept (the newest, so the final step, always among them); 0 keeps all."""
        if keep < 0:
            raise ValueError(f"checkpoint.keep must be >= 0 (0 = keep every step), got {keep}")
        self.directory = absolute(workdir) / "checkpoints"
        self.every_steps = every_steps
        options = ocp.CheckpointManagerOptions(max_to_keep=keep or None, create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=(STATE, DATA))

    def latest_step(self) -> int | None:
        if self.manager is None:  # closed: every save is committed, the directory says it all
            return (saved_steps(self.directory.parent) or [None])[-1]
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

    def restore_latest(self, abstract_state: Any, fallback: bool = True) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, state, data position) of the newest step that restores, or None when nothing is saved.

        A step that fails to restore is named with the file or array at fault. With `fallback`, it is moved to
        WORKDIR/unreadable_checkpoints/ (kept for inspection) and the previous step is tried; without, the error
        is raised. Every host takes the same decision, so all of them resume from the same step.
        """
        while (step := self.latest_step()) is not None:
            mismatch = params_layout_mismatch(self.directory / str(step), abstract_state["params"])
            if mismatch:  # a different model, not a damaged step: nothing to fall back from
                raise CheckpointError(f"checkpoint step {step} in {self.directory} holds other parameters than "
                                      f"the config builds: {mismatch}")
            problem = ""
            try:
                state, data_state = self.restore(step, abstract_state)
            except Exception as e:  # noqa: BLE001 - any failure to read a step is reported with its cause
                problem = describe_restore_failure(self.directory / str(step), e)
            failed = multihost_utils.process_allgather(np.int32(bool(problem)))
            if not np.any(failed):
                return step, state, data_state
            problem = problem or "it failed on another host"
            if not fallback:
                raise CheckpointError(f"checkpoint step {step} in {self.directory} does not restore: {problem}",
                                      hint="set --config.checkpoint.fallback=true to resume from the newest "
                                           "step that restores (the bad one is moved aside, not deleted)")
            moved = self._move_aside(step)
            log.warning("checkpoint step %d does not restore (%s); moved it to %s and trying the step before",
                        step, problem, moved)
        return None

    def _move_aside(self, step: int) -> epath.Path:
        target = self.directory.parent / UNREADABLE_DIR / str(step)
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            # An object store has no empty folders to rename into: a file makes this one exist there too.
            (target.parent / "README.txt").write_text(UNREADABLE_README)
            suffix = 1
            while target.exists():  # the same step may go bad twice (e.g. saved again after a fallback)
                target, suffix = target.with_name(f"{step}.{suffix}"), suffix + 1
            (self.directory / str(step)).rename(target)
        multihost_utils.sync_global_devices(f"pivot_jax moved checkpoint {step} aside")
        self.manager.reload()
        return target

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Wait for the last save to be committed and release the manager (again: nothing to do)."""
        if self.manager is not None:
            self.manager.wait_until_finished()
            self.manager.close()
            self.manager = None


def params_layout_mismatch(step_dir: epath.Path, abstract_params: Any, shown: int = 3) -> str:
    """How the parameters stored in a step differ from `abstract_params` (names and shapes), or "" when they
    agree or the step's metadata cannot be read (then the restore itself says what is damaged)."""
    quiet = logging.getLogger("absl")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # Orbax warns about metadata files this layout never has
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            stored = checkpointer.metadata(step_dir / STATE).item_metadata
    except Exception:  # noqa: BLE001 - unreadable metadata is the restore's to report
        return ""
    finally:
        quiet.setLevel(level)
    if not stored or "params" not in stored:
        return ""
    saved = {jax.tree_util.keystr(k): tuple(v.shape) for k, v in jax.tree_util.tree_leaves_with_path(stored["params"])}
    wanted = {jax.tree_util.keystr(k): tuple(v.shape) for k, v in jax.tree_util.tree_leaves_with_path(abstract_params)}
    problems = [f"params{k} saved {saved.get(k, 'absent')}, config {wanted.get(k, 'absent')}"
                for k in sorted(saved.keys() | wanted.keys()) if saved.get(k) != wanted.get(k)]
    more = f" (+{len(problems) - shown} more)" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


def describe_restore_failure(step_dir: epath.Path, error: BaseException) -> str:
    """Which file of a step is missing, or which array could not be read, and why (one line)."""
    missing = [name for name in REQUIRED_FILES if not (step_dir / name).exists()]
    if missing:
        return f"missing file {step_dir / missing[0]}"
    messages = []
    while error is not None:  # the root cause (TensorStore's) names the array; the outer ones do not
        messages.append(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
        error = error.__cause__ or error.__context__
    reading = next((m for m in reversed(messages) if re.search(r'reading "[^"]+"', m)), None)
    if reading:
        array = re.search(r'reading "([^"]+)"', reading).group(1)
        return f"array {array} under {step_dir / STATE} is damaged ({reading})"
    return messages[-1]


def saved_steps(workdir: PathLike) -> list[int]:
    """The complete steps under WORKDIR/checkpoints, oldest first (Orbax's test: renamed from their temporary
    name on a file system, `commit_success.txt` written on an object store)."""
    return sorted(ocp.utils.checkpoint_steps(absolute(workdir) / "checkpoints"))


def step_directory(workdir: PathLike, step: int | None = None) -> epath.Path:
    """WORKDIR/checkpoints/STEP of a trainer run (default: the latest complete one)."""
    directory = absolute(workdir) / "checkpoints"
    steps = saved_steps(workdir)
    if not steps:
        raise FileNotFoundError(f"{workdir}: no checkpoints/<step> (not a trainer workdir, or nothing saved yet)")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise FileNotFoundError(f"{workdir}: no checkpoint of step {step} (saved steps: {steps})")
    return directory / str(step)


def restore_params(step_dir: epath.Path, abstract_params: Any) -> Any:
    """Only the parameters of a training checkpoint (no optimizer state is read), cast and placed as
    `abstract_params` (a tree of `jax.ShapeDtypeStruct` with shardings) says."""
    restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, dtype=a.dtype), abstract_params)
    with ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(step_dir / STATE, args=ocp.args.PyTreeRestore(
            item={"params": abstract_params}, restore_args={"params": restore_args}, partial_restore=True))
    return restored["params"]
