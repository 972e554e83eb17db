"""End to end: the MLServer adapter as its own runtime process (``python -m
kserve_mesh.runtime.mlserver``) behind a mesh instance (``kserve-mesh instance --runtime remote``);
inference through the mesh's REST and gRPC front doors reaches a real MLServer."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from child_process import pid_alive, readline, stop
from conftest import PYTHON, ROOT, child_env
from mesh_process import MeshProcess

from kserve_mesh.protocol import tensors, v2

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]  # the first run builds the venv


MLSERVER_READY = re.compile(r"MLServer (\d+) ready: rest=(\S+) grpc=(\S+)")


@dataclass
class Adapter:
    proc: subprocess.Popen[str]
    address: str  # host:port of its ModelRuntime gRPC server
    mlserver_pid: int
    mlserver_rest: str


@pytest.fixture
def adapter(mlserver_venv: Path, tmp_path: Path, sklearn_model: tuple[Path, dict[str, Any]]) -> Iterator[Adapter]:
    """The adapter as a runtime process; its log (stderr) goes to a file so it never blocks on a pipe.
    It may read the test model's folder (``--allow-local-path``), as the mesh in front of it may."""
    log_path = tmp_path / "adapter.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [PYTHON, "-m", "kserve_mesh.runtime.mlserver", "--port", "0", "--capacity-bytes", "256Mi",
             "--log-level", "INFO", "--allow-local-path", str(sklearn_model[0].parent)],
            stdout=subprocess.PIPE, stderr=log, text=True, env=child_env(mlserver_venv), cwd=ROOT,
        )
    try:
        line = readline(proc, 120, "the MLServer runtime adapter")
        assert line.startswith("runtime listening on 127.0.0.1:"), line + log_path.read_text()
        m = MLSERVER_READY.search(log_path.read_text())
        assert m, log_path.read_text()
        yield Adapter(proc, line.rsplit(" ", 1)[1], int(m.group(1)), m.group(2))
    finally:
        stop(proc)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture
def mesh(adapter: Adapter, sklearn_model: tuple[Path, dict[str, Any]]
         ) -> Iterator[MeshProcess]:
    models = sklearn_model[0].parent
    mesh = MeshProcess.start("--runtime", "remote", "--runtime-address", adapter.address, "--models", str(models),
                             command="instance", cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    try:
        yield mesh
    finally:
        mesh.stop()


def test_mesh_serves_an_sklearn_model_from_mlserver(
    adapter: Adapter, mesh: MeshProcess, sklearn_model: tuple[Path, dict[str, Any]]
) -> None:
    _, sample = sklearn_model
    # REST V2 through the mesh: loads on first use, into MLServer.
    status, body = mesh.call("POST", "/v2/models/sklearn-iris/infer", sample["request"])
    assert status == 200, body
    (output,) = body["outputs"]
    assert output["data"] == sample["expected"]["outputs"][0]["data"] == [0, 1, 2]
    model = mesh.wait_state("sklearn-iris", {"LOADED"})
    assert model["sizeBytes"] > 0

    # V2 gRPC through the mesh.
    with grpc.insecure_channel(mesh.grpc.removeprefix("http://")) as channel:
        infer = channel.unary_unary(v2.method("ModelInfer"), request_serializer=v2.ModelInferRequest.SerializeToString,
                                    response_deserializer=v2.ModelInferResponse.FromString)
        rows = np.asarray(sample["request"]["inputs"][0]["data"], dtype=np.float64).reshape(3, 4)
        request = tensors.encode_request("sklearn-iris", {"input-0": rows}, raw=True)
        response = infer(request, timeout=30)
    (got,) = tensors.decode_outputs(response).values()
    assert got.ravel().tolist() == [0, 1, 2]

    # Bad input: a clear 400, no trace.
    bad = {"inputs": [{**sample["request"]["inputs"][0], "data": [1.0, 2.0]}]}
    status, body = mesh.call("POST", "/v2/models/sklearn-iris/infer", bad)
    assert status == 400 and "input-0" in body["error"] and "Traceback" not in str(body)

    # A model MLServer cannot serve here fails to load with a message naming the type (a remote
    # runtime's types are not known to the mesh, so the registration takes it).
    status, body = mesh.call("PUT", "/mesh/v1/models/onnx-one",
                             {"modelInfo": {"type": "onnx", "path": str(sklearn_model[0])},
                              "loadNow": True, "sync": True})
    assert status == 200 and body["status"] == "LOADING_FAILED", body
    assert "cannot serve model type 'onnx'" in body["errors"][0]
    # A local path that does not exist is refused at registration, whatever the runtime.
    status, body = mesh.call("PUT", "/mesh/v1/models/nowhere",
                             {"modelInfo": {"type": "sklearn", "path": str(sklearn_model[0].parent / "nowhere")}})
    assert status == 400 and "does not exist" in body["error"], body

    # Unregistering unloads it from MLServer.
    ready_url = f"{adapter.mlserver_rest}/v2/models/sklearn-iris/ready"
    assert _status(ready_url) == 200
    assert mesh.call("DELETE", "/mesh/v1/models/sklearn-iris")[0] == 200
    status, _ = mesh.call("POST", "/v2/models/sklearn-iris/infer", sample["request"])
    assert status == 404
    deadline = time.monotonic() + 30
    while _status(ready_url) != 404:
        assert time.monotonic() < deadline, "MLServer still serves the unregistered model after 30 s"
        time.sleep(0.1)

    # SIGTERM stops the adapter, and with it MLServer.
    mesh.stop()
    assert pid_alive(adapter.mlserver_pid)
    assert stop(adapter.proc) == 0
    assert not pid_alive(adapter.mlserver_pid)
