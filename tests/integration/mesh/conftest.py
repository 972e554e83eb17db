"""Fixtures of the mesh integration tests: example models and a real mesh process serving them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from example_models import make_models_module
from mesh_process import MeshProcess


@pytest.fixture(scope="session")
def example_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("example-models")
    return out, make_models_module().make_all(out, string_models=3)


@pytest.fixture(scope="module")
def mesh(example_models: tuple[Path, dict[str, Any]]) -> Iterator[MeshProcess]:
    """A mesh with the in-process runtime serving the example models."""
    proc = MeshProcess.start("--models", str(example_models[0]))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def mesh_with_runtime_process(example_models: tuple[Path, dict[str, Any]]) -> Iterator[MeshProcess]:
    """A mesh whose built-in runtime runs as a separate process (ModelRuntime over gRPC)."""
    proc = MeshProcess.start("--models", str(example_models[0]), "--runtime", "process")
    try:
        yield proc
    finally:
        proc.stop()
