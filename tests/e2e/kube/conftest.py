"""Fixtures of the KServe end-to-end tests: the example models, and a real mesh process with the
KServe routes mounted (through ``kube_mesh_launcher.py`` until server.py mounts them itself)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from example_models import make_models_module
from mesh_process import MeshProcess

HERE = Path(__file__).resolve().parent
READY = re.compile(r"kserve-mesh ready: rest=(\S+) grpc=(\S+) metrics=(\S+)")


def start_kube_mesh(*args: str, timeout: float = 90.0, cwd: Path | None = None) -> MeshProcess:
    cmd = [sys.executable, str(HERE / "kube_mesh_launcher.py"), "up", "--rest-port", "0", "--grpc-port", "0",
           "--metrics-port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    output: list[str] = []
    found: list[re.Match[str]] = []
    done = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            m = READY.search(line)
            if m and not found:
                found.append(m)
                done.set()
        done.set()

    threading.Thread(target=pump, daemon=True).start()
    if not done.wait(timeout) or not found:
        proc.kill()
        proc.wait(10)
        raise RuntimeError("mesh did not become ready:\n" + "".join(output))
    m = found[0]
    return MeshProcess(proc, m.group(1), m.group(2), m.group(3), output)


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
    """A mesh with no models of its own: everything comes from applied InferenceServices."""
    empty = kube_workdir / "no-models"
    empty.mkdir()
    proc = start_kube_mesh("--models", str(empty), cwd=kube_workdir)
    try:
        yield proc
    finally:
        proc.stop()
