"""Fixtures of the widget tests: a real mesh serving the example models, and a stub of the KServe
``apply`` route."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from example_models import make_models_module
from mesh_process import MeshProcess
from stub_http import StubServer


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


class ApplyStub:
    """A mesh front that answers the panel's refresh and ``POST /mesh/v1/apply`` the way the KServe
    integration does, so error paths can be driven exactly."""

    def __init__(self) -> None:
        self.applied: list[bytes] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, body: Any, status: int = 200) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                if self.path == "/mesh/v1/models":
                    models = [{"modelId": "isvc-iris", "status": "LOADED", "errors": [], "sizeBytes": 4096,
                               "copies": 1, "lastUsedTime": 0, "modelInfo": {"type": "sklearn"}}] if stub.applied else []
                    return self._answer({"models": models})
                if self.path == "/mesh/v1/status":
                    return self._answer({"capacityBytes": 1 << 20, "usedBytes": 0, "modelsLoaded": 0})
                self._answer({"error": f"no such route: GET {self.path}"}, 404)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path != "/mesh/v1/apply":
                    return self._answer({"error": f"no such route: POST {self.path}"}, 404)
                if b"storageUri" not in body:
                    return self._answer({"error": "InferenceService default/iris: spec.predictor.model.storageUri "
                                                  "is required"}, 400)
                stub.applied.append(body)
                self._answer([{"kind": "InferenceService", "namespace": "default", "name": "iris",
                               "action": "created"}])

        self._http = StubServer(Handler)
        self.url = self._http.url

    def stop(self) -> None:
        self._http.stop()


@pytest.fixture
def apply_stub() -> Iterator[ApplyStub]:
    stub = ApplyStub()
    try:
        yield stub
    finally:
        stub.stop()
