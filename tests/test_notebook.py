"""notebooks/scaling_laws.ipynb runs top to bottom (nbclient) on the committed quickstart sweep's results table,
through the library only, and shows the fits, the plots and the allocation."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_scaling_laws_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PIVOT_NOTEBOOK_OUTPUT", str(tmp_path))
    monkeypatch.setenv("PIVOT_SWEEP_RESULTS", str(REPO / "docs" / "results" / "sweep_quickstart"))
    notebook = nbformat.read(REPO / "notebooks" / "scaling_laws.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    text = "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs)
    images = sum("image/png" in out.get("data", {}) for cell in notebook.cells for out in cell.get("outputs", []))
    assert "es: loss" in text and "predicted gain over the uniform split" in text and "configs/muit.py:" in text
    assert images == 3  # two fits plots and the allocation
    assert (tmp_path / "allocation" / "allocation.json").exists() and os.listdir(tmp_path / "eval_loss")
