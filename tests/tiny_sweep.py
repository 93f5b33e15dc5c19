"""A sweep file of the tiny config for the tests that run real sweeps (local, SLURM, a GCS directory)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TEMPLATE = """
from pivot_jax.sweep.spec import sweep_config

def get_config(arg=None):
    s = sweep_config()
    s.name = {name!r}
    s.train_config = "{repo}/configs/tiny.py"
    s.overrides = [("train.global_batch_size", 8), ("train.seq_len", 32), ("train.log_every_steps", 1),
                   ("checkpoint.every_steps", 0), ("checkpoint.async_save", False), ("eval.steps", 1)]
    s.axes = {axes}
    s.compute, s.steps = "steps", {steps}
    return s
"""


def write_tiny_sweep(directory: Path, axes: str = '[("seed", [0, 1])]', name: str = "tiny", steps: int = 3) -> str:
    """DIRECTORY/tiny_sweep.py with these axes (Python source); returns its path."""
    path = Path(directory) / "tiny_sweep.py"
    path.write_text(TEMPLATE.format(name=name, repo=REPO, axes=axes, steps=steps))
    return str(path)
