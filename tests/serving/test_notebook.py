"""The Colab notebook runs top to bottom, headless, against the quick model."""

from __future__ import annotations

import pathlib

import nbformat
from nbclient import NotebookClient

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK = REPO_ROOT / "colab" / "music_attr_vae_demo.ipynb"


def _set_parameters(nb, **values):
    """Rewrite the assignments of the cell tagged "parameters" (as papermill would)."""
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    lines = cells[0].source.splitlines()
    for name, value in values.items():
        hits = [i for i, line in enumerate(lines) if line.startswith(f"{name} =")]
        assert hits, f"parameter {name} is not in the parameters cell"
        lines[hits[0]] = f"{name} = {value!r}"
    cells[0].source = "\n".join(lines)


def test_notebook_runs_headless(quick_workdir):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    _set_parameters(nb, SAVED_MODEL=str(quick_workdir / "saved_model"), INSTALL=False, STEPS=6)
    # Run from the checkout, so the install cell finds the package and installs nothing.
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO_ROOT)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    kinds = [k for o in outputs for k in o.get("data", {})]
    assert kinds.count("image/png") >= 2  # Figure-1-style plots and the traversal
    assert "text/html" in kinds  # the audio player
    assert "application/vnd.jupyter.widget-view+json" in kinds  # the sliders
    text = "".join(o.get("text", "") for o in outputs)
    assert "rising steps:" in text and "fitted range" in text
