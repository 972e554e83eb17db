"""The components' own functions (``component.python_func``): bad inputs fail before any network
call, an unreachable mesh is named, and register_model / deploy_inference_service follow the mesh's
REST contract through loads that succeed, fail or never finish.

Loopback stubs answer that contract (management ``/mesh/v1/models``, ``POST /mesh/v1/apply``,
``GET /mesh/v1/inferenceservices/{ns}/{name}``) so the timing cases (a load that never ends, a
state sequence) are exact and fast; tests/e2e/pipelines runs the same components on a real mesh.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kfp.dsl import Metrics
from kserve_mesh_pipelines import deploy_inference_service, register_model, smoke_test

REQUEST = json.dumps({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
EXPECTED = json.dumps({"outputs": [{"name": "output-0", "data": [0]}]})


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _metrics(tmp_path: Path) -> Metrics:
    return Metrics(name="metrics", uri=str(tmp_path / "metrics"))


# -- input validation, before any network call -------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mesh_url": "127.0.0.1:8008"}, "mesh_url must be an http:// or https:// URL"),
    ({"model_id": "a/b"}, "model_id must not contain '/'"),
    ({"model_format": ""}, "model_format must not be empty"),
    ({"storage_uri": " "}, "storage_uri must not be empty"),
    ({"timeout_s": 0}, "timeout_s must be a positive number"),
    ({"storage_key": "{bad"}, "storage_key looks like JSON but does not parse"),
])
def test_register_model_rejects_bad_inputs(kwargs: dict[str, Any], message: str) -> None:
    args = {"mesh_url": _closed_port_url(), "model_id": "m", "model_format": "sklearn",
            "storage_uri": "s3://b/m.joblib", "storage_key": "k", "timeout_s": 5.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        register_model.python_func(**args)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"model_name": ""}, "model_name must not be empty"),
    ({"request_json": "{"}, "request_json is not valid JSON"),
    ({"expected_json": '{"outputs": [{"name": "y"}]}'}, r"expected_json: outputs\[0\] must be an object"),
    ({"tolerance": -1.0}, "tolerance must be a finite number >= 0"),
])
def test_smoke_test_rejects_bad_inputs(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    args = {"mesh_url": _closed_port_url(), "model_name": "m", "request_json": REQUEST,
            "expected_json": EXPECTED, "tolerance": 0.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        smoke_test.python_func(metrics=_metrics(tmp_path), **args)


def test_deploy_rejects_invalid_yaml_before_calling_the_mesh() -> None:
    with pytest.raises(ValueError, match="isvc_yaml is not valid YAML"):
        deploy_inference_service.python_func(mesh_url=_closed_port_url(), isvc_yaml="a: [b", timeout_s=5.0)


def test_an_unreachable_mesh_is_named(tmp_path: Path) -> None:
    url = _closed_port_url()
    with pytest.raises(RuntimeError, match=rf"inference on model 'm' failed: cannot reach the mesh at {url}"):
        smoke_test.python_func(mesh_url=url, model_name="m", request_json=REQUEST, expected_json=EXPECTED,
                               metrics=_metrics(tmp_path), tolerance=0.0, timeout_s=5.0)


# -- loopback stubs of the mesh's REST contract ------------------------------------------------
class JsonHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def send(self, code: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def body(self) -> Any:
        return json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"null")


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a loopback port in a thread; yields the base URL; stops it by its handle."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="mesh-stub", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- deploy_inference_service against the apply contract ---------------------------------------
ISVC = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: iris
  namespace: team-a
  annotations: {serving.kserve.io/deploymentMode: ModelMesh}
spec:
  predictor:
    model: {modelFormat: {name: sklearn}, storageUri: "s3://models/iris/model.joblib"}
"""


@dataclass
class ApplyStub:
    """Answers the apply contract; ``states`` are the activeModelStates that successive GETs see."""

    states: list[str]
    failure: dict[str, str] = field(default_factory=dict)
    applied: list[tuple[str, str]] = field(default_factory=list)
    gets: int = 0
    url: str = ""


@pytest.fixture
def apply_stub() -> Iterator[ApplyStub]:
    stub = ApplyStub(states=["Pending", "Loading", "Loaded"])

    class Handler(JsonHandler):
        def do_POST(self) -> None:
            text = self.rfile.read(int(self.headers["content-length"])).decode()
            stub.applied.append((self.headers["content-type"], text))
            if self.path != "/mesh/v1/apply":
                return self.send(404, {"error": f"no such route: POST {self.path}"})
            if "storageUri" not in text:
                return self.send(400, {"error": "spec.predictor.model: storageUri or storage.path is required"})
            self.send(200, [{"kind": "InferenceService", "namespace": "team-a", "name": "iris", "action": "created"}])

        def do_GET(self) -> None:
            if self.path != "/mesh/v1/inferenceservices/team-a/iris":
                return self.send(404, {"error": f"InferenceService {self.path} not found"})
            state = stub.states[min(stub.gets, len(stub.states) - 1)]
            stub.gets += 1
            status: dict[str, Any] = {"modelStatus": {"states": {"activeModelState": state}}}
            if stub.failure:
                status["modelStatus"]["lastFailureInfo"] = stub.failure
            if state == "Loaded":
                status["url"] = "http://iris.team-a.example"
                status["components"] = {"predictor": {"restUrl": "http://iris.team-a.example:8008"}}
            self.send(200, {"kind": "InferenceService", "status": status})

    with serve(Handler) as stub.url:
        yield stub


def test_deploy_applies_the_yaml_waits_for_loaded_and_outputs_the_rest_url(apply_stub: ApplyStub) -> None:
    out = deploy_inference_service.python_func(mesh_url=apply_stub.url, isvc_yaml=ISVC, timeout_s=10.0)
    assert (out.url, out.model_name) == ("http://iris.team-a.example:8008", "iris")
    assert apply_stub.applied == [("application/yaml", ISVC)]
    assert apply_stub.gets == 3


def test_deploy_fails_with_the_last_failure_info(apply_stub: ApplyStub) -> None:
    apply_stub.states = ["Loading", "FailedToLoad"]
    apply_stub.failure = {"reason": "ModelLoadFailed", "message": "no such key: iris/model.joblib"}
    with pytest.raises(RuntimeError, match=r"InferenceService team-a/iris failed to load \(ModelLoadFailed\): "
                                           r"no such key: iris/model.joblib"):
        deploy_inference_service.python_func(mesh_url=apply_stub.url, isvc_yaml=ISVC, timeout_s=10.0)


def test_deploy_times_out_naming_the_last_state(apply_stub: ApplyStub) -> None:
    apply_stub.states = ["Loading"]
    with pytest.raises(TimeoutError, match=r"InferenceService team-a/iris was not Loaded within 0.5 s "
                                           r"\(activeModelState Loading\)"):
        deploy_inference_service.python_func(mesh_url=apply_stub.url, isvc_yaml=ISVC, timeout_s=0.5)


def test_deploy_follows_the_namespace_the_mesh_applied_to(apply_stub: ApplyStub) -> None:
    without_namespace = ISVC.replace("  namespace: team-a\n", "")
    out = deploy_inference_service.python_func(mesh_url=apply_stub.url, isvc_yaml=without_namespace, timeout_s=10.0)
    assert out.model_name == "iris" and apply_stub.gets == 3


def test_deploy_reports_the_meshs_refusal(apply_stub: ApplyStub) -> None:
    refused = ISVC.replace("storageUri", "storageURI")
    with pytest.raises(RuntimeError, match=r"apply InferenceService team-a/iris failed: "
                                           r"spec.predictor.model: storageUri or storage.path is required "
                                           r"\(HTTP 400 from http://127.0.0.1:\d+\)"):
        deploy_inference_service.python_func(mesh_url=apply_stub.url, isvc_yaml=refused, timeout_s=5.0)


# -- register_model's wait ---------------------------------------------------------------------
@dataclass
class ModelStub:
    """PUT registers; GET answers ``states`` in turn (the last one repeats); ensure-loaded is counted."""

    states: list[str]
    errors: list[str] = field(default_factory=list)
    gets: int = 0
    ensure_loaded: int = 0
    registered: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def model_stub() -> Iterator[ModelStub]:
    stub = ModelStub(states=["LOADING", "LOADED"])

    class Handler(JsonHandler):
        def do_PUT(self) -> None:
            stub.registered.append(self.body())
            self.send(200, {"modelId": "m", "status": "NOT_LOADED", "errors": []})

        def do_POST(self) -> None:
            self.body()
            stub.ensure_loaded += 1
            self.send(200, {"modelId": "m", "status": "LOADING", "errors": []})

        def do_GET(self) -> None:
            state = stub.states[min(stub.gets, len(stub.states) - 1)]
            stub.gets += 1
            self.send(200, {"modelId": "m", "status": state, "errors": stub.errors})

    with serve(Handler) as stub.url:
        yield stub


def _register(stub: ModelStub, timeout_s: float = 10.0) -> Any:
    return register_model.python_func(mesh_url=stub.url + "/", model_id="m", model_format="sklearn",
                                      storage_uri="s3://b/m.joblib", storage_key="k", timeout_s=timeout_s)


def test_register_waits_for_loaded_asking_for_a_load_while_not_loaded(model_stub: ModelStub) -> None:
    model_stub.states = ["NOT_LOADED", "LOADING", "LOADED"]
    out = _register(model_stub)
    assert (out.model_id, out.endpoint) == ("m", f"{model_stub.url}/v2/models/m")
    assert model_stub.registered == [{"modelInfo": {"type": "sklearn", "path": "s3://b/m.joblib",
                                                    "key": '{"storage_key": "k"}'}, "loadNow": True}]
    assert (model_stub.gets, model_stub.ensure_loaded) == (3, 1)


def test_register_fails_with_the_load_errors(model_stub: ModelStub) -> None:
    model_stub.states, model_stub.errors = ["LOADING", "LOADING_FAILED"], ["runtime: bad pickle", "again"]
    with pytest.raises(RuntimeError, match=r"^model 'm' failed to load: runtime: bad pickle; again$"):
        _register(model_stub)


def test_register_times_out_naming_the_last_state(model_stub: ModelStub) -> None:
    model_stub.states = ["LOADING"]
    with pytest.raises(TimeoutError, match=r"^model 'm' was not loaded within 0.5 s \(last state LOADING\)$"):
        _register(model_stub, timeout_s=0.5)
