"""What the data plane tells its observers, over a real instance (built-in runtime, MemoryStore):
each inference's timing, model, vmodel and sizes (``RequestObserver``), each runtime call here
(``InvokeObserver``), and each request and successful response to the payload logger, once, by the
instance the client called (a peer's hop is not logged again)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kserve_mesh.core.clock import SystemClock
from kserve_mesh.core.errors import InvalidArgument, ModelNotFound
from kserve_mesh.core.ids import InstanceId
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.mesh.cache_manager import CacheConfig
from kserve_mesh.mesh.dataplane import GRPC_INFER, REST_INFER, DataPlane, RestRequest
from kserve_mesh.mesh.instance import Instance
from kserve_mesh.mesh.management import Management
from kserve_mesh.mesh.registry import Registry
from kserve_mesh.mesh.wire import NO_ROUTING, Routing
from kserve_mesh.protocol import v2
from kserve_mesh.runtime.builtin.runtime import BuiltinRuntime, RuntimeConfig
from kserve_mesh.storage import StoragePolicy, make_fetcher, model_check
from kserve_mesh.store.keys import Keys
from kserve_mesh.store.memory import MemoryStore

pytestmark = pytest.mark.integration


class Recorder:
    """Both observers and the payload sink, recording what they are told."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.invocations: list[tuple[str, str, str, str | None]] = []
        self.payloads: list[tuple[str, str, str, str, Any]] = []

    def request_done(self, method: str, error: BaseException | None, seconds: float, model_id: str, *,
                     vmodel_id: str = "", request_bytes: int | None = None, response_bytes: int | None = None) -> None:
        assert seconds >= 0
        self.requests.append({"method": method, "error": type(error).__name__ if error else None,
                              "model": model_id, "vmodel": vmodel_id, "in": request_bytes, "out": response_bytes})

    def invoked(self, method: str, error: BaseException | None, seconds: float, model_id: str,
                vmodel_id: str = "") -> None:
        self.invocations.append((method, model_id, vmodel_id, type(error).__name__ if error else None))

    def request(self, model_id: str, request_id: str, body: object, *, vmodel_id: str = "",
                headers: dict[str, str] | None = None) -> str | None:
        cid = request_id or f"cid-{len(self.payloads)}"
        self.payloads.append(("request", model_id, vmodel_id, cid, body))
        return cid

    def response(self, model_id: str, correlation_id: str, body: object, *, vmodel_id: str = "",
                 headers: dict[str, str] | None = None) -> None:
        self.payloads.append(("response", model_id, vmodel_id, correlation_id, body))


class InlineDecoder:
    offload_bytes = 1 << 30

    async def decode(self, body: bytes, model_id: str, header_length: int | None) -> Any:
        raise AssertionError("small bodies are decoded inline")


@pytest.fixture()
async def setup(tmp_path: Path) -> AsyncIterator[tuple[DataPlane, Recorder, Instance]]:
    for model_id in ("s1", "s2"):
        (tmp_path / model_id).mkdir()
        (tmp_path / model_id / "model.string").write_text(f"{model_id}:")
    store = MemoryStore()
    store.start()
    policy = StoragePolicy.of(allow_local_paths=[tmp_path])
    runtime = BuiltinRuntime(RuntimeConfig(capacity_bytes=64 << 20), make_fetcher(None, tmp_path / ".cache", policy))
    recorder = Recorder()
    inst = Instance(InstanceId("t"), Registry(store, Keys.for_namespace("t")), runtime,
                    CacheConfig(64 << 20, 1, 30.0, 1 << 20), SystemClock(), check_model=model_check(None, policy))
    inst.hops.observer = recorder  # what the server's Telemetry is told
    await inst.start()
    for model_id in ("s1", "s2"):
        await inst.register(model_id, ModelInfo("string", str(tmp_path / model_id)))
    await Management(inst).set_vmodel("vm", "s2")
    try:
        yield DataPlane(inst, "1.0", observer=recorder, payloads=recorder), recorder, inst
    finally:
        await inst.stop()
        await runtime.close()
        await store.close()


def _grpc(name: str, text: bytes = b"x", request_id: str = "") -> bytes:
    req = v2.ModelInferRequest(model_name=name, id=request_id)
    req.inputs.add(name="input-0", datatype="BYTES", shape=[1]).contents.bytes_contents.append(text)
    return req.SerializeToString()


def _rest(text: str, datatype: str = "BYTES") -> bytes:
    return json.dumps({"inputs": [{"name": "input-0", "shape": [1], "datatype": datatype, "data": [text]}]}).encode()


async def _read(body: bytes, request_id: str = "") -> RestRequest:
    return RestRequest(body, None, "", [(b"content-type", b"application/json")], request_id)


async def test_grpc_inference_is_timed_sized_invoked_and_logged(setup: tuple[DataPlane, Recorder, Instance]) -> None:
    plane, rec, _ = setup
    data = _grpc("vm", b"hi", "g-1")
    resp = await plane.infer(data, NO_ROUTING)
    assert resp.model_name == "s2"
    assert rec.requests == [{"method": GRPC_INFER, "error": None, "model": "s2", "vmodel": "vm",
                             "in": len(data), "out": resp.ByteSize()}]
    assert rec.invocations == [(GRPC_INFER, "s2", "vm", None)]
    assert [(k, m, vm, cid) for k, m, vm, cid, _ in rec.payloads] == [("request", "s2", "vm", "g-1"),
                                                                     ("response", "s2", "vm", "g-1")]
    assert rec.payloads[1][4] is resp


async def test_rest_inference_is_timed_sized_invoked_and_logged_as_the_bytes_it_came_with(
        setup: tuple[DataPlane, Recorder, Instance]) -> None:
    plane, rec, _ = setup
    body = _rest("a")
    answer = await plane.infer_rest("s1", Routing(model_id="s1"), lambda: _read(body, "r-1"), InlineDecoder())
    assert json.loads(answer.body)["outputs"][0]["data"] == ["s1:a"]
    assert rec.requests == [{"method": REST_INFER, "error": None, "model": "s1", "vmodel": "",
                             "in": len(body), "out": len(answer.body)}]
    assert rec.invocations == [(REST_INFER, "s1", "", None)]
    assert rec.payloads == [("request", "s1", "", "r-1", body), ("response", "s1", "", "r-1", answer.body)]


async def test_a_failed_inference_logs_its_request_and_no_response(setup: tuple[DataPlane, Recorder, Instance]) -> None:
    plane, rec, _ = setup
    with pytest.raises(InvalidArgument):
        await plane.infer_rest("s1", NO_ROUTING, lambda: _read(_rest("a", "INT32")), InlineDecoder())
    assert [p[0] for p in rec.payloads] == ["request"]
    assert rec.requests[-1]["error"] == "InvalidArgument" and rec.requests[-1]["out"] is None
    with pytest.raises(ModelNotFound):  # an unknown model: nothing is read, invoked or logged
        await plane.infer(_grpc("nope"), NO_ROUTING)
    assert len(rec.payloads) == 1 and rec.requests[-1]["error"] == "ModelNotFound"


async def test_a_peers_hop_is_served_and_invoked_but_not_logged_again(
        setup: tuple[DataPlane, Recorder, Instance]) -> None:
    plane, rec, _ = setup
    resp = await plane.infer(_grpc("s1"), Routing(model_id="s1", forwarded=True), peer=True)
    assert resp.outputs[0].contents.bytes_contents == [b"s1:x"]
    assert rec.invocations == [(GRPC_INFER, "s1", "", None)]
    assert rec.payloads == []  # the instance the client called logged it
