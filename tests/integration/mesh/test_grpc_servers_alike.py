"""The two servers of the gRPC port (``--grpc-server grpcio`` and ``native``, api/grpc_native.py)
answer alike: two real meshes on the same models get the same calls from grpcio's client (every V2
method, management, health, reflection, streams, bad bytes, unknown methods, deadlines, routing
headers) and each answer — status, message, payload — must match. The rest of the suite runs on the
default server; this file keeps the other one honest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from mesh_process import MeshProcess

from kserve_mesh.protocol import v2
from kserve_mesh.protos import model_mesh_pb2 as mm
from kserve_mesh.protos import v2_repository_pb2 as repo_pb


@pytest.fixture(scope="module")
def meshes(example_models: tuple[Path, dict[str, Any]]) -> Iterator[dict[str, MeshProcess]]:
    started: dict[str, MeshProcess] = {}
    try:
        for server in ("grpcio", "native"):
            started[server] = MeshProcess.start("--models", str(example_models[0]), "--grpc-server", server)
        yield started
    finally:
        for proc in started.values():
            proc.stop()


def _infer(model: str, rows: int = 1, features: int = 4, **extra: Any) -> bytes:
    req = v2.ModelInferRequest(model_name=model, **extra)
    tensor = req.inputs.add(name="input-0", datatype="FP64", shape=[rows, features])
    tensor.contents.fp64_contents.extend([5.1, 3.5, 1.4, 0.2][:features] * rows)
    return req.SerializeToString()


V2 = "/inference.GRPCInferenceService/"
MM = "/mmesh.ModelMesh/"
UNARY_CASES: dict[str, tuple[str, bytes, tuple[tuple[str, Any], ...], float]] = {
    "infer": (V2 + "ModelInfer", _infer("sklearn-iris", rows=3), (), 30),
    "infer-unknown-model": (V2 + "ModelInfer", _infer("no-such-model"), (), 10),
    "infer-bad-shape": (V2 + "ModelInfer", _infer("sklearn-iris", features=3), (), 30),
    "infer-not-a-message": (V2 + "ModelInfer", b"\xff\xff\xff", (), 10),
    "infer-empty": (V2 + "ModelInfer", b"", (), 10),
    "infer-by-header": (V2 + "ModelInfer", _infer(""), (("mm-model-id", "sklearn-iris"),), 30),
    "infer-unknown-vmodel": (V2 + "ModelInfer", _infer(""), (("mm-vmodel-id", "nope"),), 10),
    "infer-bin-header-not-utf8": (V2 + "ModelInfer", _infer(""), (("mm-model-id-bin", b"\xff\xfe"),), 10),
    "metadata": (V2 + "ModelMetadata", v2.ModelMetadataRequest(name="sklearn-iris").SerializeToString(), (), 30),
    "ready": (V2 + "ModelReady", v2.ModelReadyRequest(name="sklearn-iris").SerializeToString(), (), 10),
    "live": (V2 + "ServerLive", b"", (), 10),
    "server-ready": (V2 + "ServerReady", b"", (), 10),
    "server-metadata": (V2 + "ServerMetadata", b"", (), 10),
    "index": (V2 + "RepositoryIndex", repo_pb.RepositoryIndexRequest().SerializeToString(), (), 10),
    "status-unknown": (MM + "getModelStatus", mm.GetStatusRequest(modelId="nope").SerializeToString(), (), 10),
    "status": (MM + "getModelStatus", mm.GetStatusRequest(modelId="sklearn-iris").SerializeToString(), (), 10),
    "register-bad": (MM + "registerModel", mm.RegisterModelRequest(modelId="").SerializeToString(), (), 10),
    "health": ("/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest().SerializeToString(), (), 10),
    "health-unknown": ("/grpc.health.v1.Health/Check",
                       health_pb2.HealthCheckRequest(service="nope").SerializeToString(), (), 10),
    "unknown-method": ("/foo.Bar/Baz", b"", (), 10),
    "unknown-service-method": ("/inference.GRPCInferenceService/Nope", b"", (), 10),
    "deadline": (V2 + "ModelInfer", _infer("sklearn-iris"), (), 0.000001),
}


def _unary(target: str, path: str, body: bytes, metadata: tuple[tuple[str, Any], ...],
           timeout: float) -> tuple[str, str, bytes]:
    with grpc.insecure_channel(target) as channel:
        try:
            answer = channel.unary_unary(path)(body, metadata=metadata, timeout=timeout)
        except grpc.RpcError as err:
            return err.code().name, err.details() or "", b""
    return "OK", "", answer


def _comparable(name: str, answer: bytes) -> Any:
    if name.startswith("infer") and answer:
        resp = v2.ModelInferResponse.FromString(answer)
        resp.ClearField("id")
        return resp
    if name.startswith("status") and answer:
        return mm.ModelStatusInfo.FromString(answer).status
    if name == "index":  # the states depend on what the other cases loaded first
        return sorted(m.name for m in repo_pb.RepositoryIndexResponse.FromString(answer).models)
    return answer


@pytest.mark.parametrize("name", sorted(UNARY_CASES))
def test_unary_calls_are_answered_alike(meshes: dict[str, MeshProcess], name: str) -> None:
    path, body, metadata, timeout = UNARY_CASES[name]
    answers = {server: _unary(proc.grpc, path, body, metadata, timeout) for server, proc in meshes.items()}
    (code_a, details_a, body_a), (code_b, details_b, body_b) = answers["grpcio"], answers["native"]
    assert (code_a, details_a) == (code_b, details_b), answers
    assert _comparable(name, body_a) == _comparable(name, body_b)
    if name in ("infer", "infer-by-header", "live", "health", "metadata"):
        assert code_a == "OK" and body_a  # the cases that must succeed do


def test_streams_are_answered_alike(meshes: dict[str, MeshProcess]) -> None:
    def stream(target: str) -> tuple[str, list[Any]]:
        with grpc.insecure_channel(target) as channel:
            call = channel.stream_stream(V2 + "ModelStreamInfer", response_deserializer=repo_pb.ModelStreamInferResponse.FromString)
            answers: list[Any] = []
            try:
                for reply in call(iter([_infer("sklearn-iris"), _infer("nope"), b"\xff", _infer("sklearn-iris", 2)]),
                                  timeout=30):
                    if reply.infer_response:
                        resp = v2.ModelInferResponse.FromString(reply.infer_response)
                        resp.ClearField("id")
                        answers.append(resp)
                    else:
                        answers.append(reply.error_message)
            except grpc.RpcError as err:
                return err.code().name, answers
            return "OK", answers

    def reflect(target: str) -> list[str]:
        with grpc.insecure_channel(target) as channel:
            call = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                         request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                         response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
            replies = list(call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
            return sorted(s.name for s in replies[0].list_services_response.service)

    def watch(target: str) -> tuple[str, list[int]]:
        with grpc.insecure_channel(target) as channel:
            call = channel.unary_stream("/grpc.health.v1.Health/Watch",
                                        response_deserializer=health_pb2.HealthCheckResponse.FromString)
            seen: list[int] = []
            try:
                for reply in call(health_pb2.HealthCheckRequest().SerializeToString(), timeout=0.5):
                    seen.append(reply.status)
            except grpc.RpcError as err:
                return err.code().name, seen
            return "OK", seen

    grpcio, native = meshes["grpcio"].grpc, meshes["native"].grpc
    code, answers = stream(grpcio)
    assert (code, answers) == stream(native)
    assert code == "OK" and len(answers) == 4 and isinstance(answers[1], str) and "nope" in answers[1]
    assert reflect(grpcio) == reflect(native) and "inference.GRPCInferenceService" in reflect(native)
    assert watch(grpcio) == watch(native) == ("DEADLINE_EXCEEDED", [health_pb2.HealthCheckResponse.SERVING])
