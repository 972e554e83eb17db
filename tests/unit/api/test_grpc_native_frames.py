"""The mesh's own gRPC server (``api/grpc_native.py``) spoken to in raw HTTP/2 over a real socket:
hostile and malformed frames, headers and messages, and the exact answer each gets (GOAWAY and its
error code, RST_STREAM, an HTTP status, or a gRPC status naming the problem); flow control both
ways, rapid reset, deadlines and a graceful stop. (Real gRPC clients are in ``test_grpc_native.py``.)"""

from __future__ import annotations

import asyncio
import gzip
import socket
import struct
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import grpc
import hpack
import pytest

from kserve_mesh.api import grpc_native as gn
from kserve_mesh.api.grpc_native import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    MAX_FRAME,
    MAX_HEADER_BLOCK,
    MAX_METADATA,
    PING,
    PRIORITY,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    STREAM_WINDOW,
    WINDOW_UPDATE,
    NativeServer,
    frame,
)

SVC = "test.Svc"
MAX_MESSAGE = 1 << 20
WAIT = 3.0  # the longest any single wait in this file may take
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


# -- the server ------------------------------------------------------------------------------------
class Handlers:
    """The methods served; what the slow ones went through is counted."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.go = asyncio.Event()
        self.started = 0
        self.running = 0
        self.cancelled = 0

    async def echo(self, request: bytes, context: Any) -> bytes:
        return request

    async def length(self, request: bytes, context: Any) -> bytes:
        return str(len(request)).encode()

    async def slow(self, request: bytes, context: Any) -> bytes:
        self.started += 1
        self.running += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        return b"done"

    async def sleepy(self, request: bytes, context: Any) -> bytes:
        await asyncio.sleep(0.3)
        return b"slept"

    async def collect(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        """Takes one message once ``go`` is set, then waits (a slow reader of a request stream)."""
        await self.go.wait()
        await requests.__anext__()
        await self.release.wait()
        return b""


@dataclass
class Served:
    server: NativeServer
    port: int
    handlers: Handlers


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    h = Handlers()
    server = NativeServer(max_message=MAX_MESSAGE, max_concurrent=8, handshake_timeout_s=0.5)
    server.add_registered_method_handlers(SVC, {
        "Echo": grpc.unary_unary_rpc_method_handler(h.echo),
        "Len": grpc.unary_unary_rpc_method_handler(h.length),
        "Slow": grpc.unary_unary_rpc_method_handler(h.slow),
        "Sleepy": grpc.unary_unary_rpc_method_handler(h.sleepy),
        "Collect": grpc.stream_unary_rpc_method_handler(h.collect),
    })
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        await server.start([sock])
        yield Served(server, server.ports[0], h)
    finally:
        try:
            await server.stop(0)
        finally:
            sock.close()


# -- a raw HTTP/2 client ---------------------------------------------------------------------------
@dataclass
class Frame:
    kind: int
    flags: int
    sid: int
    payload: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Answer:
    """What the server sent on one stream."""

    headers: dict[str, str] | None = None
    data: bytearray = field(default_factory=bytearray)
    data_frames: list[int] = field(default_factory=list)
    trailers: dict[str, str] | None = None
    rst: int | None = None

    @property
    def ended(self) -> bool:
        return self.trailers is not None or self.rst is not None

    @property
    def status(self) -> int:
        assert self.trailers is not None, f"no trailers (reset with {self.rst})"
        return int(self.trailers["grpc-status"])

    @property
    def message(self) -> str:
        assert self.trailers is not None
        return unquote(self.trailers.get("grpc-message", ""))

    def messages(self) -> list[bytes]:
        out, buf = [], bytes(self.data)
        while buf:
            size = struct.unpack(">I", buf[1:5])[0]
            out.append(buf[5:5 + size])
            buf = buf[5 + size:]
        return out


def msg(body: bytes, flag: int = 0, size: int | None = None) -> bytes:
    """A gRPC length-prefixed message (``size`` overrides the declared length)."""
    return bytes((flag,)) + struct.pack(">I", len(body) if size is None else size) + body


def settings(*pairs: tuple[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.streams: dict[int, Answer] = {}
        self.goaway: tuple[int, int, str] | None = None
        self.pings: list[bytes] = []
        self.window_updates: list[tuple[int, int]] = []
        self.settings_acks = 0
        self.eof = False

    @classmethod
    async def open(cls, port: int, *, preface: bytes | None = PREFACE, first: bytes = b"",
                   rcvbuf: int | None = None) -> Client:
        sock = socket.socket()
        if rcvbuf is not None:  # before connecting: the TCP window stays that small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), WAIT)
            reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        client = cls(reader, writer)
        if preface == PREFACE:
            client.send(preface + settings() + first)
        elif preface is not None:  # something else than the preface: sent alone
            client.send(preface)
        return client

    def send(self, *data: bytes) -> None:
        self.writer.write(b"".join(data))

    async def drain(self) -> None:
        await asyncio.wait_for(self.writer.drain(), WAIT)

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), WAIT)
        except (TimeoutError, OSError):
            pass

    def request(self, sid: int, method: str = "Echo", *, extra: Iterable[tuple[bytes, bytes]] = (),
                http_method: bytes = b"POST", content_type: bytes = b"application/grpc",
                end_stream: bool = False) -> bytes:
        """A HEADERS frame opening a call (encoded now: send it, the encoder's table moves on)."""
        block = self.encoder.encode([
            (b":method", http_method), (b":scheme", b"http"), (b":path", f"/{SVC}/{method}".encode()),
            (b":authority", b"127.0.0.1"), (b"content-type", content_type), (b"te", b"trailers"), *extra])
        return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), sid, block)

    def call(self, sid: int, body: bytes, method: str = "Echo", **kw: Any) -> bytes:
        return self.request(sid, method, **kw) + frame(DATA, END_STREAM, sid, msg(body))

    async def read_frame(self, timeout: float = WAIT) -> Frame | None:
        """The next frame, bookkept; None at the end of the connection."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(9), timeout)
            length = int.from_bytes(head[:3], "big")
            payload = await asyncio.wait_for(self.reader.readexactly(length), timeout) if length else b""
        except (asyncio.IncompleteReadError, ConnectionResetError):
            self.eof = True
            return None
        f = Frame(head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, payload)
        if f.kind == HEADERS:
            assert f.flags & END_HEADERS, "the server never sends CONTINUATION"
            f.headers = {k.decode(): v.decode() for k, v in self.decoder.decode(payload, raw=True)}
            answer = self.streams.setdefault(f.sid, Answer())
            if answer.headers is None:
                answer.headers = f.headers
            if f.flags & END_STREAM:
                answer.trailers = f.headers
        elif f.kind == DATA:
            answer = self.streams.setdefault(f.sid, Answer())
            answer.data += payload
            answer.data_frames.append(len(payload))
            if f.flags & END_STREAM:
                answer.trailers = {}
        elif f.kind == RST_STREAM:
            self.streams.setdefault(f.sid, Answer()).rst = struct.unpack(">I", payload)[0]
        elif f.kind == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self.goaway = (last & 0x7FFFFFFF, code, payload[8:].decode("utf-8", "replace"))
        elif f.kind == PING and f.flags & ACK:
            self.pings.append(payload)
        elif f.kind == WINDOW_UPDATE:
            self.window_updates.append((f.sid, struct.unpack(">I", payload)[0]))
        elif f.kind == SETTINGS and f.flags & ACK:
            self.settings_acks += 1
        return f

    async def until(self, done: Callable[[], bool], timeout: float = WAIT) -> None:
        """Reads frames until ``done()`` (fails past ``timeout`` or at the end of the connection)."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            assert left > 0, "no answer in time"
            if await self.read_frame(left) is None:
                assert done(), "the connection ended first"

    async def answer(self, sid: int, timeout: float = WAIT) -> Answer:
        await self.until(lambda: sid in self.streams and self.streams[sid].ended, timeout)
        return self.streams[sid]

    async def ping(self, data: bytes = b"barrier!") -> None:
        """A PING and its ACK: everything sent before it has been read by the server."""
        self.pings.clear()
        self.send(frame(PING, 0, 0, data))
        await self.until(lambda: data in self.pings)

    async def connection_error(self, timeout: float = WAIT) -> tuple[int, int, str]:
        """The GOAWAY the server sends, then the end of the connection (both within ``timeout``)."""
        await self.until(lambda: self.eof, timeout)
        assert self.goaway is not None, "the connection closed without a GOAWAY"
        return self.goaway

    async def quiet(self, seconds: float) -> None:
        """Reads whatever comes for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                if await self.read_frame(left) is None:
                    return
            except TimeoutError:
                return


@pytest.fixture
async def opened(served: Served) -> AsyncIterator[Callable[..., Any]]:
    clients: list[Client] = []

    async def open_client(**kw: Any) -> Client:
        client = await Client.open(served.port, **kw)
        clients.append(client)
        return client

    try:
        yield open_client
    finally:
        for client in clients:
            await client.close()


async def _until(cond: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# -- 1. the helper works ---------------------------------------------------------------------------
async def test_a_unary_call_is_echoed(served: Served, opened: Any) -> None:
    c = await opened()
    c.send(c.call(1, b"hello"))
    answer = await c.answer(1)
    assert answer.headers is not None and answer.headers[":status"] == "200"
    assert answer.headers["content-type"] == "application/grpc"
    assert answer.messages() == [b"hello"] and answer.status == 0
    assert c.settings_acks == 1  # our (empty) SETTINGS acknowledged
    c.send(c.call(3, b"again"))  # the encoder's dynamic table is shared by both calls
    assert (await c.answer(3)).messages() == [b"again"]
    assert served.server.active == 0


@pytest.mark.parametrize(("value", "seconds"), [
    (b"50m", 0.05), (b"1S", 1.0), (b"2M", 120.0), (b"1H", 3600.0), (b"7u", 7e-6), (b"99999999n", 0.099999999),
    (b"123456789S", None), (b"1s", None), (b"m", None), (b"-1S", None), (b"1.5S", None), (b"", None)])
def test_parse_timeout(value: bytes, seconds: float | None) -> None:
    got = gn.parse_timeout(value)
    assert got == pytest.approx(seconds) if seconds is not None else got is None


# -- 2, 3. the preface -----------------------------------------------------------------------------
async def test_bytes_that_are_not_the_preface_get_goaway_protocol_error(opened: Any) -> None:
    c = await opened(preface=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    last, code, text = await c.connection_error()
    assert (last, code) == (0, gn.PROTOCOL_ERROR) and "preface" in text


async def test_a_short_wrong_start_is_refused_at_once(opened: Any) -> None:
    c = await opened(preface=b"PRX")  # not yet 24 bytes, and already not the preface
    _, code, text = await c.connection_error(timeout=0.4)  # before the handshake timeout
    assert code == gn.PROTOCOL_ERROR and "preface" in text


async def test_no_preface_closes_after_the_handshake_timeout(opened: Any) -> None:
    started = time.monotonic()
    c = await opened(preface=None)
    _, code, text = await c.connection_error()
    assert 0.4 <= time.monotonic() - started < 2.0
    assert code == gn.PROTOCOL_ERROR and "in time" in text


async def test_a_partial_preface_is_also_held_to_the_timeout(opened: Any) -> None:
    started = time.monotonic()
    c = await opened(preface=PREFACE[:10])  # a right start that never finishes
    _, code, _ = await c.connection_error()
    assert 0.4 <= time.monotonic() - started < 2.0 and code == gn.PROTOCOL_ERROR


# -- 4-9. connection errors: GOAWAY with the RFC's code, then the connection closes -----------------
def _continuation_flood(c: Client) -> bytes:
    chunk = b"\x00" * 16_384  # never decoded: the block is refused on its size first
    frames = [frame(HEADERS, 0, 1, chunk)]
    frames += [frame(CONTINUATION, 0, 1, chunk) for _ in range(MAX_HEADER_BLOCK // len(chunk))]
    assert sum(len(f) - 9 for f in frames) > MAX_HEADER_BLOCK  # the last one is one too many
    return b"".join(frames)


def _big_header_frame(c: Client) -> bytes:
    return frame(HEADERS, END_HEADERS, 1, b"\x00" * (MAX_HEADER_BLOCK + 1))


CONNECTION_ERRORS: dict[str, tuple[Callable[[Client], bytes], int, str]] = {
    "frame over MAX_FRAME": (lambda c: u32(MAX_FRAME + 1)[1:] + bytes((DATA, 0)) + u32(1),  # its header is enough
                             gn.FRAME_SIZE_ERROR, f"a frame of {MAX_FRAME + 1} bytes"),
    "header block over MAX_HEADER_BLOCK (CONTINUATION)": (_continuation_flood, gn.ENHANCE_YOUR_CALM,
                                                          f"over {MAX_HEADER_BLOCK} bytes"),
    "header block over MAX_HEADER_BLOCK (one frame)": (_big_header_frame, gn.ENHANCE_YOUR_CALM,
                                                       f"over {MAX_HEADER_BLOCK} bytes"),
    "CONTINUATION interrupted": (lambda c: frame(HEADERS, 0, 1, b"\x82") + frame(PING, 0, 0, b"12345678"),
                                 gn.PROTOCOL_ERROR, "interrupted"),
    "CONTINUATION on another stream": (lambda c: frame(HEADERS, 0, 1, b"\x82") + frame(CONTINUATION, 4, 3, b"\x84"),
                                       gn.PROTOCOL_ERROR, "CONTINUATION without a header block"),
    "CONTINUATION alone": (lambda c: frame(CONTINUATION, END_HEADERS, 1, b"\x82"),
                           gn.PROTOCOL_ERROR, "CONTINUATION without a header block"),
    "HPACK index beyond the table": (lambda c: frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff\x0f"),
                                     gn.COMPRESSION_ERROR, "do not decode"),
    "HPACK table size over the bound": (lambda c: frame(HEADERS, END_HEADERS, 1, b"\x3f\xe1\x7f"),  # 16384
                                        gn.COMPRESSION_ERROR, "do not decode"),
    "HEADERS on an even stream": (lambda c: c.request(2), gn.PROTOCOL_ERROR, "even stream"),
    "HEADERS on stream 0": (lambda c: c.request(0), gn.PROTOCOL_ERROR, "stream 0"),
    "PUSH_PROMISE from the client": (lambda c: frame(PUSH_PROMISE, END_HEADERS, 1, u32(2) + b"\x82"),
                                     gn.PROTOCOL_ERROR, "cannot push"),
    "PING of 7 bytes": (lambda c: frame(PING, 0, 0, b"1234567"), gn.FRAME_SIZE_ERROR, "PING"),
    "PING on a stream": (lambda c: frame(PING, 0, 1, b"12345678"), gn.PROTOCOL_ERROR, "PING"),
    "SETTINGS INITIAL_WINDOW_SIZE 2^31": (lambda c: settings((gn.S_INITIAL_WINDOW_SIZE, 2**31)),
                                          gn.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE"),
    "SETTINGS MAX_FRAME_SIZE 100": (lambda c: settings((gn.S_MAX_FRAME_SIZE, 100)),
                                    gn.PROTOCOL_ERROR, "MAX_FRAME_SIZE"),
    "SETTINGS MAX_FRAME_SIZE 2^24": (lambda c: settings((gn.S_MAX_FRAME_SIZE, 2**24)),
                                     gn.PROTOCOL_ERROR, "MAX_FRAME_SIZE"),
    "SETTINGS ENABLE_PUSH 2": (lambda c: settings((gn.S_ENABLE_PUSH, 2)), gn.PROTOCOL_ERROR, "ENABLE_PUSH"),
    "SETTINGS of 5 bytes": (lambda c: frame(SETTINGS, 0, 0, b"\x00\x04\x00\x00\x00"),
                            gn.FRAME_SIZE_ERROR, "multiple of 6"),
    "SETTINGS on a stream": (lambda c: frame(SETTINGS, 0, 1), gn.PROTOCOL_ERROR, "SETTINGS on a stream"),
    "SETTINGS ACK with a payload": (lambda c: frame(SETTINGS, ACK, 0, b"\0" * 6), gn.FRAME_SIZE_ERROR, "ACK"),
    "DATA on stream 0": (lambda c: frame(DATA, 0, 0, b"x"), gn.PROTOCOL_ERROR, "stream 0"),
    "DATA on an idle stream": (lambda c: frame(DATA, 0, 5, b"x"), gn.PROTOCOL_ERROR, "idle stream"),
    "DATA padded past its end": (lambda c: c.request(1) + frame(DATA, gn.PADDED, 1, b"\x05abc"),
                                 gn.PROTOCOL_ERROR, "padding"),
    "RST_STREAM of an idle stream": (lambda c: frame(RST_STREAM, 0, 7, u32(gn.CANCEL)),
                                     gn.PROTOCOL_ERROR, "idle stream"),
    "RST_STREAM on stream 0": (lambda c: frame(RST_STREAM, 0, 0, u32(gn.CANCEL)), gn.PROTOCOL_ERROR, "RST_STREAM"),
    "WINDOW_UPDATE of 0 on the connection": (lambda c: frame(WINDOW_UPDATE, 0, 0, u32(0)),
                                             gn.PROTOCOL_ERROR, "WINDOW_UPDATE of 0"),
    "WINDOW_UPDATE past 2^31-1 on the connection": (lambda c: frame(WINDOW_UPDATE, 0, 0, u32(2**31 - 1)),
                                                    gn.FLOW_CONTROL_ERROR, "over 2^31-1"),
    "WINDOW_UPDATE of 3 bytes": (lambda c: frame(WINDOW_UPDATE, 0, 0, b"\0\0\1"), gn.FRAME_SIZE_ERROR, "4 bytes"),
    "WINDOW_UPDATE of an idle stream": (lambda c: frame(WINDOW_UPDATE, 0, 9, u32(1)),
                                        gn.PROTOCOL_ERROR, "idle stream"),
    "PRIORITY of 4 bytes": (lambda c: frame(PRIORITY, 0, 1, b"\0\0\0\0"), gn.FRAME_SIZE_ERROR, "5 bytes"),
}


@pytest.mark.parametrize("case", list(CONNECTION_ERRORS))
async def test_connection_errors_get_goaway_and_close(opened: Any, case: str) -> None:
    build, code, text = CONNECTION_ERRORS[case]
    c = await opened()
    c.send(build(c))
    last, got, message = await c.connection_error()
    assert (got, last) == (code, 1 if case == "DATA padded past its end" else 0), message
    assert text in message


async def test_goaway_names_the_last_stream_taken(opened: Any) -> None:
    c = await opened()
    c.send(c.call(1, b"a"), c.call(3, b"b"))
    await c.answer(3)
    c.send(frame(PING, 0, 0, b"1234567"))
    assert (await c.connection_error())[:2] == (3, gn.FRAME_SIZE_ERROR)


@pytest.mark.parametrize(("data", "code"), [
    (frame(RST_STREAM, 0, 1, b"\0\0\0\x08\0"), gn.FRAME_SIZE_ERROR),  # 6.4: length other than 4
    (frame(PRIORITY, 0, 0, b"\0\0\0\1\x10"), gn.PROTOCOL_ERROR),  # 6.3: PRIORITY on stream 0
    (frame(GOAWAY, 0, 1, u32(0) + u32(0)), gn.PROTOCOL_ERROR),  # 6.8: GOAWAY on a stream
], ids=["RST_STREAM of 5 bytes", "PRIORITY on stream 0", "GOAWAY on a stream"])
async def test_rfc_frame_checks_left_out(opened: Any, data: bytes, code: int) -> None:
    c = await opened()
    c.send(c.call(1, b"x"))
    await c.answer(1)
    c.send(data, frame(PING, 0, 0, b"after..."))
    await c.until(lambda: c.eof or b"after..." in c.pings)
    assert c.goaway is not None and c.goaway[1] == code


async def test_initial_window_change_overflowing_a_stream_window(served: Served, opened: Any) -> None:
    c = await opened()
    c.send(c.call(1, b"", "Slow"))
    await _until(lambda: served.handlers.running == 1)
    c.send(frame(WINDOW_UPDATE, 0, 1, u32(2**31 - 1 - 65_535)))  # the stream's window is now 2^31-1
    c.send(settings((gn.S_INITIAL_WINDOW_SIZE, 65_536)), frame(PING, 0, 0, b"after..."))
    await c.until(lambda: c.eof or b"after..." in c.pings)
    assert c.goaway is not None and c.goaway[1] == gn.FLOW_CONTROL_ERROR


async def test_ping_is_acked_with_its_bytes(opened: Any) -> None:
    c = await opened()
    c.send(frame(PING, 0, 0, b"\x00\xffabcd\x01\x02"))
    await c.until(lambda: bool(c.pings))
    assert c.pings == [b"\x00\xffabcd\x01\x02"]
    c.send(frame(PING, ACK, 0, b"ignored!"), c.call(1, b"still here"))  # an ACK from us is not answered
    assert (await c.answer(1)).messages() == [b"still here"]
    assert c.pings == [b"\x00\xffabcd\x01\x02"] and c.goaway is None


async def test_unknown_frame_types_and_priority_are_ignored(opened: Any) -> None:
    c = await opened()
    c.send(frame(0x42, 0xFF, 1, b"whatever"), frame(PRIORITY, 0, 1, b"\0\0\0\0\x10"), c.call(1, b"ok"))
    assert (await c.answer(1)).messages() == [b"ok"]


# -- 10. inbound flow control and the message bound ------------------------------------------------
async def test_data_piling_up_past_the_stream_window_resets_the_stream(served: Served, opened: Any) -> None:
    c = await opened()
    chunk = MAX_FRAME
    first = msg(b"a" * (MAX_MESSAGE - 5))  # 1 MiB whole (declared within the bound)
    second = msg(b"b" * (MAX_MESSAGE - 5))
    stream = first + second
    frames = [frame(DATA, 0, 1, stream[i:i + chunk]) for i in range(0, 8 * chunk, chunk)]
    # while the first message is incomplete the server gives the window back frame by frame (3 frames);
    # from the frame that completes it nothing is given back: 2^20 + 3 * 2^18 bytes are allowed, 2^21 sent
    c.send(c.request(1, "Len"), *frames)
    await c.drain()
    answer = await c.answer(1)
    assert answer.rst == gn.FLOW_CONTROL_ERROR and answer.trailers is None
    assert [n for sid, n in c.window_updates if sid == 1] == [chunk] * 3
    await _until(lambda: served.server.active == 0)
    c.send(c.call(3, b"on"))  # a stream error: the connection goes on
    assert (await c.answer(3)).messages() == [b"on"]


async def test_a_message_of_exactly_the_bound_is_taken_past_the_stream_window(opened: Any) -> None:
    c = await opened()
    stream = msg(b"z" * MAX_MESSAGE)  # 2^20 + 5 bytes, more than STREAM_WINDOW, sent without waiting
    assert len(stream) > STREAM_WINDOW
    frames = [frame(DATA, 0, 1, stream[i:i + MAX_FRAME]) for i in range(0, len(stream), MAX_FRAME)]
    c.send(c.request(1, "Len"), *frames, frame(DATA, END_STREAM, 1))
    await c.drain()
    answer = await c.answer(1)
    assert answer.status == 0 and answer.messages() == [str(MAX_MESSAGE).encode()]


async def test_a_declared_length_over_the_bound_is_resource_exhausted(opened: Any) -> None:
    c = await opened()
    c.send(c.request(1), frame(DATA, 0, 1, msg(b"abc", size=MAX_MESSAGE + 1)))
    answer = await c.answer(1)
    assert answer.status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert f"({MAX_MESSAGE + 1} vs. {MAX_MESSAGE})" in answer.message
    await c.until(lambda: c.streams[1].rst is not None)  # the client was still sending: told to stop
    assert c.streams[1].rst == gn.NO_ERROR
    c.send(frame(DATA, END_STREAM, 1, b"late"), c.call(3, b"next"))  # DATA on the answered stream: ignored
    assert (await c.answer(3)).messages() == [b"next"] and c.goaway is None


# -- 11. not gRPC ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("kw", "status", "text"), [
    ({"content_type": b"application/json"}, "415", "application/json"),
    ({"content_type": b"application/grpcx"}, "415", "is not gRPC"),
    ({"http_method": b"GET"}, "405", "POST"),
    ({"http_method": b"GET", "extra": [(b"grpc-timeout", b"soon")]}, "405", "POST"),  # before the timeout's check
])
async def test_requests_that_are_not_grpc_get_an_http_status(opened: Any, kw: dict[str, Any], status: str,
                                                             text: str) -> None:
    c = await opened()
    c.send(c.request(1, end_stream=True, **kw))
    answer = await c.answer(1)
    assert answer.headers is not None and answer.headers[":status"] == status
    assert answer.headers["content-type"] == "text/plain"
    assert text in answer.data.decode() and answer.trailers == {}  # the DATA carried END_STREAM


async def test_grpc_with_a_suffix_is_grpc(opened: Any) -> None:
    c = await opened()
    c.send(c.call(1, b"p", content_type=b"application/grpc+proto"))
    assert (await c.answer(1)).status == 0


async def test_an_unknown_method_is_unimplemented(opened: Any) -> None:
    c = await opened()
    c.send(c.call(1, b"p", "Nope"))
    answer = await c.answer(1)
    assert answer.status == grpc.StatusCode.UNIMPLEMENTED.value[0] and "not found" in answer.message


# -- 12. headers: timeout and metadata -------------------------------------------------------------
@pytest.mark.parametrize(("extra", "code", "text"), [
    ([(b"grpc-timeout", b"soon")], grpc.StatusCode.INVALID_ARGUMENT, "grpc-timeout 'soon'"),
    ([(b"grpc-timeout", b"123456789S")], grpc.StatusCode.INVALID_ARGUMENT, "not a gRPC timeout"),
    ([(b"x-key-bin", b"not base64!")], grpc.StatusCode.INVALID_ARGUMENT, "x-key-bin"),
    ([(b"x-big", b"v" * (MAX_METADATA + 1))], grpc.StatusCode.RESOURCE_EXHAUSTED, f"{MAX_METADATA}"),
    ([(f"x-m{i}".encode(), b"v" * 100) for i in range(130)], grpc.StatusCode.RESOURCE_EXHAUSTED, "metadata"),
])
async def test_bad_headers_get_a_grpc_status(opened: Any, extra: list[tuple[bytes, bytes]],
                                             code: grpc.StatusCode, text: str) -> None:
    c = await opened()
    c.send(c.call(1, b"x", extra=extra))
    answer = await c.answer(1)
    assert answer.status == code.value[0] and text in answer.message
    assert answer.headers is not None and answer.headers[":status"] == "200"  # a trailers-only answer
    c.send(c.call(3, b"fine"))
    assert (await c.answer(3)).status == 0


async def test_good_bin_metadata_and_timeout_pass(opened: Any) -> None:
    c = await opened()
    c.send(c.call(1, b"x", extra=[(b"x-key-bin", b"AAEC"), (b"x-pad-bin", b"AA=="), (b"grpc-timeout", b"5S")]))
    assert (await c.answer(1)).status == 0


# -- 13. unary calls without exactly one message ---------------------------------------------------
@pytest.mark.parametrize(("data", "text"), [
    (msg(b"one") + msg(b"two"), "got 2"),
    (msg(b"whole")[:-2], "got 0 and a part of one"),
    (msg(b"one") + msg(b"two")[:3], "got 1 and a part of one"),
    (b"", "got 0"),
])
async def test_unary_calls_need_exactly_one_message(opened: Any, data: bytes, text: str) -> None:
    c = await opened()
    c.send(c.request(1), frame(DATA, END_STREAM, 1, data))
    answer = await c.answer(1)
    assert answer.status == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "exactly one request message" in answer.message and text in answer.message


async def test_a_message_flag_other_than_0_or_1_is_internal(opened: Any) -> None:
    c = await opened()
    c.send(c.request(1), frame(DATA, END_STREAM, 1, msg(b"x", flag=2)))
    answer = await c.answer(1)
    assert answer.status == grpc.StatusCode.INTERNAL.value[0] and "flag is 2" in answer.message


# -- 14. compression -------------------------------------------------------------------------------
async def test_an_unknown_encoding_is_unimplemented(opened: Any) -> None:
    c = await opened()
    c.send(c.request(1, extra=[(b"grpc-encoding", b"snappy")]), frame(DATA, END_STREAM, 1, msg(b"xx", flag=1)))
    answer = await c.answer(1)
    assert answer.status == grpc.StatusCode.UNIMPLEMENTED.value[0]
    assert "snappy" in answer.message and "gzip" in answer.message


async def test_gzip_and_deflate_are_inflated(opened: Any) -> None:
    c = await opened()
    body = b"abc" * 1000
    c.send(c.request(1, extra=[(b"grpc-encoding", b"gzip")]), frame(DATA, END_STREAM, 1, msg(gzip.compress(body), 1)))
    c.send(c.request(3, extra=[(b"grpc-encoding", b"deflate")]),
           frame(DATA, END_STREAM, 3, msg(zlib.compress(body), 1)))
    assert (await c.answer(1)).messages() == [body]
    assert (await c.answer(3)).messages() == [body]


async def test_a_gzip_bomb_is_resource_exhausted_quickly(opened: Any) -> None:
    zeros, packer = bytes(1 << 20), zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = b"".join(packer.compress(zeros) for _ in range(50)) + packer.flush()  # 50 MiB of zeros
    assert len(bomb) < MAX_MESSAGE // 10
    c = await opened()
    started = time.monotonic()
    c.send(c.request(1, extra=[(b"grpc-encoding", b"gzip")]), frame(DATA, END_STREAM, 1, msg(bomb, 1)))
    answer = await c.answer(1, timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert answer.status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert f"more than {MAX_MESSAGE} bytes inflated" in answer.message


async def test_garbage_in_a_compressed_message_is_internal(opened: Any) -> None:
    c = await opened()
    c.send(c.request(1, extra=[(b"grpc-encoding", b"gzip")]), frame(DATA, END_STREAM, 1, msg(b"not gzip", 1)))
    answer = await c.answer(1)
    assert answer.status == grpc.StatusCode.INTERNAL.value[0] and "does not inflate" in answer.message


async def test_a_truncated_gzip_message_is_refused(opened: Any) -> None:
    c = await opened()
    packed = gzip.compress(b"hello world" * 10)
    c.send(c.request(1, extra=[(b"grpc-encoding", b"gzip")]),
           frame(DATA, END_STREAM, 1, msg(packed[:len(packed) // 2], 1)))
    answer = await c.answer(1)
    assert answer.status == grpc.StatusCode.INTERNAL.value[0], answer.messages()


# -- 15. rapid reset and the concurrency bound -----------------------------------------------------
async def test_rapid_reset_and_the_concurrency_bound(served: Served, opened: Any) -> None:
    h, server = served.handlers, served.server
    c = await opened()
    # 500 streams opened and reset at once: each reset call's handler is cancelled (most never start)
    burst = [c.call(sid, b"", "Slow") + frame(RST_STREAM, 0, sid, u32(gn.CANCEL)) for sid in range(1, 1001, 2)]
    c.send(*burst)
    await c.ping()
    await _until(lambda: server.active == 0 and h.running == 0)
    assert h.started == h.cancelled
    assert not c.streams, "a reset stream was answered"
    # 8 slow calls fill the bound; 20 more are answered RESOURCE_EXHAUSTED at once, not left waiting
    busy = list(range(1001, 1017, 2))
    c.send(*(c.call(sid, b"", "Slow") for sid in busy))
    await _until(lambda: h.running == 8 and server.active == 8)
    over = list(range(1017, 1057, 2))
    c.send(*(c.call(sid, b"", "Slow") for sid in over))
    for sid in over:
        answer = await c.answer(sid)
        assert answer.status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and "limit" in answer.message
    assert h.running == 8 and server.active == 8
    cancelled = h.cancelled
    c.send(*(frame(RST_STREAM, 0, sid, u32(gn.CANCEL)) for sid in busy + over))
    await _until(lambda: server.active == 0 and h.running == 0)
    assert h.cancelled == cancelled + 8
    c.send(c.call(1057, b"alive"))
    answer = await c.answer(1057)
    assert answer.messages() == [b"alive"] and answer.status == 0 and c.goaway is None
    assert set(c.streams) == {*over, 1057}  # nothing was ever written on a stream the client reset


async def test_a_closed_connection_cancels_its_calls(served: Served, opened: Any) -> None:
    h, server = served.handlers, served.server
    c = await opened()
    c.send(*(c.call(sid, b"", "Slow") for sid in (1, 3, 5)))
    await _until(lambda: h.running == 3)
    await c.close()
    await _until(lambda: server.active == 0 and h.running == 0 and not server.connections)
    assert h.cancelled == 3


# -- 16. deadlines ---------------------------------------------------------------------------------
async def test_a_deadline_cancels_the_handler(served: Served, opened: Any) -> None:
    h = served.handlers
    c = await opened()
    started = time.monotonic()
    c.send(c.call(1, b"", "Slow", extra=[(b"grpc-timeout", b"50m")]))
    answer = await c.answer(1)
    assert 0.04 <= time.monotonic() - started < 1.0
    assert answer.status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0] and "Deadline" in answer.message
    await _until(lambda: h.cancelled == 1 and h.running == 0 and served.server.active == 0)


async def test_a_deadline_that_ends_before_the_request_does(served: Served, opened: Any) -> None:
    c = await opened()
    c.send(c.request(1, extra=[(b"grpc-timeout", b"50m")]))  # the request never ends
    answer = await c.answer(1)
    assert answer.status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    await c.until(lambda: c.streams[1].rst is not None)
    assert c.streams[1].rst == gn.NO_ERROR and served.server.active == 0


# -- 17. outbound flow control ---------------------------------------------------------------------
async def test_the_server_keeps_to_the_clients_stream_window(opened: Any) -> None:
    c = await opened(first=settings((gn.S_INITIAL_WINDOW_SIZE, 10)))
    body = bytes(range(100))
    c.send(c.call(1, body))
    await c.until(lambda: c.settings_acks >= 2 and bool(c.streams.get(1, Answer()).data))
    await c.quiet(0.2)
    answer = c.streams[1]
    assert len(answer.data) == 10 and not answer.ended
    c.send(frame(WINDOW_UPDATE, 0, 1, u32(40)))
    await c.until(lambda: len(answer.data) >= 50)
    await c.quiet(0.1)
    assert len(answer.data) == 50 and not answer.ended
    c.send(frame(WINDOW_UPDATE, 0, 1, u32(1000)))
    await c.answer(1)
    assert answer.messages() == [body] and answer.status == 0
    assert all(n <= 55 for n in answer.data_frames)


async def test_the_server_keeps_to_the_clients_frame_size_and_connection_window(opened: Any) -> None:
    c = await opened(first=settings((gn.S_INITIAL_WINDOW_SIZE, 1 << 20), (gn.S_MAX_FRAME_SIZE, 16_384)))
    body = b"w" * 100_000  # over the connection's default window (65,535) and the frame size
    c.send(c.call(1, body))
    await c.until(lambda: len(c.streams.get(1, Answer()).data) >= 65_535)
    await c.quiet(0.2)
    answer = c.streams[1]
    assert len(answer.data) == 65_535 and not answer.ended
    assert max(answer.data_frames) <= 16_384
    c.send(frame(WINDOW_UPDATE, 0, 0, u32(1 << 20)))
    await c.answer(1)
    assert answer.messages() == [body]


# -- 18. GOAWAY from the client and a graceful stop ------------------------------------------------
async def test_a_client_goaway_lets_the_call_in_flight_finish(served: Served, opened: Any) -> None:
    c = await opened()
    c.send(c.call(1, b"", "Sleepy"))
    await c.ping()
    c.send(frame(GOAWAY, 0, 0, u32(0) + u32(gn.NO_ERROR)))
    answer = await c.answer(1)
    assert answer.messages() == [b"slept"] and answer.status == 0
    await c.until(lambda: c.eof)  # then the server closes the connection
    await _until(lambda: not served.server.connections)


async def test_stop_with_grace_finishes_calls_and_refuses_new_streams(served: Served, opened: Any) -> None:
    server = served.server
    c = await opened()
    c.send(c.call(1, b"", "Sleepy"))
    await c.ping()
    started = time.monotonic()
    stopping = asyncio.ensure_future(server.stop(3.0))
    try:
        await c.until(lambda: c.goaway is not None)
        assert c.goaway is not None and c.goaway[:2] == (1, gn.NO_ERROR)
        c.send(c.call(3, b"too late"))
        refused = await c.answer(3)
        assert refused.rst == gn.REFUSED_STREAM and refused.trailers is None
        answer = await c.answer(1)
        assert answer.messages() == [b"slept"] and answer.status == 0
        await c.until(lambda: c.eof)
        await asyncio.wait_for(asyncio.shield(stopping), WAIT)
        assert time.monotonic() - started < 1.5  # the call ended: no need to wait the grace out
    finally:
        await asyncio.wait_for(stopping, WAIT)
    with pytest.raises(ConnectionRefusedError):  # the listener is closed
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", served.port), WAIT)


async def test_stop_past_grace_cancels_and_answers_unavailable(served: Served, opened: Any) -> None:
    h, server = served.handlers, served.server
    c = await opened()
    c.send(c.call(1, b"", "Slow"))
    await _until(lambda: h.running == 1)
    started = time.monotonic()
    await asyncio.wait_for(server.stop(0.2), WAIT)
    assert 0.2 <= time.monotonic() - started < 1.5
    answer = await c.answer(1)
    assert answer.status == grpc.StatusCode.UNAVAILABLE.value[0] and "stopping" in answer.message
    await c.until(lambda: c.eof)
    assert h.cancelled == 1 and server.active == 0


# -- doubtful: a slow reader of a request stream ---------------------------------------------------
async def test_a_slow_stream_reader_bounds_what_is_queued(served: Served, opened: Any) -> None:
    h, server = served.handlers, served.server
    c = await opened()
    one = msg(b"q" * 1000)
    batch = (STREAM_WINDOW - 1) // len(one)
    c.send(c.request(1, "Collect"), *(frame(DATA, 0, 1, one) for _ in range(batch)))
    await c.ping()

    def queued() -> int:
        return sum(len(m) + 5 for conn in server.connections for call in conn.calls.values() for m in call.messages)

    assert queued() == batch * len(one)
    h.go.set()  # the handler takes a single message; the others stay queued
    await _until(lambda: queued() == (batch - 1) * len(one))
    await c.ping()
    granted = sum(n for sid, n in c.window_updates if sid == 1)
    assert granted == 0, f"{granted} bytes granted while {queued()} bytes wait in the queue"
    assert queued() <= STREAM_WINDOW


# -- doubtful: stop() and a client that does not read ----------------------------------------------
async def test_stop_does_not_wait_on_a_client_that_does_not_read(served: Served, opened: Any) -> None:
    server = served.server
    c = await opened(rcvbuf=4096, first=settings((gn.S_INITIAL_WINDOW_SIZE, 2**31 - 1))
                     + frame(WINDOW_UPDATE, 0, 0, u32(2**31 - 1 - 65_535)))
    body = b"r" * (MAX_MESSAGE - 5)
    for sid in (1, 3, 5, 7, 9, 11):  # 6 MiB of answers, never read
        c.send(c.request(sid), *(frame(DATA, 0, sid, msg(body)[i:i + MAX_FRAME])
                                 for i in range(0, MAX_MESSAGE, MAX_FRAME)), frame(DATA, END_STREAM, sid))
        await c.drain()
    await _until(lambda: server.active == 0 or all(conn.paused for conn in server.connections))
    try:
        await asyncio.wait_for(server.stop(0), 2.0)
    except TimeoutError:
        pytest.fail("stop(0) did not return")
    assert not server.connections, "a connection outlived stop()"


# -- floods and stalls beyond the list above -------------------------------------------------------
async def test_a_flood_of_reset_calls_closes_the_connection(served: Served, opened: Any) -> None:
    h, server = served.handlers, served.server
    c = await opened()
    n = gn.RESET_BURST + 10
    c.send(*(c.call(sid, b"", "Slow") + frame(RST_STREAM, 0, sid, u32(gn.CANCEL)) for sid in range(1, 2 * n, 2)))
    _last, code, message = await c.connection_error()
    assert code == gn.ENHANCE_YOUR_CALM and f"more than {gn.RESET_BURST} calls reset" in message
    await _until(lambda: server.active == 0 and h.running == 0)


async def test_a_unary_request_that_stops_arriving_is_answered(served: Served, opened: Any) -> None:
    served.server.body_timeout_s = 0.3
    c = await opened()
    c.send(c.request(1), frame(DATA, 0, 1, msg(b"abcdef")[:4]))  # part of a message, then nothing
    answer = await c.answer(1)
    assert answer.status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert "stopped arriving for 0.3 s" in answer.message
    await _until(lambda: served.server.active == 0)
    c.send(c.call(3, b"alive"))  # the connection goes on
    assert (await c.answer(3)).messages() == [b"alive"]


async def test_a_compressed_flag_without_an_encoding_is_internal(served: Served, opened: Any) -> None:
    c = await opened()
    c.send(c.request(1), frame(DATA, END_STREAM, 1, msg(b"x", flag=1)))
    answer = await c.answer(1)
    assert answer.status == grpc.StatusCode.INTERNAL.value[0] and "without a grpc-encoding" in answer.message



async def test_a_repeated_header_block_is_read_against_the_table_as_it_is_now(opened: Any) -> None:
    """Blocks that change nothing in the HPACK table are kept decoded; once an entry is added, the
    same bytes mean something else (indices shift) and must be decoded again."""
    c = await opened()
    mirror = hpack.Decoder()  # what any decoder makes of the same blocks, in the same order
    blocks = []
    for sid, method in ((1, "Echo"), (3, "Echo"), (5, "Echo"), (7, "Len")):
        request = c.request(sid, method)
        blocks.append(request[9:])
        c.send(request, frame(DATA, END_STREAM, sid, msg(b"abcd")))
        answer = await c.answer(sid)
        assert answer.messages() == ([b"abcd"] if method == "Echo" else [b"4"])
    for block in blocks:
        mirror.decode(block)
    again = blocks[1]  # all indexed when sent; after Len's entry was added it names other entries
    assert dict(mirror.decode(again)).get(":path") == f"/{SVC}/Len"  # Echo's entry has moved on
    c.send(frame(HEADERS, END_HEADERS, 9, again), frame(DATA, END_STREAM, 9, msg(b"abcd")))
    assert (await c.answer(9)).messages() == [b"4"]  # not the Echo the same bytes meant before


# -- what a review of the server found (each fixed) ------------------------------------------------
async def test_a_client_that_never_opens_its_window_loses_the_call_not_the_slot(served: Served,
                                                                                 opened: Any) -> None:
    served.server.body_timeout_s = 0.3
    c = await opened(first=settings((gn.S_INITIAL_WINDOW_SIZE, 0)))
    c.send(*(c.call(sid, b"stuck") for sid in (1, 3, 5)))
    for sid in (1, 3, 5):
        answer = await c.answer(sid)
        assert answer.rst == gn.CANCEL and not answer.data  # headers went, the message never could
    await _until(lambda: served.server.active == 0)
    c.send(settings((gn.S_INITIAL_WINDOW_SIZE, 65_535)), c.call(7, b"free"))
    assert (await c.answer(7)).messages() == [b"free"]


async def test_a_client_that_stops_reading_is_cut_off_and_its_calls_end(served: Served, opened: Any) -> None:
    server, h = served.server, served.handlers
    server.body_timeout_s = 0.3
    c = await opened(rcvbuf=4096, first=settings((gn.S_INITIAL_WINDOW_SIZE, 2**31 - 1))
                     + frame(WINDOW_UPDATE, 0, 0, u32(2**31 - 1 - 65_535)))
    body = b"r" * (MAX_MESSAGE - 5)
    for sid in (1, 3, 5, 7):  # answers far larger than what the socket buffers hold, never read
        c.send(c.request(sid), *(frame(DATA, 0, sid, msg(body)[i:i + MAX_FRAME])
                                 for i in range(0, MAX_MESSAGE, MAX_FRAME)), frame(DATA, END_STREAM, sid))
        await c.drain()
    await _until(lambda: server.active == 0 and h.running == 0, timeout=3.0)
    await _until(lambda: not server.connections, timeout=gn.CLOSE_WAIT_S + 2.0)


async def test_cancellations_of_a_busy_client_are_not_a_flood(served: Served, opened: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gn, "RESET_BURST", 20)
    h = served.handlers
    c = await opened()
    sid = 1
    for _ in range(30):  # answered calls
        c.send(c.call(sid, b"ok"))
        await c.answer(sid)
        sid += 2
    for _ in range(25):  # and fewer cancelled ones: a client whose deadlines expire
        c.send(c.call(sid, b"", "Slow"), frame(RST_STREAM, 0, sid, u32(gn.CANCEL)))
        sid += 2
    await c.ping()
    assert c.goaway is None
    for _ in range(10):  # resets now outnumber answers: a flood
        c.send(c.call(sid, b"", "Slow"), frame(RST_STREAM, 0, sid, u32(gn.CANCEL)))
        sid += 2
    _last, code, _message = await c.connection_error()
    assert code == gn.ENHANCE_YOUR_CALM
    await _until(lambda: h.running == 0)


async def test_a_table_emptied_by_size_updates_is_not_read_from_the_cache(opened: Any) -> None:
    c = await opened()
    c.send(c.call(1, b"a"))
    await c.answer(1)
    again = c.request(3)  # fully indexed now: kept decoded by the server once answered
    c.send(again, frame(DATA, END_STREAM, 3, msg(b"b")))
    assert (await c.answer(3)).messages() == [b"b"]
    emptied = b"\x20\x3f\xe1\x1f" + again[9:]  # size 0 (evicts everything), then 4096 again
    c.send(frame(HEADERS, END_HEADERS, 5, emptied), frame(DATA, END_STREAM, 5, msg(b"c")))
    _last, code, _message = await c.connection_error()
    assert code == gn.COMPRESSION_ERROR  # the indices name nothing any more


async def test_big_decoded_heads_are_not_kept(served: Served, opened: Any) -> None:
    c = await opened()
    big = [(b"x-big", b"v" * 3000)]
    c.send(c.call(1, b"a", extra=big))  # adds the 3 KB entry to the table
    await c.answer(1)
    for sid in (3, 5, 7):  # a few bytes each, decoding to 3 KB: not kept
        c.send(c.call(sid, b"a", extra=big))
        await c.answer(sid)
    heads = [conn.heads for conn in served.server.connections]
    assert heads and all(head.size <= 4096 for kept in heads for _state, head in kept.values())


async def test_not_grpc_within_a_closed_window_is_answered_by_the_status_alone(opened: Any) -> None:
    c = await opened(first=settings((gn.S_INITIAL_WINDOW_SIZE, 0)))
    c.send(c.request(1, http_method=b"GET", end_stream=True))
    answer = await c.answer(1)
    assert answer.headers is not None and answer.headers[":status"] == "405" and not answer.data


async def test_a_frame_in_many_small_pieces(opened: Any) -> None:
    c = await opened()
    body = bytes(range(256)) * 200  # 50 KiB in one frame (within the client's window), 100 bytes at a time
    data = c.request(1) + frame(DATA, END_STREAM, 1, msg(body))
    for i in range(0, len(data), 100):
        c.send(data[i:i + 100])
        if i % 10_000 == 0:
            await c.drain()
    assert (await c.answer(1)).messages() == [body]


async def test_utf8_metadata_and_a_lowered_table_size(served: Served, opened: Any) -> None:
    seen: list[Any] = []

    async def who(request: bytes, context: Any) -> bytes:
        seen.append(dict(context.invocation_metadata()))
        return b""

    served.server.add_registered_method_handlers(SVC, {"Who": grpc.unary_unary_rpc_method_handler(who)})
    c = await opened(first=settings((gn.S_HEADER_TABLE_SIZE, 0)))
    await c.until(lambda: c.settings_acks >= 1)
    c.send(c.call(1, b"", "Who", extra=[(b"x-name", "naïve".encode()), (b"x-raw", b"\xff")]))
    first = None
    while first is None:
        f = await c.read_frame()
        assert f is not None
        if f.kind == HEADERS and f.sid == 1:
            first = f
    assert first.payload[0] == 0x20  # the size update RFC 7541 4.2 asks for, before anything else
    await c.answer(1)
    assert seen[0]["x-name"] == "naïve" and seen[0]["x-raw"] == "\xff"  # UTF-8, else Latin-1


def test_odd_certificate_names_are_skipped() -> None:
    cert = {"subject": ((("commonName", "alice"),),),
            "subjectAltName": (("DNS", "alice.example"), ("DirName", ((("commonName", "x"),),)))}
    assert gn._auth_context(cert) == {"transport_security_type": [b"ssl"], "x509_common_name": [b"alice"],
                                      "x509_subject_alternative_name": [b"alice.example"]}
