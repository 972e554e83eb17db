"""Fixtures of the client SDK tests: a real mesh serving the example models, and a stub of the
KServe-integration routes (``/mesh/v1/apply``, ``/mesh/v1/inferenceservices``), which the mesh does
not serve yet."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from example_models import make_models_module
from mesh_process import MeshProcess
from stub_http import StubServer


@pytest.fixture(scope="session")
def client_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("client-models")
    return out, make_models_module().make_all(out, string_models=1)


@pytest.fixture(scope="module")
def client_mesh(client_models: tuple[Path, dict[str, Any]]) -> Iterator[MeshProcess]:
    proc = MeshProcess.start("--models", str(client_models[0]))
    try:
        yield proc
    finally:
        proc.stop()


class KubeStub:
    """Answers the KServe-integration routes like the mesh will, and records what it was sent."""

    ISVC = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "iris", "namespace": "team-a"},
            "status": {"url": "http://iris.team-a", "conditions": [{"type": "Ready", "status": "True"}]}}
    OTHER = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
             "metadata": {"name": "wine", "namespace": "team-b"}, "status": {}}

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _record(self) -> bytes:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                stub.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                return body

            def do_POST(self) -> None:
                body = self._record()
                if self.path != "/mesh/v1/apply":
                    return self._answer(404, {"error": f"no such route: POST {self.path}"})
                if b"kind: Broken" in body:
                    return self._answer(400, {"error": "document 1: InferenceService spec.predictor is required"})
                self._answer(200, [{"kind": "InferenceService", "namespace": "team-a", "name": "iris",
                                    "action": "created"}])

            def do_GET(self) -> None:
                self._record()
                url = urlsplit(self.path)
                if url.path == "/mesh/v1/inferenceservices":
                    namespace = parse_qs(url.query).get("namespace", [""])[0]
                    items = [i for i in (stub.ISVC, stub.OTHER)
                             if not namespace or i["metadata"]["namespace"] == namespace]
                    return self._answer(200, {"kind": "InferenceServiceList", "items": items})
                if self.path == "/mesh/v1/inferenceservices/team-a/iris":
                    return self._answer(200, stub.ISVC)
                self._answer(404, {"error": "InferenceService team-a/nope not found"})

            def do_DELETE(self) -> None:
                self._record()
                if self.path == "/mesh/v1/inferenceservices/team-a/iris":
                    return self._answer(200, {})
                self._answer(404, {"error": "InferenceService team-a/nope not found"})

        self._http = StubServer(Handler)
        self.url = self._http.url

    def stop(self) -> None:
        self._http.stop()


@pytest.fixture
def kube_stub() -> Iterator[KubeStub]:
    stub = KubeStub()
    try:
        yield stub
    finally:
        stub.stop()
