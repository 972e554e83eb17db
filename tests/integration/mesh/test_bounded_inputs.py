"""Bounded inputs against a real ``kserve-mesh up`` process over real sockets: the REST body limit
(413 before the body is read, and while a chunked one arrives), header and body read timeouts,
large JSON bodies decoded off the event loop, the id rules, and the error mapping of issue 9 (user
input is 400 / INVALID_ARGUMENT naming the input, never 500 / INTERNAL / UNKNOWN)."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from mesh_process import MeshProcess

from kserve_mesh.mesh.http_peer import HttpPeers
from kserve_mesh.protocol import v2
from kserve_mesh.protos import model_mesh_pb2 as mm

pytestmark = pytest.mark.integration

LIMIT = 4 << 20
GOOD = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}
GRPC_METHODS = [f"/inference.GRPCInferenceService/{m}" for m in (
    "ModelInfer", "ModelMetadata", "ModelReady", "ServerLive", "ServerReady", "ServerMetadata",
    "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload")] + [
    f"/mmesh.ModelMesh/{m}" for m in ("registerModel", "unregisterModel", "getModelStatus", "ensureLoaded",
                                      "setVModel", "deleteVModel", "getVModelStatus")]


@pytest.fixture(scope="module")
def limited(example_models: tuple[Path, dict[str, Any]]) -> Iterator[MeshProcess]:
    """A mesh with a 4 MiB body limit and 1 s header and body timeouts."""
    proc = MeshProcess.start("--models", str(example_models[0]), env={
        "KSERVE_MESH_REST_MAX_BODY_BYTES": str(LIMIT), "KSERVE_MESH_HTTP_HEADER_TIMEOUT_S": "1",
        "KSERVE_MESH_HTTP_BODY_TIMEOUT_S": "1"})
    try:
        yield proc
    finally:
        proc.stop()


def _address(mesh: MeshProcess) -> tuple[str, int]:
    url = urlsplit(mesh.rest)
    assert url.hostname is not None and url.port is not None
    return url.hostname, url.port


def _raw_exchange(mesh: MeshProcess, data: bytes, timeout: float = 20.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    with socket.create_connection(_address(mesh), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def _json_answer(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def _infer_ok(mesh: MeshProcess, model: str = "sklearn-iris") -> None:
    status, body = mesh.call("POST", f"/v2/models/{model}/infer", {"inputs": [GOOD]}, timeout=30)
    assert status == 200, body


# -- body size ------------------------------------------------------------------------------------

def test_a_declared_body_over_the_limit_is_413_before_any_of_it_is_sent(limited: MeshProcess) -> None:
    raw = _raw_exchange(limited, b"POST /v2/models/sklearn-iris/infer HTTP/1.1\r\nHost: t\r\n"
                                 b"Content-Type: application/json\r\nContent-Length: 200000000\r\n\r\n")
    status, body = _json_answer(raw)
    assert status == 413 and body["type"] == "PayloadTooLarge"
    assert "200000000 bytes" in body["error"] and f"limit of {LIMIT} bytes" in body["error"]
    assert "--rest-max-body-bytes" in body["error"]
    assert b"connection: close" in raw.lower()


def test_a_client_that_sends_the_whole_big_body_still_reads_the_413(limited: MeshProcess) -> None:
    conn = http.client.HTTPConnection(*_address(limited), timeout=30)
    try:
        conn.request("POST", "/v2/models/sklearn-iris/infer", b"x" * (LIMIT + 1),
                     {"content-type": "application/json"})
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 413 and f"{LIMIT + 1} bytes" in body["error"], body


def test_a_chunked_body_is_counted_and_cut_at_the_limit(limited: MeshProcess) -> None:
    sent = []

    def chunks() -> Iterator[bytes]:
        for _ in range(LIMIT // 65536 + 20):
            sent.append(65536)
            yield b"y" * 65536

    conn = http.client.HTTPConnection(*_address(limited), timeout=30)
    try:
        conn.request("POST", "/v2/models/sklearn-iris/infer", chunks(), {"Transfer-Encoding": "chunked"},
                     encode_chunked=True)
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 413 and f"larger than the limit of {LIMIT} bytes" in body["error"], body
    _infer_ok(limited)


def test_other_routes_take_at_most_2_mib(limited: MeshProcess) -> None:
    status, body = limited.call("PUT", "/mesh/v1/models/big-register", b"{" + b" " * (3 << 20) + b"}")
    assert status == 413 and "non-inference routes take at most 2097152 bytes" in body["error"], body
    assert limited.call("GET", "/mesh/v1/models/big-register")[0] == 404


# -- read timeouts ---------------------------------------------------------------------------------

def test_a_body_shorter_than_its_content_length_is_408_in_bounded_time(limited: MeshProcess) -> None:
    start = time.monotonic()
    raw = _raw_exchange(limited, b"POST /v2/models/sklearn-iris/infer HTTP/1.1\r\nHost: t\r\n"
                                 b"Content-Length: 100\r\n\r\n{\"inputs\"")
    status, body = _json_answer(raw)
    assert status == 408 and body["type"] == "RequestTimeout" and "--http-body-timeout-s" in body["error"]
    assert time.monotonic() - start < 15  # 1 s configured; was 40 s before
    _infer_ok(limited)


def test_slow_header_connections_are_closed_and_others_are_served(limited: MeshProcess) -> None:
    address = _address(limited)
    socks = []
    try:
        for _ in range(500):
            sock = socket.create_connection(address, timeout=30)
            sock.sendall(b"POST /v2/models/sklearn-iris/infer HTTP/1.1\r\nHost: t\r\n")  # never finished
            socks.append(sock)
        _infer_ok(limited)  # served while 500 connections dangle
        deadline = time.monotonic() + 60
        closed = 0
        for sock in socks:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                data = sock.recv(1024)
            except ConnectionResetError:
                data = b""
            except TimeoutError:
                continue
            closed += data == b""
        assert closed == 500
    finally:
        for sock in socks:
            sock.close()
    _infer_ok(limited)


def test_keep_alive_connections_idle_longer_than_the_header_timeout_are_kept(limited: MeshProcess) -> None:
    conn = http.client.HTTPConnection(*_address(limited), timeout=30)
    body = json.dumps({"inputs": [GOOD]}).encode()
    try:
        ports = []
        for _ in range(3):
            conn.request("POST", "/v2/models/sklearn-iris/infer", body, {"content-type": "application/json"})
            response = conn.getresponse()
            assert response.status == 200, response.read()
            response.read()
            assert conn.sock is not None
            ports.append(conn.sock.getsockname()[1])
            time.sleep(1.6)  # longer than the 1 s header timeout, shorter than uvicorn's 5 s keep-alive
        assert len(set(ports)) == 1  # one connection throughout
    finally:
        conn.close()


def test_peer_forwarding_reuses_its_connections(limited: MeshProcess) -> None:
    body = json.dumps({"inputs": [GOOD]}).encode()

    async def run() -> None:
        peers = HttpPeers()
        try:
            for _ in range(3):
                answer = await peers.post(limited.rest, "/v2/models/sklearn-iris/infer", body,
                                          {"mm-model-id": "sklearn-iris", "mm-forwarded": "true"}, 20.0)
                assert answer.status == 200, answer.body
                await asyncio.sleep(1.5)  # idle as a peer pool may reuse (< 2 s), beyond the header timeout
            pool = peers._pool(limited.rest)
            assert pool.open == 1  # the same connection each time
        finally:
            peers.close()

    asyncio.run(run())


# -- large bodies --------------------------------------------------------------------------------

def _iris_body(rows: int) -> bytes:
    data = ",".join(["5.1,3.5,1.4,0.2"] * rows)
    return ('{"inputs":[{"name":"input-0","shape":[' + str(rows) + ',4],"datatype":"FP64","data":['
            + data + "]}]}").encode()


def test_large_json_bodies_are_decoded_in_a_worker_and_others_keep_being_served(limited: MeshProcess) -> None:
    body = _iris_body(200_000)  # ~3.2 MB: above the in-loop threshold, under the limit
    assert 512 * 1024 < len(body) < LIMIT
    results: dict[str, Any] = {}

    def big() -> None:
        conn = http.client.HTTPConnection(*_address(limited), timeout=60)
        try:
            conn.request("POST", "/v2/models/sklearn-iris/infer", body, {"content-type": "application/json"})
            response = conn.getresponse()
            results["big"] = (response.status, json.loads(response.read()))
        finally:
            conn.close()

    thread = threading.Thread(target=big)
    thread.start()
    small = 0
    while thread.is_alive() and small < 200:
        _infer_ok(limited)
        small += 1
    thread.join(60)
    status, doc = results["big"]
    assert status == 200, doc
    assert doc["outputs"][0]["shape"] == [200_000] and set(doc["outputs"][0]["data"]) == {0}
    assert small >= 1
    assert "started a REST decoding process" in limited.log()
    # a malformed large body is a 400 from the worker, like a small one
    bad = body.replace(b'"shape":[200000,4]', b'"shape":[200001,4]')
    status, answer = limited.call("POST", "/v2/models/sklearn-iris/infer", bad)
    assert status == 400 and "needs 800004 elements, got 800000" in answer["error"], answer


# -- error mapping --------------------------------------------------------------------------------

def _binary_fp64(values: list[float], shape: list[int]) -> tuple[bytes, dict[str, str]]:
    payload = struct.pack(f"<{len(values)}d", *values)
    header = json.dumps({"inputs": [{"name": "input-0", "shape": shape, "datatype": "FP64",
                                     "parameters": {"binary_data_size": len(payload)}}]}).encode()
    return header + payload, {"Inference-Header-Content-Length": str(len(header))}


def _rest(mesh: MeshProcess, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(*_address(mesh), timeout=30)
    try:
        conn.request("POST", path, body, {"content-type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"inputs": [{**GOOD, "shape": [0, 4], "data": []}]}, "a dimension of 0 leaves nothing to predict"),
        (b'{"inputs":[{"name":"input-0","shape":[18446744073709551616,4],"datatype":"FP64","data":[1]}]}',
         "'shape' must be a list of integers, got 1.8446744073709552e+19"),
        ({"inputs": [{**GOOD, "shape": [2**64 - 1, 4]}]}, "out of range"),
        ({"inputs": [{**GOOD, "shape": [-1, 4]}]}, "negative dimension"),
        ({"inputs": [{**GOOD, "shape": [2, 4]}]}, "needs 8 elements, got 4"),
        ({"inputs": [{**GOOD, "datatype": "BOOL", "data": [True, False, True, True]}]},
         "has datatype BOOL; the model expects FP64"),
        ({"inputs": [{**GOOD, "datatype": "FP16"}]}, "has datatype FP16; the model expects FP64"),
        ({"inputs": [{**GOOD, "name": "zzz"}]}, "model 'sklearn-iris' has no input 'zzz'"),
        (b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP64","data":[NaN,1,2,3]}]}', "not valid JSON"),
        (b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP64","data":[1e999,1,2,3]}]}', "infinity"),
        ({"inputs": [{**GOOD, "datatype": ["FP64"]}]}, "unknown datatype ['FP64']"),
    ],
    ids=["zero-dim", "dim-2**64", "dim-beyond-int64", "negative-dim", "data-vs-shape", "bool-for-fp64",
         "fp16-for-fp64", "unknown-name", "json-nan", "json-inf", "datatype-not-a-string"],
)
def test_rest_user_errors_are_400_naming_the_input(limited: MeshProcess, body: Any, fragment: str) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, answer = _rest(limited, "/v2/models/sklearn-iris/infer", raw)
    assert status == 400, answer
    assert fragment in answer["error"], answer


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_the_model_refuses_are_400(limited: MeshProcess, value: float) -> None:
    body, headers = _binary_fp64([value, 3.5, 1.4, 0.2], [1, 4])
    status, answer = _rest(limited, "/v2/models/sklearn-iris/infer", body, headers)
    assert status == 400 and "model 'sklearn-iris' rejected the input: Input X contains" in answer["error"], answer
    with grpc.insecure_channel(limited.grpc) as channel:
        call = channel.unary_unary(v2.method("ModelInfer"), request_serializer=v2.ModelInferRequest.SerializeToString,
                                   response_deserializer=v2.ModelInferResponse.FromString)
        req = v2.ModelInferRequest(model_name="sklearn-iris")
        req.inputs.add(name="input-0", datatype="FP64", shape=[1, 4]).contents.fp64_contents.extend(
            [value, 3.5, 1.4, 0.2])
        with pytest.raises(grpc.RpcError) as info:
            call(req, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "rejected the input" in info.value.details()


@pytest.mark.parametrize("method", GRPC_METHODS)
def test_undecodable_grpc_requests_are_invalid_argument(limited: MeshProcess, method: str) -> None:
    with grpc.insecure_channel(limited.grpc) as channel, pytest.raises(grpc.RpcError) as info:
        channel.unary_unary(method)(b"\xff\xff\xff\xff\x0f", timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "is not a valid" in info.value.details() and "message" in info.value.details()


def _grpc_error(mesh: MeshProcess, method: str, request: Any, metadata: tuple = ()) -> grpc.RpcError:
    with grpc.insecure_channel(mesh.grpc) as channel:
        call = channel.unary_unary(method, request_serializer=type(request).SerializeToString)
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=30, metadata=metadata)
    return info.value


def test_grpc_shapes_and_names_are_checked(limited: MeshProcess) -> None:
    cases = [([0, 4], [], "a dimension of 0"), ([-1, 4], [1.0], "negative dimension"),
             ([2**62, 2**62], [1.0], "describes more than"), ([2, 4], [1.0] * 4, "needs 8 elements")]
    for shape, data, fragment in cases:
        req = v2.ModelInferRequest(model_name="sklearn-iris")
        req.inputs.add(name="input-0", datatype="FP64", shape=shape).contents.fp64_contents.extend(data)
        err = _grpc_error(limited, v2.method("ModelInfer"), req)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in err.details(), (shape, err.details())
    req = v2.ModelInferRequest(model_name="sklearn-iris")
    req.inputs.add(name="zzz", datatype="FP64", shape=[1, 4]).contents.fp64_contents.extend([1.0] * 4)
    err = _grpc_error(limited, v2.method("ModelInfer"), req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "has no input 'zzz'" in err.details()
    err = _grpc_error(limited, v2.method("ModelInfer"), v2.ModelInferRequest(model_name="sklearn-iris"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "missing input 'input-0'" in err.details()


# -- ids ------------------------------------------------------------------------------------------

def test_ids_that_break_the_rules_are_refused_everywhere(limited: MeshProcess, example_models: tuple[Path, Any]) -> None:
    path = str(example_models[0] / "string-1")
    info = mm.ModelInfo(type="string", path=path)
    huge = "m" * (1 << 20)
    for bad, fragment in ((huge, "is 1048576 bytes long"), ("a\x00b", "U+0000"), ("line\nbreak", "U+000A"),
                          ("", "must not be empty")):
        err = _grpc_error(limited, "/mmesh.ModelMesh/registerModel", mm.RegisterModelRequest(modelId=bad, modelInfo=info))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in err.details(), err.details()
        assert len(err.details()) < 400  # a 1 MiB id is never echoed
        err = _grpc_error(limited, "/mmesh.ModelMesh/setVModel",
                          mm.SetVModelRequest(vModelId=bad, targetModelId="string-1"))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in err.details(), err.details()
        for method, request in (("getModelStatus", mm.GetStatusRequest(modelId=bad)),
                                ("ensureLoaded", mm.EnsureLoadedRequest(modelId=bad)),
                                ("unregisterModel", mm.UnregisterModelRequest(modelId=bad)),
                                ("getVModelStatus", mm.GetVModelStatusRequest(vModelId=bad)),
                                ("deleteVModel", mm.DeleteVModelRequest(vModelId=bad))):
            err = _grpc_error(limited, f"/mmesh.ModelMesh/{method}", request)
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, err.details())
    err = _grpc_error(limited, "/mmesh.ModelMesh/setVModel", mm.SetVModelRequest(vModelId="ok", targetModelId="a\x85"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "U+0085" in err.details()
    # routing headers and V2 names
    req = v2.ModelInferRequest(model_name="sklearn-iris")
    for metadata, fragment in (((("mm-model-id-bin", b"a\x00b"),), "header mm-model-id"),
                               ((("mm-vmodel-id-bin", b"\xff\xfe"),), "not UTF-8"),
                               ((("mm-model-id", "x" * 300),), "is 300 bytes long")):
        err = _grpc_error(limited, v2.method("ModelInfer"), req, metadata)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in err.details(), err.details()
    err = _grpc_error(limited, v2.method("RepositoryModelLoad"), v2.RepositoryModelLoadRequest(model_name="a\x01"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    # REST: management and V2 paths
    long_id = "r" * 300
    status, body = limited.call("PUT", f"/mesh/v1/models/{long_id}", {"modelInfo": {"type": "string", "path": path}})
    assert status == 400 and "at most 256 bytes" in body["error"], body
    for method, route in (("GET", f"/mesh/v1/models/{long_id}"), ("DELETE", f"/mesh/v1/models/{long_id}"),
                          ("POST", f"/mesh/v1/models/{long_id}/ensure-loaded"), ("GET", f"/mesh/v1/vmodels/{long_id}"),
                          ("DELETE", f"/mesh/v1/vmodels/{long_id}"), ("POST", f"/v2/repository/models/{long_id}/load"),
                          ("GET", f"/v2/models/{long_id}"), ("POST", "/mesh/v1/models/a%0Ab/ensure-loaded")):
        status, body = limited.call(method, route)
        assert status == 400 and body["type"] == "InvalidArgument", (route, body)
    status, body = limited.call("PUT", "/mesh/v1/vmodels/v%00x", {"targetModelId": "string-1"})
    assert status == 400 and "U+0000" in body["error"], body
    # nothing of that was registered, and listings stay small
    status, listing = limited.call("GET", "/mesh/v1/models")
    assert status == 200 and len(json.dumps(listing)) < 20_000
    assert all(len(m["modelId"]) <= 256 for m in listing["models"])
    _infer_ok(limited)
