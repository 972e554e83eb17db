"""Any gRPC call naming a model is relayed to the runtime holding it, across instances; Triton's
``ModelStreamInfer`` through the mesh (issue 11, items 4 and 5).

Two real instances over a real etcd, each with a runtime process of its own
(``tests/support/relay_runtime.py``: the built-in runtime plus a TF-Serving-style
``tfserving.PredictionService`` the mesh knows nothing about). Raw grpc stubs call Predict (unary),
Count (server streaming) and Chat (bidirectional) with ``mm-model-id`` / ``mm-vmodel-id``;
tritonclient streams V2 inferences with ``start_stream`` / ``async_stream_infer``.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc_clients
import pytest
from cluster_support import string_models, string_request
from etcd_fixture import start_etcd
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from mesh_process import MeshProcess

from kserve_mesh.protocol import v2
from kserve_mesh.protos import v2_repository_pb2 as repo_pb

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

HERE = Path(__file__).resolve().parent
RUNTIME = HERE.parents[1] / "support" / "relay_runtime.py"
SERVICE = "/tfserving.PredictionService"
MODELS = ["m1", "m2", "m3", "m4", "m5"]
STRING_SIZE = 2048 + len("m1:") + 1000  # the built-in runtime's size of these string models
I0_ROOM = 3  # i0 keeps three of them at most


@dataclass
class Relay:
    i0: MeshProcess  # runtime "A"
    i1: MeshProcess  # runtime "B"
    solo: MeshProcess  # no mesh, the runtime in its process
    marks: Path
    models: Path


def _start_runtime(models: Path, marks: Path, name: str, capacity: int) -> tuple[subprocess.Popen[str], int]:
    """A relay runtime (its capacity is the instance's: a remote runtime's runtimeStatus sets it)."""
    proc = subprocess.Popen([sys.executable, str(RUNTIME), str(models), str(marks), name, str(capacity)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("runtime listening "):
        proc.kill()
        proc.wait(10)
        raise RuntimeError(f"the relay runtime did not start: {line!r}")
    return proc, int(line.split()[-1])


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    root = tmp_path_factory.mktemp("relay")
    models = string_models(root / "models", MODELS)
    marks = root / "marks"
    marks.mkdir()
    etcd = start_etcd()
    runtimes = [_start_runtime(models, marks, "A", I0_ROOM * STRING_SIZE + STRING_SIZE // 2),
                _start_runtime(models, marks, "B", 1 << 30)]
    common = ("--etcd-endpoints", etcd.client_url, "--allow-local-path", str(models), "--shutdown-grace-s", "1",
              "--runtime", "remote")
    started: list[MeshProcess] = []
    try:
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(MeshProcess.start, *common, "--instance-id", f"i{n}", "--runtime-address",
                                   f"127.0.0.1:{port}", command="instance", timeout=60)
                       for n, (_, port) in enumerate(runtimes)]
            futures.append(pool.submit(MeshProcess.start, "--allow-local-path", str(models), command="instance",
                                       timeout=60))
        errors = [f.exception() for f in futures if f.exception() is not None]
        started += [f.result() for f in futures if f.exception() is None]
        if errors:
            raise errors[0]  # type: ignore[misc]
        i0, i1, solo = started
        deadline = time.monotonic() + 20
        while not all(len(p.call("GET", "/mesh/v1/status")[1]["instances"]) == 2 for p in (i0, i1)):
            assert time.monotonic() < deadline, "the instances did not see each other"
            time.sleep(0.05)
        for model_id in MODELS:
            status, body = i0.call("PUT", f"/mesh/v1/models/{model_id}",
                                   {"modelInfo": {"type": "string", "path": str(models / model_id)}})
            assert status == 200, body
        deadline = time.monotonic() + 20
        while len(i1.call("GET", "/mesh/v1/models")[1]["models"]) < len(MODELS):
            assert time.monotonic() < deadline, "i1 did not see the registrations"
            time.sleep(0.05)
        yield Relay(i0, i1, solo, marks, models)
    finally:
        for proc in started:
            proc.stop()
        for proc, _ in runtimes:
            _stop(proc)
        etcd.close()


def _struct(doc: dict) -> Struct:
    out = Struct()
    out.update(doc)
    return out


def _doc(message: Struct) -> dict:
    return json_format.MessageToDict(message)


def _channel(p: MeshProcess) -> grpc.Channel:
    return grpc.insecure_channel(p.grpc)


def _holders(p: MeshProcess, model_id: str) -> list[str]:
    return p.call("GET", "/mesh/v1/status")[1]["placements"].get(model_id, [])


def _load_on(p: MeshProcess, model_id: str, *, seen_by: MeshProcess | None = None) -> None:
    """Load a copy on ``p``; wait until ``seen_by`` (its peer) sees it there too."""
    status, body = p.call("POST", f"/v2/repository/models/{model_id}/load", {}, timeout=30)
    assert status == 200, body
    if seen_by is not None:
        me = p.call("GET", "/mesh/v1/status")[1]["instanceId"]
        deadline = time.monotonic() + 15
        while me not in _holders(seen_by, model_id):
            assert time.monotonic() < deadline, f"the peer never saw {model_id} on {me}"
            time.sleep(0.05)


def test_a_unary_call_of_any_service_goes_to_the_runtime_of_the_holder(mesh: Relay) -> None:
    _load_on(mesh.i1, "m1", seen_by=mesh.i0)
    assert _holders(mesh.i0, "m1") == ["i1"]
    with _channel(mesh.i0) as channel:
        predict = channel.unary_unary(f"{SERVICE}/Predict", Struct.SerializeToString, Struct.FromString)
        answer = _doc(predict(_struct({"inputs": {"x": [1, 2]}}), metadata=(("mm-model-id", "m1"),), timeout=30))
        assert answer == {"model": "m1", "runtime": "B", "inputs": {"x": [1.0, 2.0]}, "loaded": True}
        # The runtime's own status comes back as it answered it (through the hop to i1).
        with pytest.raises(grpc.RpcError) as bad:
            predict(_struct({}), metadata=(("mm-model-id", "m1"),), timeout=30)
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT and bad.value.details() == "Predict needs 'inputs'"
        # A model nobody holds is loaded on demand (here or on i1), then served there.
        answer = _doc(predict(_struct({"inputs": {"y": 3}}), metadata=(("mm-model-id", "m2"),), timeout=30))
        holders = _holders(mesh.i0, "m2")
        assert answer["loaded"] and answer["model"] == "m2" and len(holders) == 1
        assert answer["runtime"] == {"i0": "A", "i1": "B"}[holders[0]]
        # A vmodel names its current model.
        status, body = mesh.i0.call("PUT", "/mesh/v1/vmodels/v1", {"targetModelId": "m1"})
        assert status == 200, body
        answer = _doc(predict(_struct({"inputs": {"z": 0}}), metadata=(("mm-vmodel-id", "v1"),), timeout=30))
        assert answer["model"] == "m1" and answer["runtime"] == "B"


def test_calls_that_cannot_be_routed_are_refused_clearly(mesh: Relay) -> None:
    with _channel(mesh.i0) as channel:
        predict = channel.unary_unary(f"{SERVICE}/Predict", Struct.SerializeToString, Struct.FromString)
        with pytest.raises(grpc.RpcError) as nameless:
            predict(_struct({"inputs": {}}), timeout=10)
        assert nameless.value.code() is grpc.StatusCode.UNIMPLEMENTED
        assert "tfserving.PredictionService/Predict" in nameless.value.details()
        assert "mm-model-id" in nameless.value.details()
        with pytest.raises(grpc.RpcError) as unknown:
            predict(_struct({"inputs": {}}), metadata=(("mm-model-id", "ghost"),), timeout=10)
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND and "ghost" in unknown.value.details()
        with pytest.raises(grpc.RpcError) as bad_id:
            predict(_struct({"inputs": {}}), metadata=(("mm-model-id", "x" * 300),), timeout=10)
        assert bad_id.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "mm-model-id" in bad_id.value.details()
    # A runtime in the instance's own process serves KServe V2 only: other methods are UNIMPLEMENTED.
    status, body = mesh.solo.call("PUT", "/mesh/v1/models/m1",
                                  {"modelInfo": {"type": "string", "path": str(mesh.models / "m1")}})
    assert status == 200, body
    with _channel(mesh.solo) as channel:
        predict = channel.unary_unary(f"{SERVICE}/Predict", Struct.SerializeToString, Struct.FromString)
        with pytest.raises(grpc.RpcError) as inprocess:
            predict(_struct({"inputs": {}}), metadata=(("mm-model-id", "m1"),), timeout=30)
        assert inprocess.value.code() is grpc.StatusCode.UNIMPLEMENTED
        assert "runs in its process" in inprocess.value.details()


def test_server_streaming_is_relayed_and_cancellation_reaches_the_runtime(mesh: Relay) -> None:
    _load_on(mesh.i1, "m3", seen_by=mesh.i0)
    with _channel(mesh.i0) as channel:
        count = channel.unary_stream(f"{SERVICE}/Count", Struct.SerializeToString, Struct.FromString)
        answers = [_doc(m) for m in count(_struct({"n": 4}), metadata=(("mm-model-id", "m3"),), timeout=30)]
        assert answers == [{"i": float(i), "model": "m3", "runtime": "B"} for i in range(4)]
        # A long stream: the first answers arrive while it goes on (nothing is buffered); the client
        # cancels, and the runtime on the other instance sees it.
        call = count(_struct({"n": 1000, "delay": 0.05}), metadata=(("mm-model-id", "m3"),), timeout=60)
        started = time.monotonic()
        first = [_doc(next(call)) for _ in range(2)]
        assert [a["i"] for a in first] == [0.0, 1.0] and time.monotonic() - started < 20
        call.cancel()
    mark = mesh.marks / "cancelled-m3"
    deadline = time.monotonic() + 15
    while not mark.exists():
        assert time.monotonic() < deadline, "the runtime never saw the cancellation"
        time.sleep(0.05)


def test_bidirectional_streams_pass_message_by_message(mesh: Relay) -> None:
    _load_on(mesh.i1, "m4", seen_by=mesh.i0)
    outbox: queue.Queue[Struct | None] = queue.Queue()

    def requests() -> Iterator[Struct]:
        while (message := outbox.get(timeout=30)) is not None:
            yield message

    with _channel(mesh.i0) as channel:
        chat = channel.stream_stream(f"{SERVICE}/Chat", Struct.SerializeToString, Struct.FromString)
        call = chat(requests(), metadata=(("mm-model-id", "m4"),), timeout=60)
        for word in ("one", "two", "three"):  # the next message is sent only after its answer came
            outbox.put(_struct({"word": word}))
            assert _doc(next(call)) == {"echo": {"word": word}, "model": "m4", "runtime": "B"}
        outbox.put(None)
        assert list(call) == []


def test_a_copy_serving_a_stream_is_not_evicted_under_it(mesh: Relay, tmp_path: Path) -> None:
    """i0 holds m5 while a long Count stream runs on it; loads of other models there meanwhile
    evict something else, never m5 (the stream holds its copy)."""
    _load_on(mesh.i0, "m5")
    results: list[object] = []

    def stream() -> None:
        with _channel(mesh.i0) as channel:
            count = channel.unary_stream(f"{SERVICE}/Count", Struct.SerializeToString, Struct.FromString)
            try:
                results.extend(_doc(m)["i"] for m in count(_struct({"n": 20, "delay": 0.1}),
                                                           metadata=(("mm-model-id", "m5"),), timeout=60))
            except grpc.RpcError as err:
                results.append(err)

    worker = threading.Thread(target=stream)
    worker.start()
    try:
        time.sleep(0.3)
        for model_id in ("m1", "m2", "m3", "m4"):  # more than i0 has room for: copies are evicted
            _load_on(mesh.i0, model_id)
            assert "i0" in _holders(mesh.i0, "m5"), f"m5 left i0 while its stream ran (after loading {model_id})"
        held = [m for m in MODELS if "i0" in _holders(mesh.i0, m)]
        assert len(held) <= I0_ROOM and "m5" in held and "m4" in held, held
    finally:
        worker.join(30)
    assert results == [float(i) for i in range(20)]


def test_triton_stream_infer_through_the_mesh(mesh: Relay, tmp_path: Path) -> None:
    """tritonclient's start_stream / async_stream_infer: each request routed on its own (m1 is held
    by i1, m2 somewhere), answers in order; a bad one is answered with its error, the stream goes on."""
    request = string_request()
    spec = {"requests": [{"model": "m1", "id": "r1", "request": request},
                         {"model": "ghost", "id": "r2", "request": request},
                         {"model": "m2", "id": "r3", "request": request}]}
    result = grpc_clients.run("triton-stream", mesh.i0.grpc, spec, tmp_path)
    assert "error" not in result, result
    first, second, third = result["answers"]
    assert first["id"] == "r1" and first["model"] == "m1" and first["output-0"] == ["m1:" + "z" * 1000 + "x"]
    assert "ghost" in second["error"]
    assert third["id"] == "r3" and third["output-0"] == ["m2:" + "z" * 1000 + "x"]


def test_model_stream_infer_with_a_raw_stub(mesh: Relay) -> None:
    requests = [v2.ModelInferRequest(model_name="m1", id=f"q{i}") for i in range(3)]
    for r in requests:
        tensor = r.inputs.add(name="input-0", datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(b"!")
    with _channel(mesh.i1) as channel:
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                       v2.ModelInferRequest.SerializeToString,
                                       repo_pb.ModelStreamInferResponse.FromString)
        answers = list(stream(iter(requests), timeout=60))
    assert [a.error_message for a in answers] == ["", "", ""]
    decoded = [v2.ModelInferResponse.FromString(a.infer_response) for a in answers]
    assert [d.id for d in decoded] == ["q0", "q1", "q2"] and {d.model_name for d in decoded} == {"m1"}
