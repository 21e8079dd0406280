"""The lesson notebook runs top to bottom on real photos, and is stored without outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "lesson1.ipynb"


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    stale = [i for i, cell in enumerate(code) if cell.outputs or cell.execution_count]
    assert not stale, (f"code cells {stale} of {NOTEBOOK.name} hold outputs; clear them "
                       f"(e.g. jupyter nbconvert --clear-output --inplace) before committing.")


@pytest.mark.slow
def test_lesson_notebook_runs(tmp_path, monkeypatch, dogscats_demo):
    """Executes every cell in a kernel of this interpreter; any cell error fails the test."""
    kernels = tmp_path / "jupyter" / "kernels" / "threeline-lesson"
    kernels.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "threeline lesson", "language": "python"}
    (kernels / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("THREELINE_LESSON_DATA", str(dogscats_demo))
    monkeypatch.setenv("THREELINE_LESSON_SIZE", "128")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, kernel_name="threeline-lesson", timeout=300,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, on the first error

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    plots = [cell for cell in code if ".plot_" in cell.source or "show_batch" in cell.source]
    assert len(plots) >= 12
    for cell in plots:
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert len(images) == 1, f"expected one figure from:\n{cell.source}"
    text = "".join(o.get("text", "") for cell in code for o in cell.outputs)
    assert "accuracy with TTA" in text and "suggested learning rate" in text
