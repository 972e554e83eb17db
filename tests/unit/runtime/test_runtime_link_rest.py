"""REST bodies over the local link (``runtime/local_link.py``: REST and REST_OK frames) on real Unix
sockets: the body, its binary header length and the model id arrive as sent and the answer's body
and headers come back; errors keep their type and message; malformed REST frames are answered (or,
to a server that takes none, close the connection); an answer of the wrong kind is an error;
deadlines reach the server."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from kserve_mesh.core import errors as e
from kserve_mesh.protocol import v2
from kserve_mesh.runtime import local_link as ll
from kserve_mesh.runtime.local_link import LinkClient, LinkedRuntimeClient, serve_link

pytestmark = pytest.mark.timeout(60)


class RestRuntime:
    """``infer_rest`` by model id: echo what arrived, raise, or hold until cancelled."""

    def __init__(self) -> None:
        self.cancelled = 0
        self.started = asyncio.Event()

    async def infer(self, request: v2.ModelInferRequest, *, timeout: float | None = None) -> v2.ModelInferResponse:
        return v2.ModelInferResponse(model_name=request.model_name, id=request.id)

    async def infer_rest(self, model_id: str, body: bytes, header_length: int | None, *,
                         timeout: float | None = None) -> tuple[bytes, dict[str, str]]:
        if model_id == "bad":
            raise e.InvalidArgument("body is not valid JSON: Expecting value: line 1 column 1 (char 0)")
        if model_id == "hold":
            self.started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        headers = {"content-type": "application/octet-stream", "x-model": model_id,
                   "x-length": str(header_length), "x-timeout": "yes" if timeout else "no"}
        return body[::-1], headers if model_id != "plain" else {}


@pytest.fixture()
def sock_dir() -> Any:
    folder = Path(tempfile.mkdtemp(prefix="llr-", dir="/tmp"))  # sun_path holds 108 bytes
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
async def link(sock_dir: Path) -> AsyncIterator[tuple[RestRuntime, LinkClient, str]]:
    runtime = RestRuntime()
    path = str(sock_dir / "link.sock")
    server = await serve_link(path, runtime.infer, infer_rest=runtime.infer_rest, max_message_bytes=64 * 1024)
    client = LinkClient(path, max_message_bytes=64 * 1024)
    yield runtime, client, path
    await client.close()
    await server.close()


async def _rest(client: LinkClient, model_id: str, body: bytes, length: int | None = None,
                timeout: float = 10.0) -> tuple[bytes, dict[str, str]]:
    answer = await client.call(ll.rest_payload(model_id, body, length), timeout, model_id, kind=ll.REST)
    return ll.parse_rest_answer(answer)


def test_payloads_round_trip_and_malformed_ones_are_refused() -> None:
    payload = ll.REQUEST_HEAD.pack(2.5) + ll.rest_payload("模型", b'{"inputs": []}', 17)
    assert ll.parse_rest(payload) == ("模型", b'{"inputs": []}', 17)
    assert ll.parse_rest(ll.REQUEST_HEAD.pack(0) + ll.rest_payload("m", b"", None)) == ("m", b"", None)
    head = ll.REQUEST_HEAD.pack(1.0)
    for bad in (head + b"\x00", head + ll.REST_HEAD.pack(-1, 5) + b"abc", head + ll.REST_HEAD.pack(-2, 1) + b"m",
                head + ll.REST_HEAD.pack(-1, 2) + b"\xff\xfe{}"):
        with pytest.raises(ValueError):
            ll.parse_rest(bad)
    answer = ll.rest_answer(b"\x00body", {"content-type": "application/json", "inference-header-content-length": "12"})
    assert ll.parse_rest_answer(answer) == (b"\x00body", {"content-type": "application/json",
                                                         "inference-header-content-length": "12"})
    assert ll.parse_rest_answer(ll.rest_answer(b"{}", {})) == (b"{}", {})
    for bad in (b"\x01", ll.REST_ANSWER_HEAD.pack(9) + b"short", ll.REST_ANSWER_HEAD.pack(7) + b"no-sepx{}",
                ll.REST_ANSWER_HEAD.pack(3) + b": v{}"):
        with pytest.raises(ValueError):
            ll.parse_rest_answer(bad)


async def test_the_body_arrives_as_sent_and_the_answer_comes_back(link: Any) -> None:
    _, client, _ = link
    body, headers = await _rest(client, "é-model", b'{"x": 1}\x00\xff', 8)
    assert body == b'\xff\x00}1 :"x"{'
    assert headers == {"content-type": "application/octet-stream", "x-model": "é-model", "x-length": "8",
                       "x-timeout": "yes"}
    assert (await _rest(client, "m", b"{}"))[1]["x-length"] == "None"
    assert await _rest(client, "plain", b"{}") == (b"}{", {})
    answers = await asyncio.gather(*(_rest(client, f"m{i}", str(i).encode() * 3) for i in range(50)))
    assert [a[0] for a in answers] == [(str(i) * 3)[::-1].encode() for i in range(50)]  # many in flight, each its own
    response = v2.ModelInferResponse.FromString(
        await client.call(v2.ModelInferRequest(model_name="m", id="r").SerializeToString(), 5.0, "m"))
    assert response.id == "r"  # messages still travel on the same connection


async def test_errors_keep_their_type_and_message(link: Any) -> None:
    _, client, _ = link
    with pytest.raises(e.InvalidArgument) as err:
        await _rest(client, "bad", b"")
    assert str(err.value) == "body is not valid JSON: Expecting value: line 1 column 1 (char 0)"


async def test_a_malformed_rest_frame_is_answered_and_the_connection_goes_on(link: Any) -> None:
    _, _, path = link
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(ll.frame(ll.REST, 7, ll.REQUEST_HEAD.pack(5.0) + ll.REST_HEAD.pack(-1, 200) + b"m"))
    writer.write(ll.frame(ll.REST, 8, ll.REQUEST_HEAD.pack(5.0) + ll.rest_payload("m", b"ok", None)))
    answers = {}
    for _ in range(2):
        head = await asyncio.wait_for(reader.readexactly(ll.HEADER.size), 5)
        length, kind, request_id = ll.HEADER.unpack(head)
        answers[request_id] = (kind, await reader.readexactly(length))
    code, kind, message = ll.parse_error(answers[7][1])
    assert answers[7][0] == ll.ERROR and code == grpc.StatusCode.INVALID_ARGUMENT and kind == "InvalidArgument"
    assert "malformed REST frame" in message
    assert answers[8][0] == ll.REST_OK and ll.parse_rest_answer(answers[8][1])[0] == b"ko"
    writer.close()


async def test_a_server_without_a_rest_handler_closes_the_connection_on_one(sock_dir: Path) -> None:
    path = str(sock_dir / "link.sock")
    server = await serve_link(path, RestRuntime().infer)
    client = LinkClient(path)
    try:
        with pytest.raises(e.Unavailable, match="connection to the runtime was lost"):
            await _rest(client, "m", b"{}")
        request = v2.ModelInferRequest(model_name="m", id="again").SerializeToString()
        assert v2.ModelInferResponse.FromString(await client.call(request, 5.0, "m")).id == "again"
    finally:
        await client.close()
        await server.close()


async def test_an_answer_of_the_wrong_kind_is_an_internal_error(sock_dir: Path) -> None:
    path = str(sock_dir / "link.sock")

    async def confused(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length, _kind, request_id = ll.HEADER.unpack(await reader.readexactly(ll.HEADER.size))
        await reader.readexactly(length)
        writer.write(ll.frame(ll.REST_OK, request_id, ll.rest_answer(b"{}", {})))  # to a message request
        await writer.drain()
        await reader.read()

    server = await asyncio.start_unix_server(confused, path)
    client = LinkClient(path)
    try:
        with pytest.raises(e.InternalError, match="an answer of frame type 6 to a request of type 1"):
            await client.call(v2.ModelInferRequest(model_name="m").SerializeToString(), 5.0, "m")
    finally:
        await client.close()
        server.close()


async def test_a_deadline_fails_the_request_and_cancels_it_on_the_server(link: Any) -> None:
    runtime, client, _ = link
    with pytest.raises(e.DeadlineExceeded):
        await _rest(client, "hold", b"{}", timeout=0.2)
    assert runtime.started.is_set()
    for _ in range(200):
        if runtime.cancelled:
            break
        await asyncio.sleep(0.01)
    assert runtime.cancelled == 1


async def test_the_linked_runtime_client_hands_rest_bodies_over_the_link(sock_dir: Path) -> None:
    path = str(sock_dir / "link.sock")
    server = await serve_link(path, RestRuntime().infer, infer_rest=RestRuntime().infer_rest)
    client = LinkedRuntimeClient("127.0.0.1:1", path)  # the gRPC target is never called here
    try:
        assert await client.infer_rest("m", b"abc", 3, timeout=5.0) == (
            b"cba", {"content-type": "application/octet-stream", "x-model": "m", "x-length": "3", "x-timeout": "yes"})
        with pytest.raises(e.InvalidArgument, match="not valid JSON"):
            await client.infer_rest("bad", b"", None)
    finally:
        await client.close()
        await server.close()
