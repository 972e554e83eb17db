"""Bad input gets a clear error, over REST and gRPC, and never a stack trace."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import grpc
import pytest
from mesh_process import MeshProcess
from slow_http import serve_dir

from kserve_mesh.protocol import v2

pytestmark = pytest.mark.integration

GOOD = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}


def _no_trace(body: Any) -> None:
    text = str(body)
    assert "Traceback" not in text and 'File "' not in text, text


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "JSON"),
        (b"[]", "object"),
        ({"inputs": []}, "input"),
        ({"id": "x"}, "inputs"),
        ({"inputs": [{**GOOD, "datatype": "FP99"}]}, "FP99"),
        ({"inputs": [{**GOOD, "data": ["a", "b", "c", "d"]}]}, "input-0"),
        ({"inputs": [{**GOOD, "shape": [2, 4]}]}, "8"),
        ({"inputs": [{**GOOD, "shape": [1, 3], "data": [1.0, 2.0, 3.0]}]}, "4"),
        ({"inputs": [{**GOOD, "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}, "input-0"),
        ({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64"}]}, "data"),
    ],
    ids=["malformed-json", "not-object", "no-inputs", "missing-inputs", "unknown-datatype", "wrong-data-type",
         "shape-vs-data", "wrong-feature-count", "wrong-datatype-for-model", "missing-data"],
)
def test_rest_bad_inference_input_is_400(mesh: MeshProcess, body: Any, fragment: str) -> None:
    status, resp = mesh.call("POST", "/v2/models/sklearn-iris/infer", body)
    assert status == 400, resp
    assert fragment in resp["error"], resp
    _no_trace(resp)


def test_rest_unknown_model_and_route(mesh: MeshProcess) -> None:
    status, resp = mesh.call("POST", "/v2/models/no-such-model/infer", {"inputs": [GOOD]})
    assert status == 404 and "no-such-model" in resp["error"]
    assert mesh.call("GET", "/v2/models/no-such-model")[0] == 404
    assert mesh.call("GET", "/v2/models/no-such-model/ready")[0] == 404
    status, resp = mesh.call("GET", "/v2/nowhere")
    assert status == 404 and "no such route" in resp["error"]
    status, resp = mesh.call("GET", "/mesh/v1/models/no-such-model")
    assert status == 404 and resp["status"] == "NOT_FOUND"


def test_rest_bad_management_input_is_400(mesh: MeshProcess) -> None:
    status, resp = mesh.call("PUT", "/mesh/v1/models/x", {"modelInfo": {"path": "/tmp"}})
    assert status == 400 and "type" in resp["error"], resp
    status, resp = mesh.call("PUT", "/mesh/v1/models/x", {"modelInfo": {"type": "sklearn"}, "bogus": 1})
    assert status == 400 and "bogus" in resp["error"], resp
    status, resp = mesh.call("PUT", "/mesh/v1/models/x", b"{nope")
    assert status == 400, resp
    _no_trace(resp)


def _grpc_call(mesh: MeshProcess, method: str, request: Any, response_type: Any, metadata: tuple = ()) -> Any:
    with grpc.insecure_channel(mesh.grpc) as channel:
        call = channel.unary_unary(v2.method(method), request_serializer=type(request).SerializeToString,
                                   response_deserializer=response_type.FromString)
        return call(request, timeout=30, metadata=metadata)


def _infer_request(**fields: Any) -> v2.ModelInferRequest:
    req = v2.ModelInferRequest(model_name=fields.pop("model_name", "sklearn-iris"))
    t = req.inputs.add(name=fields.get("name", "input-0"), datatype=fields.get("datatype", "FP64"),
                       shape=fields.get("shape", [1, 4]))
    t.contents.fp64_contents.extend(fields.get("data", [5.1, 3.5, 1.4, 0.2]))
    return req


@pytest.mark.parametrize(
    ("request_fields", "code", "fragment"),
    [
        ({"model_name": "no-such-model"}, grpc.StatusCode.NOT_FOUND, "no-such-model"),
        ({"shape": [2, 4]}, grpc.StatusCode.INVALID_ARGUMENT, "input-0"),
        ({"datatype": "INT32"}, grpc.StatusCode.INVALID_ARGUMENT, "input-0"),
        ({"shape": [1, 3], "data": [1.0, 2.0, 3.0]}, grpc.StatusCode.INVALID_ARGUMENT, "4"),
        ({"model_name": ""}, grpc.StatusCode.INVALID_ARGUMENT, "model"),
    ],
    ids=["unknown-model", "shape-vs-data", "wrong-contents-for-datatype", "wrong-feature-count", "no-model-name"],
)
def test_grpc_bad_inference_input(mesh: MeshProcess, request_fields: dict, code: grpc.StatusCode, fragment: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _grpc_call(mesh, "ModelInfer", _infer_request(**request_fields), v2.ModelInferResponse)
    assert info.value.code() == code, info.value.details()
    assert fragment in info.value.details()
    _no_trace(info.value.details())


def test_grpc_missing_inputs_and_unknown_vmodel_header(mesh: MeshProcess) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _grpc_call(mesh, "ModelInfer", v2.ModelInferRequest(model_name="sklearn-iris"), v2.ModelInferResponse)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "input" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        _grpc_call(mesh, "ModelInfer", _infer_request(), v2.ModelInferResponse, metadata=(("mm-vmodel-id", "ghost"),))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "ghost" in info.value.details()
    # The mm-model-id header wins over model_name and the response names the concrete model.
    resp = _grpc_call(mesh, "ModelInfer", _infer_request(model_name="ignored"), v2.ModelInferResponse,
                      metadata=(("mm-model-id", "sklearn-iris"),))
    assert resp.model_name == "sklearn-iris"


def test_missing_path_is_refused_and_a_vanished_one_is_loading_failed_with_the_storage_error(
        mesh: MeshProcess, example_models: tuple[Path, dict]) -> None:
    missing = example_models[0] / "does-not-exist"  # inside the --models folder: allowed, but missing
    status, body = mesh.call("PUT", "/mesh/v1/models/ghost-path",
                             {"modelInfo": {"type": "sklearn", "path": str(missing)}, "loadNow": True, "sync": True})
    assert status == 400 and body["error"] == f"model path '{missing}' does not exist", body
    assert mesh.call("GET", "/mesh/v1/models/ghost-path")[0] == 404
    missing.write_bytes(b"x")  # there when registered, gone when loaded
    status, body = mesh.call("PUT", "/mesh/v1/models/ghost-path", {"modelInfo": {"type": "sklearn", "path": str(missing)}})
    missing.unlink()
    assert status == 200, body
    status, body = mesh.call("POST", "/mesh/v1/models/ghost-path/ensure-loaded", {"sync": True})
    assert body["status"] == "LOADING_FAILED", body
    assert str(missing) in body["errors"][0] and "not" in body["errors"][0].lower(), body
    status, resp = mesh.call("POST", "/v2/models/ghost-path/infer", {"inputs": [GOOD]})
    assert status >= 400 and str(missing) in resp["error"]
    _no_trace(resp)
    assert mesh.call("DELETE", "/mesh/v1/models/ghost-path")[0] == 200


def test_path_traversal_archive_is_refused(mesh: MeshProcess, tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        payload = b"owned"
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with serve_dir(tmp_path) as base:
        status, body = mesh.call("PUT", "/mesh/v1/models/evil",
                                 {"modelInfo": {"type": "sklearn", "path": f"{base}/evil.tar.gz"},
                                  "loadNow": True, "sync": True})
    assert status == 200 and body["status"] == "LOADING_FAILED", body
    assert "escaped.txt" in body["errors"][0], body
    assert not (tmp_path.parent.parent / "escaped.txt").exists()
    assert mesh.call("DELETE", "/mesh/v1/models/evil")[0] == 200


def test_same_id_different_info_is_conflict(mesh: MeshProcess, example_models: tuple[Path, dict]) -> None:
    path = str(example_models[0] / "sklearn-iris")
    assert mesh.call("PUT", "/mesh/v1/models/dup", {"modelInfo": {"type": "sklearn", "path": path}})[0] == 200
    assert mesh.call("PUT", "/mesh/v1/models/dup", {"modelInfo": {"type": "sklearn", "path": path}})[0] == 200
    status, resp = mesh.call("PUT", "/mesh/v1/models/dup", {"modelInfo": {"type": "xgboost", "path": path}})
    assert status == 409 and "dup" in resp["error"]
    assert mesh.call("DELETE", "/mesh/v1/models/dup")[0] == 200
