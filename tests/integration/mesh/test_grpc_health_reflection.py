"""gRPC health checking and server reflection of a real ``kserve-mesh`` process, driven the way
Kubernetes gRPC probes, ``grpc_health_probe`` and ``grpcurl`` drive them: grpc.health.v1 stubs
(Check, overall and per service; Watch) and grpcio-reflection's ``ProtoReflectionDescriptorDatabase``
(what grpcurl does: list, describe, then build a request from the descriptors and call).

- ``--runtime process`` with its child SIGKILLed: NOT_SERVING while the runtime is down, SERVING
  once the supervisor has it back (a Watch stream sees both changes).
- With authentication on: health is open, reflection (v1alpha and v1) needs a token.
- In a mesh of two instances, SIGTERM (drain): NOT_SERVING while the instance drains.

Every client call has a timeout; nothing waits unbounded."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from cluster_support import start_mesh, string_models
from etcd_fixture import start_etcd
from google.protobuf import descriptor_pb2, json_format, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from mesh_process import MeshProcess

pytestmark = pytest.mark.integration

CALL_S = 10.0  # no client call may take longer
RECOVERY_S = 30.0  # generous: the machine is shared
SERVICES = ("", "inference.GRPCInferenceService", "mmesh.ModelMesh")
LISTED = ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
          "inference.GRPCInferenceService", "mmesh.ModelMesh"]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ADMIN = "admin-token-of-the-health-test-0123456789"
INFER = "infer-token-of-the-health-test-0123456789"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return string_models(tmp_path_factory.mktemp("health-models"), ["s1"], pad=10)


@pytest.fixture(scope="module")
def supervised(models: Path) -> Iterator[MeshProcess]:
    """A mesh whose runtime is a supervised child process, checked every 0.5 s."""
    proc = MeshProcess.start("--models", str(models), "--runtime", "process", "--runtime-check-interval-s", "0.5",
                             "--runtime-check-timeout-s", "3", env={"KSERVE_MESH_RUNTIME_RESTART_BACKOFF_MAX_S": "2"})
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def guarded(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshProcess]:
    """A mesh with authentication on (loopback, an auth file with an admin and an infer token)."""
    auth = tmp_path_factory.mktemp("health-auth") / "auth.json"
    auth.write_text(json.dumps({"tokens": [{"name": "ops", "role": "admin", "token": ADMIN},
                                           {"name": "reader", "role": "infer", "token": INFER}]}))
    proc = MeshProcess.start("--models", str(models), "--auth", "on", "--auth-file", str(auth))
    proc.headers = {"authorization": f"Bearer {ADMIN}"}
    try:
        yield proc
    finally:
        proc.stop()


# -- clients ---------------------------------------------------------------------------------------
def check(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                         timeout=CALL_S).status


def probe(target: str, service: str = "", connect_timeout_s: float = 5.0) -> int:
    """What ``grpc_health_probe -addr=TARGET -service=SERVICE`` exits with: 0 SERVING, 2 cannot
    connect, 3 the RPC failed (NOT_FOUND for an unknown service), 4 answered, but not SERVING."""
    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=connect_timeout_s)
        except grpc.FutureTimeoutError:
            return 2
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                               timeout=CALL_S)
        except grpc.RpcError:
            return 3
    return 0 if answer.status == SERVING else 4


class Watcher:
    """A ``Watch`` stream read by a thread: every status with the time it came."""

    def __init__(self, target: str, service: str = "", on_status: Callable[[int], None] | None = None) -> None:
        self.channel = grpc.insecure_channel(target)
        self.call = health_pb2_grpc.HealthStub(self.channel).Watch(health_pb2.HealthCheckRequest(service=service),
                                                                  timeout=120)
        self.seen: list[int] = []
        self.ended: grpc.StatusCode | None = None
        self.on_status = on_status
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for answer in self.call:
                self.seen.append(answer.status)
                if self.on_status is not None:
                    self.on_status(answer.status)
            self.ended = grpc.StatusCode.OK
        except grpc.RpcError as err:
            self.ended = err.code()  # type: ignore[attr-defined]

    def wait_for(self, statuses: list[int], timeout: float = RECOVERY_S) -> None:
        wait_until(f"Watch to show {statuses} (saw {self.seen})", lambda: self.seen[:len(statuses)] == statuses,
                   timeout)

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(CALL_S)
        self.channel.close()


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = RECOVERY_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reflection_v1(target: str, requests: list[descriptor_pb2.FileDescriptorProto], v1_file: bytes,
                  metadata: tuple[tuple[str, str], ...] = ()) -> list[object]:
    """A raw ``grpc.reflection.v1`` call, with message classes built from the v1 file descriptor
    the server itself serves (not from grpcio-reflection's v1alpha classes)."""
    pool = DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(v1_file))
    request_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionRequest"))
    response_class = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse"))
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                     request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=response_class.FromString)
        return list(call(iter([json_format.ParseDict(r, request_class()) for r in requests]), timeout=CALL_S,
                         metadata=metadata))


# -- health ----------------------------------------------------------------------------------------
def test_check_overall_and_per_service_as_a_probe_sees_it(supervised: MeshProcess) -> None:
    for service in SERVICES:
        assert check(supervised.grpc, service) == SERVING, service
        assert probe(supervised.grpc, service) == 0, service
    with pytest.raises(grpc.RpcError) as err:
        check(supervised.grpc, "grpc.health.v1.NoSuchService")
    assert err.value.code() is grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert probe(supervised.grpc, "grpc.health.v1.NoSuchService") == 3
    assert probe(f"127.0.0.1:{free_port()}", connect_timeout_s=1) == 2  # nothing listens there


def test_the_runtime_killed_is_not_serving_until_it_is_back(supervised: MeshProcess) -> None:
    code, status = supervised.call("GET", "/mesh/v1/status", timeout=CALL_S)
    assert code == 200, status
    pid = int(status["runtimePid"])
    probed_while_down: list[int] = []

    def on_status(s: int) -> None:
        if s == NOT_SERVING and not probed_while_down:
            probed_while_down.append(probe(supervised.grpc, "inference.GRPCInferenceService"))

    watchers = [Watcher(supervised.grpc, service, on_status if service == "" else None) for service in SERVICES]
    try:
        for w in watchers:
            w.wait_for([SERVING], CALL_S)
        os.kill(pid, signal.SIGKILL)
        for w in watchers:
            w.wait_for([SERVING, NOT_SERVING, SERVING])
        print("probe while the runtime was down:", probed_while_down)
        assert probed_while_down and probed_while_down[0] in (4, 0), probed_while_down  # 0: it came back first
        assert all(w.ended is None for w in watchers)  # the streams stay open
    finally:
        for w in watchers:
            w.close()
    assert all(check(supervised.grpc, s) == SERVING for s in SERVICES)
    _, status = supervised.call("GET", "/mesh/v1/status", timeout=CALL_S)
    assert int(status["runtimePid"]) not in (0, pid)
    code, body = supervised.call("POST", "/v2/models/s1/infer", {
        "inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}, timeout=CALL_S)
    assert code == 200 and body["outputs"][0]["data"] == ["s1:" + "z" * 10 + "x"], body


# -- reflection ------------------------------------------------------------------------------------
def test_reflection_lists_describes_and_calls_like_grpcurl(supervised: MeshProcess) -> None:
    with grpc.insecure_channel(supervised.grpc) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)  # grpcurl list / describe, over v1alpha
        assert sorted(db.get_services()) == LISTED
        pool = DescriptorPool(db)
        for name in LISTED:  # every listed service resolves to its file (and the files it imports)
            assert pool.FindServiceByName(name).methods, name
        v2 = pool.FindServiceByName("inference.GRPCInferenceService")
        assert {"ModelInfer", "ModelMetadata", "ServerReady", "RepositoryModelLoad"} <= set(v2.methods_by_name)
        infer = v2.methods_by_name["ModelInfer"]
        assert infer.input_type.full_name == "inference.ModelInferRequest"
        assert "raw_input_contents" in infer.input_type.fields_by_name
        assert db.FindFileContainingSymbol("inference.GRPCInferenceService.ModelInfer").name == v2.file.name
        assert db.FindFileContainingSymbol("mmesh.ModelMesh.registerModel").name == "model_mesh.proto"

        # grpcurl -d '{...}' ADDR inference.GRPCInferenceService/ModelInfer: messages from the descriptors
        request_class = message_factory.GetMessageClass(infer.input_type)
        response_class = message_factory.GetMessageClass(infer.output_type)
        request = json_format.ParseDict({"model_name": "s1", "inputs": [
            {"name": "input-0", "datatype": "BYTES", "shape": [1], "contents": {"bytes_contents": ["eA=="]}}]},
            request_class())
        call = channel.unary_unary(f"/{v2.full_name}/{infer.name}", request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=response_class.FromString)
        answer = json_format.MessageToDict(call(request, timeout=CALL_S), preserving_proto_field_name=True)
        assert answer["model_name"] == "s1" and answer["outputs"][0]["datatype"] == "BYTES", answer

        v1_file = pool.FindFileByName("grpc/reflection/v1/reflection.proto")
        proto = descriptor_pb2.FileDescriptorProto()
        v1_file.CopyToProto(proto)
    answers = reflection_v1(supervised.grpc, [{"list_services": ""},
                                              {"file_containing_symbol": "mmesh.ModelMesh"}], proto.SerializeToString())
    listed, found = (json_format.MessageToDict(a, preserving_proto_field_name=True) for a in answers)
    assert sorted(s["name"] for s in listed["list_services_response"]["service"]) == LISTED
    assert found["file_descriptor_response"]["file_descriptor_proto"], found


def test_with_auth_health_is_open_and_reflection_needs_a_token(guarded: MeshProcess) -> None:
    for service in SERVICES:
        assert probe(guarded.grpc, service) == 0, service  # probes carry no credentials
    with grpc.insecure_channel(guarded.grpc) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=CALL_S)
        assert next(watch).status == SERVING
        watch.cancel()
        with pytest.raises(grpc.RpcError) as err:
            ProtoReflectionDescriptorDatabase(channel).get_services()
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]

    with grpc.insecure_channel(guarded.grpc) as plain:
        # the token on every call of the reflection client (it takes no metadata of its own)
        intercepted = grpc.intercept_channel(plain, _Metadata(("authorization", f"Bearer {INFER}")))
        db = ProtoReflectionDescriptorDatabase(intercepted)
        assert sorted(db.get_services()) == LISTED
        v1_file = db.FindFileByName("grpc/reflection/v1/reflection.proto").SerializeToString()
    request = [{"list_services": ""}]
    with pytest.raises(grpc.RpcError) as err:
        reflection_v1(guarded.grpc, request, v1_file)
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    (listed,) = reflection_v1(guarded.grpc, request, v1_file, (("authorization", f"Bearer {INFER}"),))
    listed_names = json_format.MessageToDict(listed, preserving_proto_field_name=True)["list_services_response"]
    assert sorted(s["name"] for s in listed_names["service"]) == LISTED


class _Metadata(grpc.StreamStreamClientInterceptor):
    """Adds one metadata pair to every stream-stream call."""

    def __init__(self, pair: tuple[str, str]) -> None:
        self.pair = pair

    def intercept_stream_stream(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        details = details._replace(metadata=(*(details.metadata or ()), self.pair))
        return continuation(details, request_iterator)


# -- draining --------------------------------------------------------------------------------------
def test_sigterm_in_a_mesh_is_not_serving_while_it_drains(tmp_path: Path) -> None:
    """SIGTERM: the instance drains (re-homes its models, still answering) before it stops. Health
    says NOT_SERVING from the start of the drain: seen while V2 ServerReady still says ready (which
    only the stop turns false), then the Watch stream ends as the server stops."""
    from kserve_mesh.protocol import v2

    string_models(tmp_path, ["d1"], pad=10)
    etcd = start_etcd()
    try:
        mesh = start_mesh(etcd, 2, "--allow-local-path", str(tmp_path), "--shutdown-grace-s", "5")
        try:
            code, body = mesh.instances[0].call("PUT", "/mesh/v1/models/d1", {
                "modelInfo": {"type": "string", "path": str(tmp_path / "d1")}}, timeout=CALL_S)
            assert code == 200, body
            assert mesh.infer(0, "d1", timeout=CALL_S)[0] == 200
            wait_until("a copy of d1", lambda: bool(mesh.placements().get("d1")), CALL_S)
            holder = mesh.instance_ids().index(mesh.placements()["d1"][0])
            leaving, staying = mesh.instances[holder], mesh.instances[1 - holder]  # the drain re-homes d1
            watcher = Watcher(leaving.grpc, "inference.GRPCInferenceService")
            channel = grpc.insecure_channel(leaving.grpc)
            try:
                watcher.wait_for([SERVING], CALL_S)
                health = health_pb2_grpc.HealthStub(channel)
                server_ready = channel.unary_unary(v2.method("ServerReady"),
                                                   request_serializer=v2.ServerReadyRequest.SerializeToString,
                                                   response_deserializer=v2.ServerReadyResponse.FromString)
                leaving.proc.send_signal(signal.SIGTERM)

                def draining_seen() -> bool:  # an RPC error here (the server gone) fails the test
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_S).status
                    return status == NOT_SERVING and server_ready(v2.ServerReadyRequest(), timeout=CALL_S).ready

                wait_until("health NOT_SERVING while the instance drains", draining_seen, CALL_S)
                watcher.wait_for([SERVING, NOT_SERVING])
                wait_until("the Watch stream to end", lambda: watcher.ended is not None)
                assert watcher.ended is grpc.StatusCode.OK, watcher.ended  # ended by the server as it stops
            finally:
                channel.close()
                watcher.close()
            assert leaving.proc.wait(30) == 0
            assert check(staying.grpc) == SERVING  # the one staying is unaffected
            assert staying.call("POST", "/v2/models/d1/infer", {"inputs": [
                {"name": "input-0", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}, timeout=CALL_S)[0] == 200
        finally:
            for p in mesh.instances:
                p.stop()
    finally:
        etcd.close()
