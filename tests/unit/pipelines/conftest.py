"""Make ``kserve_mesh_pipelines`` importable for the pipeline unit tests.

The package lives in the top-level ``pipelines/`` folder and is installed under that name by the
``[pipelines]`` packaging; from a plain checkout (not installed) it is loaded from the folder.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PIPELINES_DIR = Path(__file__).resolve().parents[3] / "pipelines"


def _ensure_importable() -> None:
    if importlib.util.find_spec("kserve_mesh_pipelines") is not None:
        return
    spec = importlib.util.spec_from_file_location(
        "kserve_mesh_pipelines", PIPELINES_DIR / "__init__.py", submodule_search_locations=[str(PIPELINES_DIR)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kserve_mesh_pipelines"] = module
    spec.loader.exec_module(module)


_ensure_importable()
