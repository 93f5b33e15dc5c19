"""fits.png and allocation.png are PNGs, and an interrupted save leaves neither half a file nor a temporary one."""

import numpy as np
import pytest

from pivot_jax.scaling.allocate import allocate
from pivot_jax.scaling.fit import fit_group
from pivot_jax.scaling.laws import make_law
from pivot_jax.scaling.plots import plot_allocation, plot_fits, save_png
from pivot_jax.scaling.table import Points

PNG = b"\x89PNG\r\n\x1a\n"


def _points(group: str, alpha: float) -> Points:
    x = np.repeat(np.geomspace(100, 100_000, 6), 2)
    y = make_law("xllama").value(x, np.array([alpha, -0.3])) + np.random.default_rng(0).normal(0, 1, len(x))
    return Points(group, x, y, np.array([12.0, 13.0]))


def test_both_plots_are_pngs(tmp_path):
    points = {"es": _points("es", 300.0), "zh": _points("zh", 500.0)}
    fits = {g: fit_group(p, [make_law("xllama")], n_bootstrap=20) for g, p in points.items()}
    plot_fits(points, fits, tmp_path / "fits.png", "chrf", joint=fits)
    plot_allocation(allocate(fits, 5000), tmp_path / "allocation.png", "chrf")
    for name in ("fits.png", "allocation.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["allocation.png", "fits.png"]


class _Interrupted:
    def savefig(self, f, **kwargs):
        f.write(PNG)  # half a picture, then the interrupt
        raise KeyboardInterrupt


def test_an_interrupted_save_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "fits.png"
    with pytest.raises(KeyboardInterrupt):
        save_png(_Interrupted(), path)
    assert list(tmp_path.iterdir()) == []
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        save_png(_Interrupted(), path)
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]
