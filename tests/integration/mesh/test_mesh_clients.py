"""A real mesh process driven by V2 clients that no one here wrote: tritonclient (HTTP and gRPC)
and kserve's InferenceRESTClient / InferenceGRPCClient, over sklearn, xgboost, lightgbm and onnx
models, with the built-in runtime in-process and as its own process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc_clients
import numpy as np
import pytest
from mesh_process import MeshProcess

pytestmark = pytest.mark.integration

MODELS = ["sklearn-iris", "xgboost-iris", "lightgbm-iris", "onnx-iris", "string-1"]
HERE = Path(__file__).resolve().parent


def _cases(inputs: dict[str, Any]) -> dict[str, Any]:
    return {m: inputs[m] for m in MODELS}


def _check(result: dict[str, Any], inputs: dict[str, Any]) -> None:
    assert "error" not in result, result.get("error")
    for model_id in MODELS:
        got = result[model_id]
        assert got.get("__model_name__", model_id) == model_id
        for out in inputs[model_id]["expected"]["outputs"]:
            expected = out["data"]
            if out["datatype"] == "BYTES":
                assert got[out["name"]] == expected, model_id
            else:
                np.testing.assert_allclose(np.asarray(got[out["name"]], dtype=np.float64),
                                           np.asarray(expected, dtype=np.float64), rtol=1e-5, atol=1e-6,
                                           err_msg=f"{model_id}/{out['name']}")


def _grpc_client(which: str, target: str, cases: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    return grpc_clients.run(which, target, cases, tmp_path)


def _triton_http(rest_url: str, inputs: dict[str, Any], binary: bool) -> dict[str, Any]:
    import tritonclient.http as th

    client = th.InferenceServerClient(rest_url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        out: dict[str, Any] = {}
        for model_id in MODELS:
            tensors = []
            for t in inputs[model_id]["request"]["inputs"]:
                if t["datatype"] == "BYTES":
                    arr = np.array([s.encode() for s in t["data"]], dtype=np.object_).reshape(t["shape"])
                else:
                    arr = np.array(t["data"], dtype={"FP32": np.float32, "FP64": np.float64}[t["datatype"]]).reshape(t["shape"])
                inp = th.InferInput(t["name"], list(arr.shape), t["datatype"])
                inp.set_data_from_numpy(arr, binary_data=binary)
                tensors.append(inp)
            outputs = [th.InferRequestedOutput(o["name"], binary_data=binary)
                       for o in inputs[model_id]["expected"]["outputs"]]
            result = client.infer(model_id, tensors, outputs=outputs)
            resp = result.get_response()
            out[model_id] = {o["name"]: [v.decode() if isinstance(v, bytes) else v
                                         for v in result.as_numpy(o["name"]).ravel().tolist()]
                             for o in resp["outputs"]}
            out[model_id]["__model_name__"] = resp["model_name"]
            assert client.is_model_ready(model_id)
            meta = client.get_model_metadata(model_id)
            assert meta["name"] == model_id and meta["inputs"]
        return out
    finally:
        client.close()


async def _kserve_rest(rest_url: str, inputs: dict[str, Any]) -> dict[str, Any]:
    import httpx
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60, transport=httpx.AsyncHTTPTransport()))
    out: dict[str, Any] = {}
    try:
        assert await client.is_server_ready(rest_url)
        for model_id in MODELS:
            tensors = []
            for t in inputs[model_id]["request"]["inputs"]:
                inp = InferInput(t["name"], t["shape"], t["datatype"], data=t["data"])
                tensors.append(inp)
            resp = await client.infer(rest_url, InferRequest(model_name=model_id, infer_inputs=tensors),
                                      model_name=model_id)
            out[model_id] = {o.name: [v.decode() if isinstance(v, bytes) else v for v in o.as_numpy().ravel().tolist()]
                             for o in resp.outputs}
            out[model_id]["__model_name__"] = resp.model_name
    finally:
        await client.close()
    return out


@pytest.fixture(params=["inprocess", "process"])
def any_mesh(request: pytest.FixtureRequest, mesh: MeshProcess, mesh_with_runtime_process: MeshProcess) -> MeshProcess:
    return mesh if request.param == "inprocess" else mesh_with_runtime_process


def test_tritonclient_http_json(any_mesh: MeshProcess, example_models: tuple[Path, dict[str, Any]]) -> None:
    _check(_triton_http(any_mesh.rest, example_models[1], binary=False), example_models[1])


def test_tritonclient_http_binary_extension(any_mesh: MeshProcess, example_models: tuple[Path, dict[str, Any]]) -> None:
    _check(_triton_http(any_mesh.rest, example_models[1], binary=True), example_models[1])


def test_tritonclient_grpc(any_mesh: MeshProcess, example_models: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    result = _grpc_client("triton", any_mesh.grpc, _cases(example_models[1]), tmp_path)
    _check(result, example_models[1])
    assert set(MODELS) <= set(result["__index__"])


def test_tritonclient_grpc_repository_load_and_unload(mesh: MeshProcess, tmp_path: Path) -> None:
    # tritonclient sends Triton's RepositoryModelLoadRequest (model name in field 2, KServe's V2 has it in field 1).
    result = _grpc_client("triton-repository", mesh.grpc, {"models": ["string-1", "sklearn-iris"]}, tmp_path)
    assert result == {"string-1": {"loaded": True, "unloaded": True},
                      "sklearn-iris": {"loaded": True, "unloaded": True},
                      "__missing__": "StatusCode.NOT_FOUND"}, result


def test_kserve_grpc_client(any_mesh: MeshProcess, example_models: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    _check(_grpc_client("kserve", any_mesh.grpc, _cases(example_models[1]), tmp_path), example_models[1])


def test_kserve_rest_client(any_mesh: MeshProcess, example_models: tuple[Path, dict[str, Any]]) -> None:
    _check(asyncio.run(_kserve_rest(any_mesh.rest, example_models[1])), example_models[1])
