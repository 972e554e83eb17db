"""Fixtures of the KServe end-to-end tests: the example models, and a real mesh process with the
KServe routes (every ``kserve-mesh up`` serves them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from example_models import make_models_module
from mesh_process import MeshProcess


@pytest.fixture(scope="module")
def kube_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mesh's working folder: ``examples/models`` there is what ``examples/isvc/local-sklearn.yaml``
    (a relative storageUri) points at."""
    return tmp_path_factory.mktemp("kube-workdir")


@pytest.fixture(scope="module")
def kube_models(kube_workdir: Path) -> tuple[Path, dict[str, Any]]:
    out = kube_workdir / "examples" / "models"
    return out, make_models_module().make_all(out, string_models=1)


@pytest.fixture(scope="module")
def kube_mesh(kube_workdir: Path, kube_models: tuple[Path, dict[str, Any]]) -> Iterator[MeshProcess]:
    """A mesh with no models of its own: everything comes from applied InferenceServices, whose
    local paths may point into the example models only (``--allow-local-path``)."""
    empty = kube_workdir / "no-models"
    empty.mkdir()
    proc = MeshProcess.start("--models", str(empty), "--allow-local-path", str(kube_models[0]), cwd=kube_workdir)
    try:
        yield proc
    finally:
        proc.stop()
