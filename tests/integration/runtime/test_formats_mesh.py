"""The built-in runtime's new formats through a real ``kserve-mesh up`` process: tiny TorchScript,
Keras, SavedModel, OpenVINO IR and custom Python models made here, served from the models folder
and answered over V2 REST and V2 gRPC, checked against numpy; and ModelMesh Serving's own example
InferenceServices for keras, pytorch and tensorflow (config/example-isvcs, verbatim) applied to the
mesh with their ``localMinIO`` storage key pointing at a real S3-protocol server that holds local
copies of models made here, in ModelMesh Serving's example layout — each reaches Loaded and
answers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from format_models import (
    X,
    expected,
    make_custom,
    make_keras,
    make_openvino,
    make_savedmodel,
    make_torch_triton_layout,
    make_torchscript,
)
from mesh_process import MeshProcess
from storage_servers import S3Server, nanio  # noqa: F401 - fixture

from kserve_mesh.protocol import tensors, v2

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
BUCKET = "modelmesh-example-models"

# ModelMesh Serving's config/example-isvcs (Apache-2.0), as published.
UPSTREAM_ISVCS = {
    "example-keras-mnist": """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: example-keras-mnist
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat:
        name: keras
      storage:
        key: localMinIO
        path: keras/mnist.h5
""",
    "example-pytorch-cifar": """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: example-pytorch-cifar
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat:
        name: pytorch
      storage:
        key: localMinIO
        path: pytorch/cifar
""",
    "example-tensorflow-mnist": """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: example-tensorflow-mnist
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat:
        name: tensorflow
      storage:
        key: localMinIO
        path: tensorflow/mnist.savedmodel
""",
}

# model id in the models folder -> (input name, output name)
FOLDER_MODELS = {
    "torch-clf": ("x", "output-0"),
    "torch-cifar": ("INPUT__0", "OUTPUT__0"),
    "keras-clf": ("features", "probs"),
    "tf-clf": ("features", "output_0"),
    "ov-clf": ("features", "probs"),
    "custom-clf": ("x", "probs"),
}
# the upstream InferenceServices -> (input name, output name) of the models made for them
UPSTREAM_MODELS = {
    "example-keras-mnist": ("features", "probs"),
    "example-pytorch-cifar": ("INPUT__0", "OUTPUT__0"),
    "example-tensorflow-mnist": ("features", "output_0"),
}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the mesh's models folder, ModelMesh Serving's example bucket layout), every model made here."""
    models = tmp_path_factory.mktemp("models")
    make_torchscript(models / "torch-clf")
    make_torch_triton_layout(models / "torch-cifar")
    make_keras(models / "keras-clf")
    make_savedmodel(models / "tf-clf")
    make_openvino(models / "ov-clf")
    make_custom(models / "custom-clf", labels=["a", "b", "c"])
    shutil.copytree(REPO / "examples" / "custom-model", models / "sentiment")
    bucket = tmp_path_factory.mktemp("bucket")
    make_keras(bucket / "keras", "mnist.h5")
    make_torch_triton_layout(bucket / "pytorch" / "cifar")
    make_savedmodel(bucket / "tensorflow" / "mnist.savedmodel")
    return models, bucket


@pytest.fixture(scope="module")
def formats_mesh(made: tuple[Path, Path], nanio: S3Server,  # noqa: F811
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshProcess]:
    models, bucket = made
    s3 = nanio.client()
    s3.create_bucket(Bucket=BUCKET)
    for path in sorted(p for p in bucket.rglob("*") if p.is_file()):
        s3.upload_file(str(path), BUCKET, path.relative_to(bucket).as_posix())
    config = tmp_path_factory.mktemp("storage-config") / "storage-config.json"
    entry = {"type": "s3", "access_key_id": nanio.access_key, "secret_access_key": nanio.secret_key,
             "endpoint_url": nanio.endpoint, "region": "us-east-1", "default_bucket": BUCKET}
    config.write_text(json.dumps({"localMinIO": json.dumps(entry)}))
    proc = MeshProcess.start("--models", str(models), "--storage-config", str(config))
    try:
        yield proc
    finally:
        proc.stop()


def rest_infer(mesh: MeshProcess, model: str, name: str, arr: np.ndarray) -> dict[str, Any]:
    body = {"inputs": [{"name": name, "datatype": "FP32", "shape": list(arr.shape), "data": arr.ravel().tolist()}]}
    status, out = mesh.call("POST", f"/v2/models/{model}/infer", body, timeout=120)
    assert status == 200, out
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in out["outputs"]}


def grpc_infer(mesh: MeshProcess, model: str, name: str, arr: np.ndarray) -> dict[str, np.ndarray]:
    request = tensors.encode_request(model, {name: arr}, raw=True)
    with grpc.insecure_channel(mesh.grpc) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                   request_serializer=v2.ModelInferRequest.SerializeToString,
                                   response_deserializer=v2.ModelInferResponse.FromString)
        response = call(request, timeout=120)
    assert response.model_name == model or response.model_name.startswith(f"{model}__isvc-")  # a vmodel's model
    return tensors.decode_outputs(response)


@pytest.mark.parametrize("model", sorted(FOLDER_MODELS))
def test_each_format_answers_over_rest_and_grpc(formats_mesh: MeshProcess, model: str) -> None:
    inp, out = FOLDER_MODELS[model]
    np.testing.assert_allclose(rest_infer(formats_mesh, model, inp, X)[out], expected(), rtol=1e-5)
    np.testing.assert_allclose(grpc_infer(formats_mesh, model, inp, X)[out], expected(), rtol=1e-5)
    status, meta = formats_mesh.call("GET", f"/v2/models/{model}")
    assert status == 200 and meta["inputs"][0]["name"] == inp and meta["outputs"][0]["name"] == out, meta
    status, body = formats_mesh.call("GET", f"/mesh/v1/models/{model}")
    assert status == 200 and body["status"] == "LOADED", body


def test_wrong_inputs_and_the_example_custom_model(formats_mesh: MeshProcess) -> None:
    bad = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 5], "data": [1.0] * 5}]}
    status, body = formats_mesh.call("POST", "/v2/models/ov-clf/infer", bad)
    assert status == 400 and "has 5 features; the model expects 4" in json.dumps(body), body
    text = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3],
                        "data": ["a great day", "awful and broken", "plain words"]}]}
    status, body = formats_mesh.call("POST", "/v2/models/sentiment/infer", text)
    assert status == 200, body
    outputs = {o["name"]: o["data"] for o in body["outputs"]}
    assert outputs == {"score": [1.0, -2.0, 0.0], "label": ["positive", "negative", "neutral"]}
    status, body = formats_mesh.call("GET", "/mesh/v1/status")
    assert status == 200 and {"pytorch", "tensorflow", "keras", "openvino_ir", "python"} <= set(body["modelTypes"])


def cli(mesh: MeshProcess, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "kserve_mesh.cli", *args, "--url", mesh.rest],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    return done.stdout


def test_modelmesh_serving_example_isvcs_reach_loaded(formats_mesh: MeshProcess, tmp_path: Path) -> None:
    for name, text in UPSTREAM_ISVCS.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    out = cli(formats_mesh, "apply", "-f", str(tmp_path))
    assert sorted(out.strip().splitlines()) == sorted(f"inferenceservice.serving.kserve.io/{n} created"
                                                      for n in UPSTREAM_ISVCS)
    deadline = time.monotonic() + 120
    pending = set(UPSTREAM_ISVCS)
    last: dict[str, Any] = {}
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            obj = json.loads(cli(formats_mesh, "get", "isvc", name, "-o", "json"))
            last[name] = obj.get("status")
            states = obj.get("status", {}).get("modelStatus", {}).get("states", {})
            if states.get("activeModelState") == "Loaded":
                pending.discard(name)
        time.sleep(0.2)
    assert not pending, {n: last.get(n) for n in pending}
    for name, (inp, out) in UPSTREAM_MODELS.items():
        np.testing.assert_allclose(rest_infer(formats_mesh, name, inp, X)[out], expected(), rtol=1e-5)
        np.testing.assert_allclose(grpc_infer(formats_mesh, name, inp, X)[out], expected(), rtol=1e-5)
