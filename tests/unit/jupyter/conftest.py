"""Fixtures of the widget tests: a real mesh serving the example models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from example_models import make_models_module
from mesh_process import MeshProcess


@pytest.fixture(scope="session")
def panel_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("panel-models")
    return out, make_models_module().make_all(out, string_models=1)


@pytest.fixture(scope="module")
def panel_mesh(panel_models: tuple[Path, dict[str, Any]]) -> Iterator[MeshProcess]:
    proc = MeshProcess.start("--models", str(panel_models[0]))
    try:
        yield proc
    finally:
        proc.stop()
