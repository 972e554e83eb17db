"""The server extension's handlers in a real ``jupyter server`` (the extension enabled as its
installed config does), proxying to a stub mesh that records what it is sent and answers exactly
what a test needs: Jupyter's authentication is required, the mesh's token never comes from (or goes
to) the browser, "Deploy" paths stay inside Jupyter's root dir, and the mesh's errors come back as
JSON, in full."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from lab_process import JupyterProcess, start_jupyter
from stub_http import StubServer

pytestmark = pytest.mark.timeout(90)

MESH_TOKEN = "mesh-secret-token"
LONG_ERROR = ("input 'input-0' has 3 features; the model expects 4 " + "(and a long tail of detail) " * 40).strip()
ENABLE = {"ServerApp": {"jpserver_extensions": {"kserve_mesh.jupyter_ext.server": True}}}


class StubMesh:
    """Answers the management and V2 routes the extension uses; keeps every request."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, str], Any]] = []
        self.registered: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
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

            def _record(self) -> Any:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode()
                with stub.lock:
                    stub.calls.append((self.command, self.path, dict(self.headers), body))
                return body

            def do_GET(self) -> None:
                self._record()
                if self.path == "/mesh/v1/models":
                    return self._answer({"models": [{"modelId": m, "status": "LOADED", "errors": [], **info}
                                                    for m, info in stub.registered.items()]})
                if self.path == "/mesh/v1/vmodels":
                    return self._answer({"vmodels": [{"vModelId": "iris", "status": "DEFINED",
                                                      "activeModelId": "iris-v1", "targetModelId": "iris-v1"}]})
                if self.path == "/mesh/v1/status":
                    return self._answer({"capacityBytes": 1 << 30, "usedBytes": 1 << 20, "modelsLoaded": 1})
                if self.path.startswith("/mesh/v1/models/"):
                    model_id = self.path.rsplit("/", 1)[1]
                    return self._answer({"modelId": model_id, "status": "LOADED", "errors": []})
                if self.path.startswith("/v2/models/"):
                    return self._answer({"name": self.path.rsplit("/", 1)[1], "inputs": [
                        {"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}], "outputs": []})
                self._answer({"error": f"no route GET {self.path}"}, 404)

            def do_PUT(self) -> None:
                body = self._record()
                model_id = self.path.rsplit("/", 1)[1]
                if model_id == "taken":
                    return self._answer({"error": "model 'taken' already exists with other info", "type":
                                         "AlreadyExists"}, 409)
                stub.registered[model_id] = {"modelInfo": body["modelInfo"]}
                self._answer({"modelId": model_id, "status": "LOADING", "errors": []})

            def do_POST(self) -> None:
                body = self._record()
                if self.path.endswith("/ensure-loaded"):
                    return self._answer({"modelId": self.path.split("/")[-2], "status": "LOADED", "errors": []})
                if self.path == "/v2/models/bad/infer":
                    return self._answer({"error": LONG_ERROR, "type": "InvalidArgument"}, 400)
                if self.path.startswith("/v2/models/"):
                    rows = body["inputs"][0]["shape"][0]
                    return self._answer({"model_name": "m", "outputs": [
                        {"name": "output-0", "datatype": "INT64", "shape": [rows], "data": list(range(rows))}],
                        "echo": body})
                if self.path == "/mesh/v1/apply":
                    return self._answer({"error": "InferenceService default/iris: spec.predictor.model."
                                                  "storageUri is required"}, 400)
                self._answer({"error": f"no route POST {self.path}"}, 404)

            def do_DELETE(self) -> None:
                self._record()
                self._answer({})

        self.http = StubServer(Handler)
        self.url = self.http.url

    def paths(self, method: str) -> list[str]:
        return [p for m, p, _, _ in self.calls if m == method]


@pytest.fixture(scope="module")
def mesh() -> Iterator[StubMesh]:
    stub = StubMesh()
    try:
        yield stub
    finally:
        stub.http.stop()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jupyter-root")
    (root / "models").mkdir()
    (root / "models" / "iris clf.joblib").write_bytes(b"not really a model")
    (root / "notes.csv").write_text("a,b\n")
    (root.parent / "secret.joblib").write_bytes(b"x")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mesh: StubMesh, root: Path) -> Iterator[JupyterProcess]:
    home = tmp_path_factory.mktemp("jupyter-home")
    proc = start_jupyter(home, root, {"KSERVE_MESH_URL": mesh.url, "KSERVE_MESH_TOKEN": MESH_TOKEN},
                         app="server", config=ENABLE)
    try:
        yield proc
    finally:
        proc.stop()


def test_every_route_needs_jupyters_authentication(server: JupyterProcess, mesh: StubMesh) -> None:
    before = len(mesh.calls)
    for method, path, body in [("GET", "overview", None), ("PUT", "models/x", {"type": "sklearn"}),
                               ("DELETE", "models/x", None), ("GET", "models/x/example", None),
                               ("POST", "deploy", {"path": "models/iris clf.joblib"}),
                               ("POST", "apply", {"yaml": "kind: X"}), ("POST", "infer/x", {"inputs": [[1]]})]:
        status, answer = server.request(method, f"/kserve-mesh/{path}", body, token=False)
        assert status == 403, (method, path, status, answer)
    # A wrong token is no better.
    server.token, good = "wrong", server.token
    try:
        assert server.request("GET", "/kserve-mesh/overview")[0] == 403
    finally:
        server.token = good
    assert len(mesh.calls) == before, "an unauthenticated request reached the mesh"


def test_overview_proxies_with_the_mesh_token_from_the_server_side(server: JupyterProcess, mesh: StubMesh) -> None:
    status, body = server.request("GET", "/kserve-mesh/overview")
    assert status == 200, body
    assert body["url"] == mesh.url
    assert body["vmodels"][0]["vModelId"] == "iris"
    assert body["status"]["capacityBytes"] == 1 << 30
    _, _, headers, _ = next(c for c in reversed(mesh.calls) if c[1] == "/mesh/v1/models")
    assert headers.get("Authorization") == f"Bearer {MESH_TOKEN}"
    assert MESH_TOKEN not in json.dumps(body)


def test_deploy_registers_a_file_of_the_root_dir_and_waits_for_it(server: JupyterProcess, mesh: StubMesh,
                                                                  root: Path) -> None:
    status, body = server.request("POST", "/kserve-mesh/deploy", {"path": "models/iris clf.joblib"})
    assert status == 200, body
    assert body["modelId"] == "iris-clf" and body["type"] == "sklearn"
    assert body["status"]["status"] == "LOADED"
    info = mesh.registered["iris-clf"]["modelInfo"]
    assert info == {"type": "sklearn", "path": str((root / "models" / "iris clf.joblib").resolve()), "key": ""}
    assert "/mesh/v1/models/iris-clf/ensure-loaded" in mesh.paths("POST")
    # The dialog's id and type win over the file's.
    status, body = server.request("POST", "/kserve-mesh/deploy",
                                  {"path": "models/iris clf.joblib", "modelId": "chosen", "type": "onnx"})
    assert status == 200 and mesh.registered["chosen"]["modelInfo"]["type"] == "onnx"


@pytest.mark.parametrize("path,status,words", [
    ("../secret.joblib", 400, "'..' may not appear"),
    ("models/../../secret.joblib", 400, "'..' may not appear"),
    ("/etc/passwd", 403, "outside Jupyter's root dir"),
    ("models/missing.joblib", 404, "does not exist"),
    ("notes.csv", 400, "cannot tell the model type"),
    ("", 400, "a file path is required"),
])
def test_deploy_refuses_paths_outside_the_root_with_a_clear_4xx(server: JupyterProcess, mesh: StubMesh,
                                                                path: str, status: int, words: str) -> None:
    before = mesh.paths("PUT")
    got, body = server.request("POST", "/kserve-mesh/deploy", {"path": path})
    assert got == status, body
    assert words in body["error"] and body["type"] == "PathRefused"
    assert mesh.paths("PUT") == before, "a refused path reached the mesh"


def test_deploy_of_an_absolute_path_outside_the_root(server: JupyterProcess, root: Path) -> None:
    status, body = server.request("POST", "/kserve-mesh/deploy", {"path": str(root.parent / "secret.joblib")})
    assert status == 403 and "outside Jupyter's root dir" in body["error"]


def test_register_form_confines_local_paths_and_passes_storage_uris(server: JupyterProcess, mesh: StubMesh,
                                                                   root: Path) -> None:
    status, body = server.request("PUT", "/kserve-mesh/models/from-s3", {"type": "sklearn", "path": "s3://b/m"})
    assert status == 200, body
    assert mesh.registered["from-s3"]["modelInfo"]["path"] == "s3://b/m"
    status, body = server.request("PUT", "/kserve-mesh/models/local", {"type": "sklearn", "path": "models"})
    assert status == 200 and mesh.registered["local"]["modelInfo"]["path"] == str((root / "models").resolve())
    status, body = server.request("PUT", "/kserve-mesh/models/esc", {"type": "sklearn", "path": "file:///etc"})
    assert status == 403 and "esc" not in mesh.registered


def test_mesh_errors_come_back_in_full_as_json(server: JupyterProcess) -> None:
    status, body = server.request("POST", "/kserve-mesh/infer/bad", {"inputs": [[1, 2, 3]]})
    assert status == 400
    assert body == {"error": LONG_ERROR, "type": "InvalidInputError", "meshStatus": 400}
    status, body = server.request("PUT", "/kserve-mesh/models/taken", {"type": "sklearn", "path": "s3://b/m"})
    assert status == 409 and body["error"] == "model 'taken' already exists with other info"
    status, body = server.request("POST", "/kserve-mesh/apply", {"yaml": "kind: InferenceService\n"})
    assert status == 400 and body["error"] == ("InferenceService default/iris: spec.predictor.model.storageUri "
                                               "is required")
    status, body = server.request("POST", "/kserve-mesh/apply", {"yaml": " "})
    assert status == 400 and "no YAML" in body["error"]
    status, body = server.request("POST", "/kserve-mesh/infer/m", b"{not json")
    assert status == 400 and "not JSON" in body["error"]


def test_infer_takes_rows_or_a_v2_request_and_reports_latency(server: JupyterProcess, mesh: StubMesh) -> None:
    status, body = server.request("POST", "/kserve-mesh/infer/m", {"inputs": [[1, 2, 3, 4], [5, 6, 7, 8]]})
    assert status == 200, body
    assert body["response"]["outputs"][0]["data"] == [0, 1]
    assert body["latencyMs"] > 0 and body["model"] == "m"
    sent = body["response"]["echo"]["inputs"][0]
    assert sent == {"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6, 7, 8]}
    v2 = [{"name": "x", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]}]
    status, body = server.request("POST", "/kserve-mesh/infer/m", {"inputs": v2})
    assert status == 200 and body["response"]["echo"]["inputs"] == v2
    status, body = server.request("GET", "/kserve-mesh/models/m/example")
    assert status == 200 and body["inputs"][0]["shape"] == [1, 4]


def test_an_unreachable_mesh_is_a_502_naming_it(tmp_path: Path, root: Path) -> None:
    from lab_process import free_port

    url = f"http://127.0.0.1:{free_port()}"
    proc = start_jupyter(tmp_path, root, {"KSERVE_MESH_URL": url}, app="server", config=ENABLE)
    try:
        status, body = proc.request("GET", "/kserve-mesh/overview")
    finally:
        proc.stop()
    assert status == 502, body
    assert f"cannot reach the mesh at {url}" in body["error"] and body["meshStatus"] == 0


def test_cookie_sessions_need_the_xsrf_token_for_writes(server: JupyterProcess, mesh: StubMesh) -> None:
    """A browser session (Jupyter's login cookie) may read, but a write without the XSRF token is
    refused before it reaches the mesh; with it (as JupyterLab sends it) the write goes through."""
    import http.cookiejar
    import urllib.error
    import urllib.request

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{server.url}/login?token={server.token}", timeout=10).read()  # sets the login cookie
    opener.open(f"{server.url}/kserve-mesh/overview", timeout=10).read()
    xsrf = next(c.value for c in jar if c.name == "_xsrf")
    body = json.dumps({"type": "sklearn", "path": "s3://b/xsrf"}).encode()

    def put(headers: dict[str, str]) -> int:
        req = urllib.request.Request(f"{server.url}/kserve-mesh/models/xsrf-model", data=body, method="PUT",
                                     headers={"content-type": "application/json", **headers})
        try:
            with opener.open(req, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return err.code

    assert put({}) == 403
    assert "xsrf-model" not in mesh.registered
    assert put({"X-XSRFToken": xsrf}) == 200
    assert mesh.registered["xsrf-model"]["modelInfo"]["path"] == "s3://b/xsrf"
