"""The client SDK against a real mesh process: models, register/wait/unregister, inference with
numpy / pandas / lists / dicts / V2 JSON / binary, vmodels, and typed errors with the server's words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mesh_process import MeshProcess
from slow_http import serve_dir

from kserve_mesh.client import (
    InvalidInputError,
    LoadFailedError,
    LoadTimeoutError,
    MeshClient,
    MeshClientError,
    MeshUnavailableError,
    ModelNotFoundError,
    connect,
)

Models = tuple[Path, dict[str, Any]]
IRIS = np.array([[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]])


@pytest.fixture
def mesh(client_mesh: MeshProcess) -> Any:
    with connect(client_mesh.rest) as client:
        yield client


def _expected(models: Models, model_id: str) -> dict[str, np.ndarray]:
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in models[1][model_id]["expected"]["outputs"]}


def test_models_lists_every_example_with_state_size_copies_and_last_use(mesh: MeshClient, client_models: Models) -> None:
    rows = {m["modelId"]: m for m in mesh.models()}
    assert set(client_models[1]) <= set(rows)
    row = rows["sklearn-iris"]
    assert row["modelInfo"]["type"] == "sklearn"
    assert {"status", "sizeBytes", "copies", "lastUsedTime", "errors"} <= set(row)


def test_register_wait_until_loaded_then_unregister(mesh: MeshClient, client_models: Models) -> None:
    path = str(client_models[0] / "sklearn-iris")
    first = mesh.register("client-reg", "sklearn", path)
    assert first["modelId"] == "client-reg" and first["status"] in {"NOT_LOADED", "LOADING", "LOADED"}
    status = mesh.wait_until_loaded("client-reg", timeout=60)
    assert status["status"] == "LOADED" and status["sizeBytes"] > 0 and status["copies"] == 1
    assert mesh.status("client-reg")["status"] == "LOADED"
    np.testing.assert_array_equal(mesh.infer("client-reg", IRIS)["output-0"], [0, 1, 2])
    mesh.unregister("client-reg")
    with pytest.raises(ModelNotFoundError, match="client-reg") as err:
        mesh.status("client-reg")
    assert err.value.status == 404 and err.value.model_id == "client-reg"


def test_wait_until_loaded_raises_load_failed_with_the_mesh_errors(mesh: MeshClient, client_models: Models) -> None:
    # Inside the mesh's --models folder, so registration accepts it, but not a model: the load fails.
    broken = client_models[0] / "client-broken.joblib"
    broken.write_bytes(b"not a pickled model")
    mesh.register("client-broken", "sklearn", str(broken))
    try:
        with pytest.raises(LoadFailedError) as err:
            mesh.wait_until_loaded("client-broken", timeout=30)
        assert "cannot load sklearn model 'client-broken.joblib'" in err.value.message
        assert err.value.model_id == "client-broken"
        assert err.value.last_status is not None and err.value.last_status["status"] == "LOADING_FAILED"
        assert len(err.value.errors) == len(set(err.value.errors)) >= 1
        # Inference on it names the same cause, as a load failure.
        with pytest.raises(LoadFailedError, match="cannot load sklearn model"):
            mesh.infer("client-broken", IRIS)
    finally:
        mesh.unregister("client-broken")


def test_wait_until_loaded_times_out_with_the_last_status(mesh: MeshClient, client_models: Models) -> None:
    with serve_dir(client_models[0], delay_s=3.0) as base:
        mesh.register("client-slow", "string", f"{base}/string-1/model.string")
        try:
            with pytest.raises(LoadTimeoutError, match="not loaded after 0.5 s") as err:
                mesh.wait_until_loaded("client-slow", timeout=0.5)
            assert err.value.last_status is not None and err.value.last_status["status"] == "LOADING"
            assert mesh.wait_until_loaded("client-slow", timeout=30)["status"] == "LOADED"
        finally:
            mesh.unregister("client-slow")


def test_wait_until_loaded_of_an_unknown_model(mesh: MeshClient) -> None:
    with pytest.raises(ModelNotFoundError, match="'client-ghost' not found"):
        mesh.wait_until_loaded("client-ghost", timeout=5)


@pytest.mark.parametrize("model_id", ["sklearn-iris", "xgboost-iris", "lightgbm-iris", "onnx-iris"])
@pytest.mark.parametrize("binary", [False, True])
def test_infer_numpy_in_numpy_out(mesh: MeshClient, client_models: Models, model_id: str, binary: bool) -> None:
    # float64 rows also go to FP32 models: the datatype comes from the model's metadata.
    out = mesh.infer(model_id, IRIS, binary=binary)
    expected = _expected(client_models, model_id)
    assert set(out) == set(expected)
    for name, want in expected.items():
        assert out[name].shape == want.shape
        np.testing.assert_allclose(out[name], want, rtol=1e-6)


def test_infer_accepts_lists_dataframes_dicts_and_v2_json(mesh: MeshClient, client_models: Models) -> None:
    want = [0, 1, 2]
    frame = pd.DataFrame(IRIS, columns=["sepal_length", "sepal_width", "petal_length", "petal_width"])
    request = client_models[1]["sklearn-iris"]["request"]
    for inputs in (IRIS.tolist(), frame, {"input-0": IRIS}, request):
        out = mesh.infer("sklearn-iris", inputs)
        assert out["output-0"].dtype == np.int64
        np.testing.assert_array_equal(out["output-0"], want)


@pytest.mark.parametrize("binary", [False, True])
def test_infer_strings(mesh: MeshClient, binary: bool) -> None:
    out = mesh.infer("string-1", np.array(["hello", "wörld"]), binary=binary)
    assert out["output-0"].tolist() == ["string-1:hello", "string-1:wörld"]


def test_infer_json_and_example_request_round_trip(mesh: MeshClient) -> None:
    request = mesh.example_request("onnx-iris")
    assert request["inputs"][0]["shape"] == [1, 4] and request["inputs"][0]["datatype"] == "FP32"
    response = mesh.infer_json("onnx-iris", request)
    assert {o["name"] for o in response["outputs"]} == {"label", "probabilities"}
    meta = mesh.metadata("onnx-iris")
    assert meta["inputs"][0] == {"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}


def test_bad_inputs_are_typed_errors_with_the_mesh_message(mesh: MeshClient) -> None:
    with pytest.raises(InvalidInputError, match="has 3 features; the model expects 4") as err:
        mesh.infer("sklearn-iris", [[1.0, 2.0, 3.0]])
    assert err.value.status == 400
    with pytest.raises(InvalidInputError, match="unknown input 'x'.*'input-0'"):
        mesh.infer("sklearn-iris", {"x": IRIS})
    with pytest.raises(ModelNotFoundError, match="model 'client-nope' not found"):
        mesh.infer("client-nope", IRIS)
    with pytest.raises(InvalidInputError, match="without '/'"):
        mesh.status("a/b")
    with pytest.raises(InvalidInputError, match="model type is required"):
        mesh.register("client-x", "", "/tmp")


def test_vmodel_switch(mesh: MeshClient, client_models: Models) -> None:
    mesh.register("client-v1", "sklearn", str(client_models[0] / "sklearn-iris"))
    mesh.register("client-v2", "lightgbm", str(client_models[0] / "lightgbm-iris"))
    try:
        assert mesh.set_vmodel("client-iris", "client-v1", loadNow=True, sync=True)["activeModelId"] == "client-v1"
        assert mesh.infer("client-iris", IRIS)["output-0"].shape == (3,)
        status = mesh.set_vmodel("client-iris", "client-v2", loadNow=True, sync=True)
        assert status["activeModelId"] == "client-v2"
        assert mesh.infer("client-iris", IRIS)["output-0"].shape == (3, 3)
        assert mesh.vmodel("client-iris")["targetModelId"] == "client-v2"
        assert "client-iris" in {v["vModelId"] for v in mesh.vmodels()}
    finally:
        mesh.delete_vmodel("client-iris")
        mesh.unregister("client-v1")
        mesh.unregister("client-v2")
    with pytest.raises(ModelNotFoundError, match="vmodel 'client-iris' not found"):
        mesh.vmodel("client-iris")


def test_server_status(mesh: MeshClient) -> None:
    info = mesh.server_status()
    assert info["capacityBytes"] > 0 and info["modelsRegistered"] >= 5


def test_unreachable_mesh_is_mesh_unavailable() -> None:
    with MeshClient("http://127.0.0.1:9", timeout=5) as client:
        with pytest.raises(MeshUnavailableError, match="cannot reach the mesh at http://127.0.0.1:9") as err:
            client.models()
    assert err.value.status == 0 and isinstance(err.value, MeshClientError)


def test_a_url_without_scheme_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="must start with http"):
        connect("127.0.0.1:8008")
