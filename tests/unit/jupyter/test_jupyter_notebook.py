"""The example notebook is committed clean: valid nbformat, no outputs, no execution counts, and it
uses the widget and the SDK calls it walks through."""

from __future__ import annotations

from pathlib import Path

import nbformat

NOTEBOOK = Path(__file__).resolve().parents[3] / "examples" / "notebooks" / "mesh-walkthrough.ipynb"


def test_example_notebook_is_valid_and_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
    source = "\n".join(c.source for c in code)
    for call in ("MeshPanel(MESH_URL)", "display(panel)", "mesh.register(", "mesh.wait_until_loaded(",
                 "mesh.infer(", "mesh.set_vmodel(", "mesh.delete_vmodel("):
        assert call in source, call
