"""The local link (runtime/local_link.py) over real Unix sockets: framing, answers, errors mapped
exactly as over gRPC, bounds (oversize, malformed and stalled frames, requests in flight), deadlines,
cancellation reaching the server, connection loss and reconnection, many requests at once."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from kserve_mesh.core import errors as e
from kserve_mesh.protocol import v2
from kserve_mesh.runtime import local_link as ll
from kserve_mesh.runtime.local_link import LinkClient, LinkedRuntimeClient, serve_link

pytestmark = pytest.mark.timeout(60)

ERRORS: dict[str, e.MeshError] = {
    "missing": e.ModelNotFound("missing"),
    "bad-input": e.InvalidArgument("input 'x' has shape [2] but the model takes [1, 4]"),
    "storage": e.StorageNotFound("s3://bucket/model: no such object"),
    "busy": e.Overloaded("model 'busy' has 64 requests queued"),
    "late": e.DeadlineExceeded("model 'late' did not answer within 1 s"),
    "gone": e.Unavailable("the model is unloading"),
    "not-ready": e.FailedPrecondition("model 'not-ready' is loading"),
    "unauth": e.Unauthenticated("who are you"),  # not in grpc_errors' table: mapped by its code alone
}


class FakeRuntime:
    """``infer`` by model name: echo, raise, hold until cancelled, wait for company, answer big."""

    def __init__(self) -> None:
        self.running = 0
        self.most_running = 0
        self.started: asyncio.Event = asyncio.Event()
        self.cancelled: list[str] = []
        self.timeouts: list[float | None] = []
        self.together = 0  # "together" requests wait until this many are running

    async def infer(self, request: v2.ModelInferRequest, *, timeout: float | None = None) -> v2.ModelInferResponse:
        name = request.model_name
        self.timeouts.append(timeout)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if name in ERRORS:
                raise ERRORS[name]
            if name == "bug":
                raise ZeroDivisionError("a bug in a model")
            if name == "hold":
                self.started.set()
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    self.cancelled.append(request.id)
                    raise
            if name == "together":
                while self.most_running < self.together:
                    await asyncio.sleep(0.001)
            if name == "big":
                return v2.ModelInferResponse(model_name=name, raw_output_contents=[b"x" * 4096])
            await asyncio.sleep(0)
            return v2.ModelInferResponse(model_name=name, id=request.id)
        finally:
            self.running -= 1


    async def model_metadata(self, model_id: str) -> v2.ModelMetadataResponse:
        return v2.ModelMetadataResponse(name=model_id)


def _request(model: str, rid: str = "r") -> v2.ModelInferRequest:
    return v2.ModelInferRequest(model_name=model, id=rid)


async def _call(client: LinkClient, model: str, rid: str = "r", timeout: float = 10.0) -> v2.ModelInferResponse:
    return v2.ModelInferResponse.FromString(await client.call(_request(model, rid).SerializeToString(), timeout,
                                                              model))


@pytest.fixture()
def sock_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # sun_path holds 108 bytes: pytest's tmp_path can be longer
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="ll-", dir="/tmp"))
    yield folder  # type: ignore[misc]
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
async def link(sock_dir: Path) -> Any:
    runtime = FakeRuntime()
    path = str(sock_dir / "link.sock")
    server = await serve_link(path, runtime.infer, max_message_bytes=64 * 1024)
    client = LinkClient(path, max_message_bytes=64 * 1024)
    yield runtime, server, client, path
    await client.close()
    await server.close()


# -- framing -----------------------------------------------------------------------------------------
def test_frame_layout_and_error_payload() -> None:
    data = ll.frame(ll.REQUEST, 7, b"abc")
    assert data == ll.HEADER.pack(3, ll.REQUEST, 7) + b"abc" and len(ll.HEADER.pack(0, 0, 0)) == 13
    import grpc

    payload = ll.error_payload(grpc.StatusCode.NOT_FOUND, "ModelNotFound", "model 'x' not found")
    assert ll.parse_error(payload) == (grpc.StatusCode.NOT_FOUND, "ModelNotFound", "model 'x' not found")
    with pytest.raises(ValueError):
        ll.parse_error(b"\x05")
    with pytest.raises(ValueError):
        ll.parse_error(ll.ERROR_HEAD.pack(5, 200) + b"short")
    with pytest.raises(ValueError):
        ll.parse_error(ll.ERROR_HEAD.pack(99, 0))  # no such status code


class _Collect(ll._Framed):
    accepts = frozenset((ll.RESPONSE, ll.ERROR))

    def __init__(self) -> None:
        super().__init__(100)
        self.frames: list[tuple[int, int, bytes]] = []
        self.why: list[str] = []

    def frame_received(self, kind: int, request_id: int, payload: bytes) -> None:
        self.frames.append((kind, request_id, payload))

    def lost(self, exc: Exception | None) -> None:
        pass

    def protocol_error(self, why: str) -> None:
        self.why.append(why)
        self.closed = True


async def test_frames_split_anywhere_and_joined_are_parsed_the_same() -> None:
    stream = b"".join([ll.frame(ll.RESPONSE, 1, b"one"), ll.frame(ll.ERROR, 2, b""), ll.frame(ll.RESPONSE, 3, b"x" * 90)])
    for chunk in (1, 2, 5, 13, 14, 50, len(stream)):
        proto = _Collect()
        for i in range(0, len(stream), chunk):
            proto.data_received(stream[i:i + chunk])
        assert proto.frames == [(ll.RESPONSE, 1, b"one"), (ll.ERROR, 2, b""), (ll.RESPONSE, 3, b"x" * 90)], chunk
        assert not proto.why and proto._stall is None and not proto._buf


async def test_unknown_type_and_oversize_frames_are_protocol_errors() -> None:
    proto = _Collect()
    proto.data_received(ll.frame(ll.REQUEST, 1, b""))  # a request, to a client
    assert proto.why == ["unexpected frame type 1"]
    proto = _Collect()
    proto.data_received(ll.HEADER.pack(101, ll.RESPONSE, 1))  # announced over the limit: refused at once
    assert proto.why and "over the limit of 100" in proto.why[0]


# -- answers ------------------------------------------------------------------------------------------
async def test_answers_and_the_socket_is_owner_only(link: Any) -> None:
    runtime, _server, client, path = link
    answer = await _call(client, "echo", "id-1")
    assert (answer.model_name, answer.id) == ("echo", "id-1")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_ISSOCK(os.stat(path).st_mode)
    assert runtime.timeouts and 9 < runtime.timeouts[-1] <= 10  # the request's deadline reached the runtime


async def test_many_concurrent_requests_on_one_connection_are_run_concurrently(link: Any) -> None:
    runtime, server, client, _ = link
    runtime.together = 8  # each waits until 8 run at once: only concurrent serving answers them
    answers = await asyncio.gather(*(_call(client, "together", f"id-{i}") for i in range(8)))
    assert [a.id for a in answers] == [f"id-{i}" for i in range(8)]
    answers = await asyncio.gather(*(_call(client, "echo", f"n-{i}") for i in range(600)))  # > MAX_IN_FLIGHT
    assert [a.id for a in answers] == [f"n-{i}" for i in range(600)]
    assert len(server.connections) == 1 and runtime.most_running >= 8


async def test_a_client_waits_for_a_slot_within_the_deadline(link: Any) -> None:
    runtime, _server, _, path = link
    client = LinkClient(path, max_in_flight=1)
    try:
        holding = asyncio.create_task(_call(client, "hold", "h"))
        await asyncio.wait_for(runtime.started.wait(), 5)
        with pytest.raises(e.DeadlineExceeded, match="no free slot"):
            await _call(client, "echo", timeout=0.2)
        holding.cancel()
        await asyncio.gather(holding, return_exceptions=True)
        assert (await _call(client, "echo", "after")).id == "after"
    finally:
        await client.close()


# -- errors: exactly what the gRPC path gives ---------------------------------------------------------
@pytest.mark.parametrize("model", [*ERRORS, "bug"])
async def test_errors_are_the_same_types_and_messages_as_over_grpc(model: str, sock_dir: Path) -> None:
    from kserve_mesh.runtime.builtin import RuntimeConfig
    from kserve_mesh.runtime.grpc_client import GrpcRuntimeClient
    from kserve_mesh.runtime.server import serve

    runtime = FakeRuntime()
    grpc_server, _ = await serve(RuntimeConfig(), runtime=runtime, listen=f"unix:{sock_dir / 'runtime.sock'}")
    link_server = await serve_link(str(sock_dir / "link.sock"), runtime.infer)
    grpc_client = GrpcRuntimeClient(grpc_server.address)
    link_client = LinkedRuntimeClient(grpc_server.address, str(sock_dir / "link.sock"))
    try:
        with pytest.raises(e.MeshError) as over_grpc:
            await grpc_client.infer(_request(model), timeout=10)
        with pytest.raises(e.MeshError) as over_link:
            await link_client.infer(_request(model), timeout=10)
        with pytest.raises(e.MeshError) as bytes_over_link:
            await link_client.infer_bytes(_request(model).SerializeToString(), model_id=model, timeout=10)
        assert type(over_link.value) is type(over_grpc.value) is type(bytes_over_link.value)
        assert str(over_link.value) == str(over_grpc.value) == str(bytes_over_link.value)
        if isinstance(over_grpc.value, e.ModelNotFound):
            assert over_link.value.model_id == over_grpc.value.model_id == model  # type: ignore[attr-defined]
        assert await link_client.model_ready(model) is True  # everything else still travels over gRPC
    finally:
        await link_client.close()
        await grpc_client.close()
        await link_server.close()
        await grpc_server.stop(0)


async def test_a_request_over_the_limit_is_refused_before_it_is_sent(link: Any) -> None:
    runtime, _server, client, _ = link
    big = v2.ModelInferRequest(model_name="echo", raw_input_contents=[b"x" * (64 * 1024)]).SerializeToString()
    with pytest.raises(e.PayloadTooLarge, match=r"over the limit of 65536 bytes of the runtime link"):
        await client.call(big, 5, "echo")
    assert not client.connected and not runtime.timeouts  # nothing was sent


async def test_a_response_over_the_limit_is_an_error_not_a_frame(sock_dir: Path) -> None:
    runtime = FakeRuntime()
    path = str(sock_dir / "link.sock")
    server = await serve_link(path, runtime.infer, max_message_bytes=1024)
    client = LinkClient(path, max_message_bytes=1024)
    try:
        with pytest.raises(e.PayloadTooLarge, match=r"response of model 'big' is \d+ bytes, over the limit of 1024"):
            await _call(client, "big")
        assert (await _call(client, "echo", "still")).id == "still"
    finally:
        await client.close()
        await server.close()


# -- malformed input closes the connection ------------------------------------------------------------
async def _raw(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(path)


@pytest.mark.parametrize("garbage", [
    ll.HEADER.pack(0, 9, 1),  # an unknown frame type
    ll.HEADER.pack(0, ll.RESPONSE, 1),  # a response, to the server
    ll.HEADER.pack(64 * 1024 + ll.FRAME_OVERHEAD + 1, ll.REQUEST, 1),  # over the frame limit
    ll.frame(ll.REQUEST, 1, b"abc"),  # a request without its 8-byte head
    ll.frame(ll.REQUEST, 1, ll.REQUEST_HEAD.pack(1.0) + b"x" * (64 * 1024 + 1)),  # over the message limit
])
async def test_a_malformed_frame_closes_the_servers_connection(link: Any, garbage: bytes) -> None:
    _runtime, _server, client, path = link
    reader, writer = await _raw(path)
    writer.write(garbage)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing answered
    writer.close()
    assert (await _call(client, "echo", "others")).id == "others"  # other connections go on


async def test_a_duplicate_request_id_closes_the_connection(link: Any) -> None:
    runtime, _server, _client, path = link
    reader, writer = await _raw(path)
    hold = ll.frame(ll.REQUEST, 5, ll.REQUEST_HEAD.pack(10.0) + _request("hold").SerializeToString())
    writer.write(hold + hold)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    for _ in range(100):
        if runtime.cancelled:
            break
        await asyncio.sleep(0.01)
    assert runtime.cancelled == ["r"]  # the connection's requests were cancelled with it
    writer.close()


async def test_a_stalled_partial_frame_closes_the_connection(link: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, _, path = link
    monkeypatch.setattr(ll, "FRAME_STALL_S", 0.2)
    reader, writer = await _raw(path)
    writer.write(ll.HEADER.pack(100, ll.REQUEST, 1) + b"only part")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_a_malformed_answer_fails_the_requests_in_flight_and_the_next_reconnects(sock_dir: Path) -> None:
    path = str(sock_dir / "link.sock")

    async def garbage_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(ll.HEADER.pack(0, 77, 1))
        await writer.drain()
        await asyncio.sleep(5)

    bad = await asyncio.start_unix_server(garbage_server, path)
    client = LinkClient(path)
    try:
        with pytest.raises(e.Unavailable, match=r"ModelInfer of model 'echo' failed \(UNAVAILABLE\): the runtime "
                                                r"sent a malformed frame \(unexpected frame type 77\)"):
            await _call(client, "echo")
        bad.close()
        os.unlink(path)
        runtime = FakeRuntime()
        good = await serve_link(path, runtime.infer)
        assert (await _call(client, "echo", "again")).id == "again"
        await good.close()
    finally:
        await client.close()


async def test_the_server_bounds_requests_in_flight_per_connection(sock_dir: Path) -> None:
    runtime = FakeRuntime()
    path = str(sock_dir / "link.sock")
    server = await serve_link(path, runtime.infer, max_in_flight=2)
    client = LinkClient(path, max_in_flight=10)
    try:
        held = [asyncio.create_task(_call(client, "hold", f"h{i}")) for i in range(2)]
        while runtime.running < 2:
            await asyncio.sleep(0.01)
        with pytest.raises(e.Overloaded, match="2 requests in flight on this connection already"):
            await _call(client, "echo")
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
    finally:
        await client.close()
        await server.close()


# -- deadlines and cancellation ------------------------------------------------------------------------
async def test_a_deadline_fails_the_request_and_cancels_it_on_the_server(link: Any) -> None:
    runtime, _server, client, _ = link
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(e.DeadlineExceeded, match=r"ModelInfer of model 'hold' failed \(DEADLINE_EXCEEDED\)"):
        await _call(client, "hold", "late-1", timeout=0.3)
    assert 0.25 < loop.time() - start < 2
    for _ in range(200):
        if runtime.cancelled:
            break
        await asyncio.sleep(0.01)
    assert runtime.cancelled == ["late-1"]  # the CANCEL frame reached the server
    assert (await _call(client, "echo", "next")).id == "next"  # the connection goes on


async def test_cancelling_the_caller_cancels_the_request_on_the_server(link: Any) -> None:
    runtime, server, client, _ = link
    task = asyncio.create_task(_call(client, "hold", "mine"))
    await asyncio.wait_for(runtime.started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):
        if runtime.cancelled and not any(conn.tasks for conn in server.connections):
            break
        await asyncio.sleep(0.01)
    assert runtime.cancelled == ["mine"]
    assert not any(conn.tasks for conn in server.connections)


# -- connection loss ------------------------------------------------------------------------------------
async def test_connection_loss_fails_requests_in_flight_with_unavailable_then_the_next_reconnects(
        sock_dir: Path) -> None:
    path = str(sock_dir / "link.sock")
    runtime = FakeRuntime()
    server = await serve_link(path, runtime.infer)
    client = LinkClient(path)
    try:
        held = [asyncio.create_task(_call(client, "hold", f"h{i}")) for i in range(3)]
        await asyncio.wait_for(runtime.started.wait(), 5)
        await server.close()  # the runtime child died
        results = await asyncio.wait_for(asyncio.gather(*held, return_exceptions=True), 5)
        assert all(isinstance(r, e.Unavailable) for r in results), results
        assert "the connection to the runtime was lost" in str(results[0])
        with pytest.raises(e.Unavailable, match=r"failed \(UNAVAILABLE\): cannot connect"):
            await _call(client, "echo")  # nobody listens
        server = await serve_link(path, FakeRuntime().infer)  # the supervisor restarted it
        assert (await _call(client, "echo", "back")).id == "back"
    finally:
        await client.close()
        await server.close()


async def test_reconnect_moves_new_requests_to_a_new_connection_and_lets_old_ones_finish(link: Any) -> None:
    runtime, server, client, _ = link
    runtime.together = 2
    first = asyncio.create_task(_call(client, "together", "old"))  # waits for a second request
    while runtime.running < 1:
        await asyncio.sleep(0.01)
    client.reconnect()
    assert not client.connected
    second = await _call(client, "together", "new")  # a new connection; both now run
    assert second.id == "new" and (await first).id == "old"
    for _ in range(100):
        if len(server.connections) == 1:
            break
        await asyncio.sleep(0.01)
    assert len(server.connections) == 1  # the retired one closed once its request ended


async def test_a_closed_client_refuses_requests(link: Any) -> None:
    _, _, client, _ = link
    await _call(client, "echo")
    await client.close()
    with pytest.raises(e.Unavailable, match="closed"):
        await _call(client, "echo")


def test_serve_link_refuses_to_replace_a_file_that_is_not_a_socket(sock_dir: Path) -> None:
    path = sock_dir / "link.sock"
    path.write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        asyncio.run(serve_link(str(path), FakeRuntime().infer))
    with socket.socket(socket.AF_UNIX) as stale:  # a socket left by a killed runtime is replaced
        path.unlink()
        stale.bind(str(path))
    async def start_and_stop() -> None:
        server = await serve_link(str(path), FakeRuntime().infer)
        await server.close()
    asyncio.run(start_and_stop())


# -- the setting ---------------------------------------------------------------------------------------
def test_runtime_link_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from kserve_mesh.settings import MeshSettings

    assert MeshSettings(runtime="process", runtime_link="frames").runtime_link == "frames"
    assert MeshSettings(runtime="remote", runtime_address="h:1").runtime_link in ("frames", "grpc")  # default ok
    assert MeshSettings(runtime="remote", runtime_address="h:1", runtime_link="grpc").runtime_link == "grpc"
    with pytest.raises(ValidationError, match="runtime_link=frames is the local link to the runtime child"):
        MeshSettings(runtime="remote", runtime_address="h:1", runtime_link="frames")
    monkeypatch.setenv("KSERVE_MESH_RUNTIME_LINK", "frames")
    with pytest.raises(ValidationError, match="a remote runtime is reached over gRPC only"):
        MeshSettings(runtime="remote", runtime_address="h:1")
    with pytest.raises(ValidationError):
        MeshSettings(runtime="process", runtime_link="shm")


async def test_a_client_that_reads_nothing_is_disconnected(sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ll, "WRITE_TIMEOUT_S", 0.3)
    runtime = FakeRuntime()
    path = str(sock_dir / "link.sock")
    server = await serve_link(path, runtime.infer, max_message_bytes=64 * 1024)
    try:
        with socket.socket(socket.AF_UNIX) as raw:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.connect(path)
            raw.setblocking(False)
            request = ll.REQUEST_HEAD.pack(10.0) + _request("big").SerializeToString()
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(raw, b"".join(ll.frame(ll.REQUEST, i, request) for i in range(1, 600)))
            for _ in range(300):
                if server.connections:
                    break
                await asyncio.sleep(0.01)
            conn = next(iter(server.connections))
            for _ in range(300):  # answers pile up unread: the server gives up on the connection
                if conn.closed and not server.connections:
                    break
                await asyncio.sleep(0.01)
            assert conn.closed and not server.connections
    finally:
        await server.close()
