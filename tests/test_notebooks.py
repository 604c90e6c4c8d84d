"""The notebooks run top to bottom (on tiny settings) and are stored without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SMALL_SETTINGS = {
    "MEDGRAFT_NOTEBOOK_EPOCHS": "1",
    "MEDGRAFT_NOTEBOOK_STUDY_ARGS": "--epochs 1 --fractions 0.5,1.0 --seeds 1",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_transfer_study.ipynb"])
def test_notebook_runs_top_to_bottom(name: str, micro_msd: Path, tmp_path: Path, monkeypatch):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "stored with outputs"
    monkeypatch.setenv("MEDGRAFT_NOTEBOOK_DATA", str(micro_msd))
    monkeypatch.setenv("MEDGRAFT_NOTEBOOK_WORK", str(tmp_path))
    for key, value in SMALL_SETTINGS.items():
        monkeypatch.setenv(key, value)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}}
    )
    client.execute()  # raises CellExecutionError, with the cell's traceback, if a cell fails
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert images, "the notebook showed no plot or overlay"
