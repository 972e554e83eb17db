"""Payload logging wired into a real mesh (``--payload-processors``) with real sink processes
(tests/support/payload_sink.py): every inference's request and response arrive once, as valid
CloudEvents sharing a correlation id, from REST (tritonclient.http) and gRPC (tritonclient.grpc);
a ``?modelId=`` sink gets only its model's or vmodel's events; a failed inference sends its request
and no response; a request forwarded to a peer is logged once, by the instance the client called;
a dead sink costs nothing but counted drops (``/metrics``)."""

from __future__ import annotations

import base64
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.http as th
from cloudevents.http import from_http
from cluster_support import start_mesh, string_models
from etcd_fixture import start_etcd
from mesh_process import MeshProcess
from payload_sink import SinkProcess

from kserve_mesh.protocol import v2

pytestmark = pytest.mark.integration

CALL_S = 30.0
PAD = 5


def _events(sink: SinkProcess, count: int) -> list:
    records = sink.wait_for(count, timeout_s=15.0)
    time.sleep(0.3)  # a duplicate would have arrived by now (the logger sends in 100 ms bursts)
    records = sink.records()
    return [from_http(r["headers"], base64.b64decode(r["body_b64"])) for r in records]


def _kinds(events: list) -> Counter:
    return Counter((e["id"], e["type"].rpartition(".")[2], e["modelid"]) for e in events)


def _rest_infer(mesh: MeshProcess, model: str, text: bytes, request_id: str) -> bytes:
    client = th.InferenceServerClient(mesh.rest.removeprefix("http://"), network_timeout=CALL_S)
    try:
        inp = th.InferInput("input-0", [1], "BYTES")
        inp.set_data_from_numpy(np.array([text], dtype=np.object_), binary_data=False)
        result = client.infer(model, [inp], request_id=request_id,
                              headers={"x-request-id": request_id},
                              outputs=[th.InferRequestedOutput("output-0", binary_data=False)])
        value = result.as_numpy("output-0").tolist()[0]
        return value.encode() if isinstance(value, str) else value
    finally:
        client.close()


def _grpc_infer(mesh: MeshProcess, model: str, text: bytes, request_id: str) -> bytes:
    """A V2 gRPC ModelInfer with kserve's messages (tritonclient.grpc's copy of the ``inference``
    protos cannot share a process with them: tests/integration/mesh/grpc_clients.py)."""
    request = v2.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name="input-0", datatype="BYTES", shape=[1]).contents.bytes_contents.append(text)
    with grpc.insecure_channel(mesh.grpc) as channel:
        call = channel.unary_unary(f"/{v2.SERVICE}/ModelInfer", request_serializer=v2.ModelInferRequest.SerializeToString,
                                   response_deserializer=v2.ModelInferResponse.FromString)
        response = call(request, timeout=CALL_S)
    return response.outputs[0].contents.bytes_contents[0]


def _metric(text: str, sink: str, outcome: str) -> float:
    pattern = r'^kserve_mesh_payload_events_total\{[^}]*\} (\S+)$'
    total = 0.0
    for line in text.splitlines():
        if re.match(pattern, line) and f'sink="{sink}"' in line and f'outcome="{outcome}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def sinks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SinkProcess, SinkProcess]]:
    folder = tmp_path_factory.mktemp("sinks")
    every, only_vm = SinkProcess(folder / "every.jsonl"), SinkProcess(folder / "vm.jsonl")
    try:
        yield every, only_vm
    finally:
        every.stop()
        only_vm.stop()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, sinks: tuple[SinkProcess, SinkProcess]) -> Iterator[MeshProcess]:
    every, only_vm = sinks
    models = string_models(tmp_path_factory.mktemp("payload-models"), ["s1", "s2"], pad=PAD)
    proc = MeshProcess.start("--models", str(models),
                             "--payload-processors", f"{every.url()} {only_vm.url('/vm')}?modelId=vm",
                             env={"KSERVE_MESH_NAMESPACE": "team-a"})
    try:
        code, body = proc.call("PUT", "/mesh/v1/vmodels/vm", {"targetModelId": "s2"})
        assert code == 200, body
        yield proc
    finally:
        proc.stop()


def test_each_inference_arrives_once_as_a_request_and_a_response_cloudevent(
        mesh: MeshProcess, sinks: tuple[SinkProcess, SinkProcess]) -> None:
    every, only_vm = sinks
    assert _rest_infer(mesh, "s1", b"a", "rest-1") == b"s1:zzzzza"
    assert _grpc_infer(mesh, "s1", b"b", "grpc-1") == b"s1:zzzzzb"
    assert _rest_infer(mesh, "vm", b"c", "rest-vm") == b"s2:zzzzzc"  # a vmodel: its model serves
    assert _grpc_infer(mesh, "vm", b"d", "grpc-vm") == b"s2:zzzzzd"
    events = _events(every, 8)
    assert _kinds(events) == Counter({(cid, kind, model): 1 for cid, model in
                                      (("rest-1", "s1"), ("grpc-1", "s1"), ("rest-vm", "s2"), ("grpc-vm", "s2"))
                                      for kind in ("request", "response")})
    for event in events:
        assert event["specversion"] == "1.0" and event["namespace"] == "team-a"
        assert event["source"].startswith("kserve-mesh/") and event["datacontenttype"] == "application/json"
        assert event["inferenceservicename"] == ("vm" if event["modelid"] == "s2" else "s1")
    data = {(e["id"], e["type"].rpartition(".")[2]): e.data for e in events}
    assert data[("rest-1", "request")]["inputs"][0]["data"] == ["a"]  # the REST body as it came
    assert data[("rest-1", "response")]["outputs"][0]["data"] == ["s1:zzzzza"]
    assert data[("grpc-1", "request")]["inputs"][0]["data"] == ["b"]  # the gRPC message as V2 JSON
    assert data[("grpc-1", "response")]["outputs"][0]["data"] == ["s1:zzzzzb"]
    # the ?modelId=vm sink: the vmodel's four events, nothing of s1
    assert {(cid, kind) for cid, kind, _ in _kinds(_events(only_vm, 4))} == {
        (cid, kind) for cid in ("rest-vm", "grpc-vm") for kind in ("request", "response")}
    text = mesh.metrics_text()
    assert _metric(text, every.url(), "sent") >= 8 and _metric(text, every.url(), "dropped") == 0


def test_a_failed_inference_sends_its_request_and_no_response(
        mesh: MeshProcess, sinks: tuple[SinkProcess, SinkProcess]) -> None:
    every, _ = sinks
    before = len(every.records())
    code, body = mesh.call("POST", "/v2/models/s1/infer",
                           {"id": "bad-1", "inputs": [{"name": "input-0", "shape": [1], "datatype": "INT32",
                                                       "data": ["x"]}]})
    assert code >= 400, body
    code, body = mesh.call("POST", "/v2/models/nope/infer", {"id": "nf", "inputs": []})
    assert code == 404, body  # an unknown model is refused before anything is logged
    every.wait_for(before + 1)
    time.sleep(0.3)
    new = [from_http(r["headers"], base64.b64decode(r["body_b64"])) for r in every.records()[before:]]
    assert [e["type"].rpartition(".")[2] for e in new] == ["request"]


def test_a_forwarded_request_is_logged_once_by_the_instance_called(tmp_path: Path) -> None:
    string_models(tmp_path, ["fw"], pad=PAD)
    sink = SinkProcess(tmp_path / "sink.jsonl")
    etcd = start_etcd()
    try:
        mesh = start_mesh(etcd, 2, "--allow-local-path", str(tmp_path), "--payload-processors", sink.url())
        try:
            code, body = mesh.instances[0].call("PUT", "/mesh/v1/models/fw", {
                "modelInfo": {"type": "string", "path": str(tmp_path / "fw")}, "loadNow": True, "sync": True})
            assert code == 200, body
            (holder,) = mesh.holders("fw")
            other = mesh.instances[1 - mesh.instance_ids().index(holder)]
            assert _rest_infer(other, "fw", b"r", "fw-rest") == b"fw:zzzzzr"
            assert _grpc_infer(other, "fw", b"g", "fw-grpc") == b"fw:zzzzzg"
            assert mesh.placements()["fw"] == [holder]  # forwarded, not loaded where it was called
            events = _events(sink, 4)
            assert _kinds(events) == Counter({(cid, kind, "fw"): 1 for cid in ("fw-rest", "fw-grpc")
                                              for kind in ("request", "response")})
            caller = mesh.instance_ids()[mesh.instances.index(other)]
            assert {e["source"] for e in events} == {f"kserve-mesh/{caller}"}
        finally:
            for p in mesh.instances:
                p.stop()
    finally:
        etcd.close()
        sink.stop()


def test_a_dead_sink_costs_inference_nothing_but_counted_drops(tmp_path: Path) -> None:
    """(And the --payload-queue-size and --per-model-metrics flags have their effect.)"""
    models = string_models(tmp_path / "models", ["d1"], pad=PAD)
    sink = SinkProcess(tmp_path / "dead.jsonl")
    url = sink.url()
    sink.stop()  # nobody listens there any more
    proc = MeshProcess.start("--models", str(models), "--payload-processors", url, "--payload-queue-size", "4",
                             "--per-model-metrics")
    try:
        for n in range(20):
            code, body = proc.call("POST", "/v2/models/d1/infer", {
                "inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": [str(n)]}]}, timeout=5)
            assert code == 200 and body["outputs"][0]["data"] == [f"d1:zzzzz{n}"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = proc.metrics_text()
            if _metric(text, url, "dropped") + _metric(text, url, "failed") >= 40 - 4:
                break
            time.sleep(0.1)
        assert _metric(text, url, "dropped") + _metric(text, url, "failed") >= 36, text
        assert _metric(text, url, "sent") == 0
        # --per-model-metrics: request metrics carry the model
        assert any(line.startswith("modelmesh_api_request_milliseconds_count{") and 'modelId="d1"' in line
                   for line in text.splitlines()), text
    finally:
        proc.stop()
