"""The local link through a real mesh (``up --runtime process --runtime-link frames``, issue 15):
inference over REST and gRPC answered through the link, REST bodies of every shape (handed to the
child as they came) answered byte for byte as over the gRPC link, errors the same as over the gRPC
link, the link's socket private beside the runtime's, and a killed child (restarted by the
supervisor) served over the link again."""

from __future__ import annotations

import json
import os
import signal
import stat
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from mesh_process import MeshProcess

from kserve_mesh.protocol import tensors, v2

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FLAGS = ("--runtime", "process", "--runtime-check-interval-s", "0.5", "--runtime-check-timeout-s", "3")
ENV = {"KSERVE_MESH_RUNTIME_RESTART_BACKOFF_MAX_S": "2"}
TIMEOUT_S = 15.0


@pytest.fixture(scope="module")
def meshes(example_models: tuple[Path, dict[str, Any]]) -> Iterator[dict[str, MeshProcess]]:
    """The same models behind the local link (frames) and behind gRPC."""
    started: dict[str, MeshProcess] = {}
    try:
        started["frames"] = MeshProcess.start("--models", str(example_models[0]), *FLAGS, "--runtime-link", "frames",
                                              env=ENV)
        started["grpc"] = MeshProcess.start("--models", str(example_models[0]), *FLAGS,
                                            env={**ENV, "KSERVE_MESH_RUNTIME_LINK": "grpc"})
        yield started
    finally:
        for proc in started.values():
            proc.stop()


def _runtime_pid(mesh: MeshProcess) -> int:
    code, body = mesh.call("GET", "/mesh/v1/status", timeout=TIMEOUT_S)
    assert code == 200, body
    return int(body["runtimePid"])


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


def _rest(mesh: MeshProcess, model_id: str, body: Any) -> tuple[int, Any]:
    return mesh.call("POST", f"/v2/models/{model_id}/infer", body, timeout=TIMEOUT_S)


def _grpc(mesh: MeshProcess, request: v2.ModelInferRequest) -> v2.ModelInferResponse:
    with grpc.insecure_channel(mesh.grpc) as channel:
        call = channel.unary_unary(v2.method("ModelInfer"), request_serializer=v2.ModelInferRequest.SerializeToString,
                                   response_deserializer=v2.ModelInferResponse.FromString)
        return call(request, timeout=TIMEOUT_S)


def _grpc_request(model_id: str, entry: dict[str, Any]) -> v2.ModelInferRequest:
    arrays = {}
    for t in entry["request"]["inputs"]:
        if t["datatype"] == "BYTES":
            arrays[t["name"]] = np.array([s.encode() for s in t["data"]], dtype=np.object_).reshape(t["shape"])
        else:
            arrays[t["name"]] = np.asarray(t["data"], dtype=np.float64 if t["datatype"] == "FP64" else None).reshape(
                t["shape"])
    return tensors.encode_request(model_id, arrays)


def _first_output(response: v2.ModelInferResponse) -> list[Any]:
    out = next(iter(tensors.decode_outputs(response).values()))
    return [v.decode() if isinstance(v, bytes) else v for v in np.asarray(out).ravel().tolist()]


def test_the_link_socket_is_private_beside_the_runtimes(meshes: dict[str, MeshProcess]) -> None:
    args = _cmdline(_runtime_pid(meshes["frames"]))
    link = args[args.index("--link") + 1]
    listen = args[args.index("--listen") + 1]
    assert link.startswith("unix:") and os.path.dirname(link) == os.path.dirname(listen)
    path = link[len("unix:"):]
    assert stat.S_ISSOCK(os.stat(path).st_mode) and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert "--link" not in _cmdline(_runtime_pid(meshes["grpc"]))  # KSERVE_MESH_RUNTIME_LINK=grpc: no link


def test_inference_over_rest_and_grpc_answers_as_over_grpc(meshes: dict[str, MeshProcess],
                                                          example_models: tuple[Path, dict[str, Any]]) -> None:
    inputs = example_models[1]
    for model_id in ("sklearn-iris", "string-1"):
        entry = inputs[model_id]
        answers = {}
        for name, mesh in meshes.items():
            code, body = _rest(mesh, model_id, entry["request"])
            assert code == 200, (name, body)
            answers[name] = (body["outputs"][0]["data"], _first_output(_grpc(mesh, _grpc_request(model_id, entry))))
        assert answers["frames"] == answers["grpc"]
        assert answers["frames"][0] == answers["frames"][1] == entry["expected"]["outputs"][0]["data"]


def _raw_rest(mesh: MeshProcess, model_id: str, body: bytes, header_length: int | None) -> tuple[int, bytes, Any]:
    """Status, body and the headers a client reads, of a V2 REST request sent as bytes."""
    headers = {"content-type": "application/octet-stream" if header_length is not None else "application/json"}
    if header_length is not None:
        headers["inference-header-content-length"] = str(header_length)
    req = urllib.request.Request(f"{mesh.rest}/v2/models/{model_id}/infer", data=body, method="POST",
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            answer = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as err:
        answer = err.code, err.read(), err.headers
    status, data, got = answer
    return status, data, (got.get("content-type"), got.get("inference-header-content-length"), got.get("mm-model-id"))


def test_rest_bodies_of_every_shape_answer_as_over_grpc(meshes: dict[str, MeshProcess],
                                                        example_models: tuple[Path, dict[str, Any]]) -> None:
    iris = example_models[1]["sklearn-iris"]["request"]
    raw_rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], np.float64).tobytes()
    binary_head = json.dumps({"id": "b1", "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [2, 4],
                                                      "parameters": {"binary_data_size": len(raw_rows)}}],
                              "parameters": {"binary_data_output": True}}).encode()
    words = b"".join(struct.pack("<I", len(w)) + w for w in (b"hello", "wörld".encode()))
    string_head = json.dumps({"inputs": [{"name": "input-0", "datatype": "BYTES", "shape": [2],
                                          "parameters": {"binary_data_size": len(words)}}]}).encode()
    cases: list[tuple[str, bytes, int | None]] = [
        ("sklearn-iris", json.dumps({"id": "j1", **iris}).encode(), None),
        ("sklearn-iris", json.dumps({**iris, "parameters": {"binary_data_output": True}}).encode(), None),
        ("sklearn-iris", binary_head + raw_rows, len(binary_head)),
        ("string-1", json.dumps(example_models[1]["string-1"]["request"]).encode(), None),
        ("string-1", string_head + words, len(string_head)),
        ("sklearn-iris", b'{"inputs": [', None),  # not JSON
        ("sklearn-iris", json.dumps({"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4],
                                                 "data": [1, 2, 3]}]}).encode(), None),  # 3 values for 4
        ("sklearn-iris", binary_head + raw_rows[:-8], len(binary_head)),  # binary data short of its sizes
        ("sklearn-iris", binary_head, len(binary_head) + 1),  # header length beyond the body
    ]
    statuses = []
    for model_id, body, length in cases:
        answers = {name: _raw_rest(mesh, model_id, body, length) for name, mesh in meshes.items()}
        assert answers["frames"] == answers["grpc"], (model_id, body[:80])
        status, data, headers = answers["frames"]
        statuses.append(status)
        assert headers[2] == model_id if status == 200 else json.loads(data)["type"] == "InvalidArgument"
        if headers[1] is not None:  # answered in binary: the JSON header, then the outputs' bytes
            assert json.loads(data[:int(headers[1])])["outputs"][0]["parameters"]["binary_data_size"] > 0
    assert statuses == [200] * 5 + [400] * 4


def test_errors_are_the_same_as_over_grpc(meshes: dict[str, MeshProcess]) -> None:
    bad = {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 2.0, 3.0]}]}
    rest = {name: _rest(mesh, "sklearn-iris", bad) for name, mesh in meshes.items()}
    assert rest["frames"] == rest["grpc"] and rest["frames"][0] == 400, rest
    grpc_errors = {}
    for name, mesh in meshes.items():
        request = tensors.encode_request("sklearn-iris", {"input-0": np.ones((1, 3))})
        with pytest.raises(grpc.RpcError) as err:
            _grpc(mesh, request)
        grpc_errors[name] = (err.value.code(), err.value.details())  # type: ignore[attr-defined]
    assert grpc_errors["frames"] == grpc_errors["grpc"]
    assert grpc_errors["frames"][0] == grpc.StatusCode.INVALID_ARGUMENT, grpc_errors


def test_a_killed_child_is_restarted_and_served_over_the_link_again(meshes: dict[str, MeshProcess],
                                                                  example_models: tuple[Path, dict[str, Any]]) -> None:
    mesh = meshes["frames"]
    entry = example_models[1]["string-2"]
    assert _rest(mesh, "string-2", entry["request"])[0] == 200
    old = _runtime_pid(mesh)
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        pid = _runtime_pid(mesh)
        code, _ = mesh.call("GET", "/v2/health/ready", timeout=TIMEOUT_S)
        if pid not in (0, old) and code == 200:
            break
        assert time.monotonic() < deadline, "the runtime child was not restarted within 60 s"
        time.sleep(0.1)
    assert "--link" in _cmdline(pid)
    while True:  # the model loads again on demand; the first requests may meet the restart
        code, body = _rest(mesh, "string-2", entry["request"])
        if code == 200:
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    assert body["outputs"][0]["data"] == entry["expected"]["outputs"][0]["data"]
    assert _first_output(_grpc(mesh, _grpc_request("string-2", entry))) == entry["expected"]["outputs"][0]["data"]
    assert "runtime process" in mesh.log() and "restarted" in mesh.log()

