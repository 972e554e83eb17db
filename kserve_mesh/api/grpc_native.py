"""The mesh's own gRPC server: HTTP/2 and gRPC written for the mesh's port (``grpc_server: native``).

Why: in a profile of the gRPC port under load, the mesh's code is under a tenth of a call's CPU; the
rest is grpcio's asyncio machinery (a bare ``grpc.aio`` server answering a fixed message costs about
0.4 ms of CPU per call on the 2-core build machine, this server about 0.1 ms). It serves the same
services through the same handlers (``grpc.RpcMethodHandler`` objects, registered as on a
``grpc.aio.Server``, so ``GuardedServer`` and every ``add_to_server`` work unchanged), and hands each
a context with the parts of ``grpc.aio.ServicerContext`` the mesh's handlers use.

What it does, and its bounds (everything that reaches the port is someone's input):
- HTTP/2 (RFC 9113) as a server: the preface within the handshake timeout, SETTINGS, PING, GOAWAY,
  RST_STREAM, WINDOW_UPDATE; flow control both ways (a reader that does not read stops the
  sender; the connection stops reading while its own writes are not taken); HPACK headers decoded by
  the ``hpack`` package (its table bounded), answers' headers written as literals (no state kept);
  frames up to ``MAX_FRAME`` bytes, header blocks up to ``MAX_HEADER_BLOCK`` bytes (CONTINUATION
  included), streams up to the concurrency bound; every violation answered as the RFC says (a
  stream error resets the stream, a connection error sends GOAWAY and closes).
- gRPC over it: ``/service/method`` paths, the length-prefixed messages (gzip or deflate
  compressed ones inflated within the message bound), ``grpc-timeout`` deadlines (the handler is
  cancelled and the call answered DEADLINE_EXCEEDED), a client's reset cancels its handler,
  ``-bin`` metadata, statuses and percent-encoded messages in trailers (or a trailers-only answer),
  HTTP 415 for a request that is not gRPC. Metadata over ``MAX_METADATA`` bytes is
  RESOURCE_EXHAUSTED, a message over the message bound RESOURCE_EXHAUSTED naming both sizes, a
  unary call without exactly one message INVALID_ARGUMENT; an answer over the bound is refused.
- Time bounds: a unary request that stops arriving, and an answer the client makes no room for,
  end their call after the body timeout (a client that stops reading altogether is cut off); more
  than RESET_BURST calls reset within RESET_WINDOW_S, outnumbering the calls answered, is a
  rapid-reset flood (GOAWAY); a connection closed on an error is cut off after CLOSE_WAIT_S if its
  client does not read what was left.
- TLS through ``ssl`` with ALPN ``h2``; a verified client certificate's names are the call's
  ``auth_context()``, as grpcio gives them.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import logging
import socket
import ssl
import struct
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import quote

import grpc
import hpack
from hpack.table import HeaderTable

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x8, 0x9
ENHANCE_YOUR_CALM = 0xB
# settings
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535
DEFAULT_FRAME = 16_384
MAX_FRAME = 1 << 18  # the largest frame a client may send us (SETTINGS_MAX_FRAME_SIZE)
STREAM_WINDOW = 1 << 20  # what a client may send on a stream before we take it
CONNECTION_WINDOW = 1 << 24
MAX_HEADER_BLOCK = 1 << 16  # a header block's encoded bytes, CONTINUATION frames included
MAX_HEADER_LIST = 1 << 16  # decoded (RFC 7541 sizes): beyond it the connection's HPACK state is lost
MAX_METADATA = 16_384  # decoded metadata of one call; beyond it the call is RESOURCE_EXHAUSTED
CLOSE_WAIT_S = 2.0  # a closed connection whose client does not read is cut off after this
RESET_BURST, RESET_WINDOW_S = 2_000, 10.0  # more running calls reset by the client: GOAWAY
MAX_MESSAGE_TEXT = 2_048  # an error message sent in a trailer, in bytes before encoding

_HEADER = struct.Struct(">I")  # a frame header is 3 bytes of length, type, flags, 4 of stream id
_U32 = struct.Struct(">I")
_SETTING = struct.Struct(">HI")
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_RESERVED = frozenset((b"content-type", b"te", b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding",
                       b"content-length", b"connection", b"host"))


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return _U32.pack(len(payload))[1:] + bytes((kind, flags)) + _U32.pack(stream_id) + payload


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer (RFC 7541 5.1) in a first byte whose high bits are ``first``."""
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes((first | value,))
    out = bytearray((first | top,))
    value -= top
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """A header field as a literal without indexing, new name (no HPACK state on either side)."""
    return _hpack_int(0, 4, 0) + _hpack_int(len(name), 7, 0) + name + _hpack_int(len(value), 7, 0) + value


STATUS_200 = b"\x88"  # :status 200, static table index 8
GRPC_CONTENT = literal(b"content-type", b"application/grpc")
RESPONSE_HEADERS = STATUS_200 + GRPC_CONTENT
OK_TRAILERS = literal(b"grpc-status", b"0")


def status_trailers(code: grpc.StatusCode, message: str) -> bytes:
    block = literal(b"grpc-status", str(code.value[0]).encode())
    if message:
        text = message.encode("utf-8", "replace")[:MAX_MESSAGE_TEXT].decode("utf-8", "ignore").encode()
        block += literal(b"grpc-message", quote(text, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode("ascii"))
    return block


def parse_timeout(value: bytes) -> float | None:
    """``grpc-timeout`` (up to 8 digits and a unit) in seconds; None when it is not one."""
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit():
        return None
    unit = _TIMEOUT_UNITS.get(value[-1:])
    return None if unit is None else int(value[:-1]) * unit


class _Metadatum(tuple):  # type: ignore[type-arg]
    """A (key, value) pair with ``.key`` / ``.value``, as grpcio hands metadata."""

    __slots__ = ()

    @property
    def key(self) -> str:
        return self[0]  # type: ignore[no-any-return]

    @property
    def value(self) -> str | bytes:
        return self[1]  # type: ignore[no-any-return]


class _CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str, metadata: tuple[Any, ...]) -> None:
        self.method = method
        self.invocation_metadata = metadata


class StreamError(Exception):
    """A call answered with ``code`` before its handler runs."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ConnectionError_(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Call:
    """One call (an HTTP/2 stream): its inbound messages, the handler's task, and the part of
    ``grpc.aio.ServicerContext`` handlers use."""

    __slots__ = (
        "closed",
        "code",
        "conn",
        "deadline",
        "details",
        "encoding",
        "expired",
        "handler",
        "headers_sent",
        "held",
        "inbound",
        "last_data",
        "message_event",
        "messages",
        "metadata",
        "method",
        "remote_closed",
        "send_window",
        "sid",
        "task",
        "timer",
        "trailing",
        "window_event",
    )

    def __init__(self, conn: H2Connection, sid: int, send_window: int) -> None:
        self.conn = conn
        self.sid = sid
        self.method = ""
        self.metadata: tuple[Any, ...] = ()
        self.deadline: float | None = None
        self.send_window = send_window
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.last_data = 0.0  # when the request's last DATA came (a unary request still arriving)
        self.code = grpc.StatusCode.OK
        self.details = ""
        self.headers_sent = False
        self.closed = False  # our END_STREAM (or reset) sent
        self.remote_closed = False  # the client's END_STREAM received
        self.expired = False
        self.inbound = bytearray()  # DATA not yet a whole message
        self.messages: deque[bytes] = deque()
        self.message_event: asyncio.Event | None = None
        self.held = 0  # DATA bytes received and not yet given back to the client's stream window
        self.encoding = b""
        self.window_event: asyncio.Event | None = None
        self.trailing: tuple[tuple[str, str | bytes], ...] = ()
        self.handler: grpc.RpcMethodHandler | None = None

    # -- grpc.aio.ServicerContext, as far as the mesh's handlers use it ----------------------------
    def invocation_metadata(self) -> tuple[Any, ...]:
        return self.metadata

    def time_remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self.conn.loop.time())

    def peer(self) -> str:
        return self.conn.peer_name

    def auth_context(self) -> dict[str, list[bytes]]:
        return self.conn.auth_context

    def peer_identities(self) -> list[bytes] | None:
        names = self.conn.auth_context.get("x509_common_name")
        return list(names) if names else None

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> None:
        self.trailing = tuple(metadata)

    async def send_initial_metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> None:
        if not self.headers_sent:
            self.headers_sent = True
            self.conn.write(self.conn.headers_frame(self.sid, END_HEADERS, RESPONSE_HEADERS + _metadata_block(metadata)))

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        if code == grpc.StatusCode.OK:
            raise ValueError("abort needs a status other than OK")
        self.code, self.details = code, details
        if trailing_metadata:
            self.trailing = tuple(trailing_metadata)
        raise grpc.aio.AbortError()

    def cancelled(self) -> bool:
        return self.closed and self.code == grpc.StatusCode.CANCELLED

    def done(self) -> bool:
        return self.closed

    async def write(self, message: Any) -> None:
        """One message of a streaming answer (serialized with the method's serializer)."""
        if self.closed:
            raise grpc.aio.AbortError()
        serializer = self.handler.response_serializer if self.handler is not None else None
        data = message if serializer is None else serializer(message)
        self.conn.server.check_send(data)
        if not self.headers_sent:
            self.headers_sent = True
            self.conn.write(self.conn.headers_frame(self.sid, END_HEADERS, RESPONSE_HEADERS))
        await self.conn.send_data(self, b"\0" + _U32.pack(len(data)) + data)

    # -- inbound -----------------------------------------------------------------------------------
    def take_data(self, data: bytes, limit: int) -> None:
        """DATA of this stream: whole messages queued, the rest kept (messages over ``limit``
        refused)."""
        buf = self.inbound
        buf += data
        while len(buf) >= 5:
            size = _U32.unpack_from(buf, 1)[0]
            if size > limit:
                raise StreamError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  f"Received message larger than max ({size} vs. {limit})")
            if len(buf) < 5 + size:
                break
            flag = buf[0]
            body = bytes(buf[5:5 + size])
            del buf[:5 + size]
            if flag == 1:
                body = self._inflate(body, limit)
            elif flag != 0:
                raise StreamError(grpc.StatusCode.INTERNAL, f"a message's compressed flag is {flag}, not 0 or 1")
            self.messages.append(body)
        if self.message_event is not None:
            self.message_event.set()

    def _inflate(self, body: bytes, limit: int) -> bytes:
        if self.encoding == b"gzip":
            wbits = 16 + zlib.MAX_WBITS
        elif self.encoding == b"deflate":
            wbits = zlib.MAX_WBITS
        elif self.encoding in (b"", b"identity"):
            raise StreamError(grpc.StatusCode.INTERNAL, "a compressed message without a grpc-encoding")
        else:
            raise StreamError(grpc.StatusCode.UNIMPLEMENTED,
                              f"a compressed message in grpc-encoding {self.encoding[:40].decode('latin-1')!r}: "
                              "gzip and deflate are accepted")
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise StreamError(grpc.StatusCode.INTERNAL, f"a compressed message does not inflate: {exc}") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise StreamError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"Received message larger than max (more than {limit} bytes inflated)")
        if not inflater.eof or inflater.unused_data:
            raise StreamError(grpc.StatusCode.INTERNAL, "a compressed message is truncated or followed by other bytes")
        return out

    async def next_message(self) -> bytes | None:
        """The next inbound message; None once the client has finished sending."""
        while not self.messages:
            if self.remote_closed:
                if self.inbound:
                    raise StreamError(grpc.StatusCode.INTERNAL,
                                      f"the request ended inside a message ({len(self.inbound)} bytes of it sent)")
                return None
            if self.message_event is None:
                self.message_event = asyncio.Event()
            self.message_event.clear()
            await self.message_event.wait()
        message = self.messages.popleft()
        if not self.messages:  # only then: queued messages keep their bytes out of the window
            self.conn.give_back(self)
        return message

    async def requests(self, deserializer: Callable[[bytes], Any] | None) -> AsyncIterator[Any]:
        while True:
            message = await self.next_message()
            if message is None:
                return
            yield _deserialize(deserializer, message)


def _deserialize(deserializer: Callable[[bytes], Any] | None, data: bytes) -> Any:
    if deserializer is None:
        return data
    try:
        return deserializer(data)
    except Exception:  # noqa: BLE001 - the client's bytes: its error, named
        raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "the request message could not be parsed") from None


def _metadata_block(metadata: Iterable[tuple[str, Any]]) -> bytes:
    block = b""
    for key, value in metadata:
        k = str(key).lower().encode("ascii", "replace")
        if k.endswith(b"-bin") or isinstance(value, bytes):
            raw = value if isinstance(value, bytes) else str(value).encode()
            v = base64.b64encode(raw).rstrip(b"=")
        else:
            v = str(value).encode("utf-8", "replace")
        block += literal(k, v)
    return block


def _text(value: bytes) -> str:
    """A metadata value as grpcio gives it: UTF-8, else Latin-1."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _metadata(headers: Sequence[tuple[bytes, bytes]]) -> tuple[Any, ...]:
    out = []
    for name, value in headers:
        if name[:1] == b":" or name in _RESERVED or name.startswith(b"grpc-"):
            continue
        key = name.decode("latin-1")
        if key.endswith("-bin"):
            try:
                out.append(_Metadatum((key, base64.b64decode(value + b"=" * (-len(value) % 4), validate=True))))
            except ValueError:
                raise StreamError(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"metadata {key[:100]} is not base64 (a -bin key's value must be)") from None
        else:
            out.append(_Metadatum((key, _text(value))))
    return tuple(out)


class _Head(NamedTuple):
    """What a request's headers say, read once per distinct header block."""

    http_method: bytes
    path: str
    content_type: bytes
    timeout: bytes
    encoding: bytes
    size: int
    metadata: tuple[Any, ...] | StreamError  # the error when a -bin value is not base64


def _head(headers: Sequence[tuple[bytes, bytes]]) -> _Head:
    method = path = content_type = timeout = encoding = b""
    size = 0
    for name, value in headers:
        size += len(name) + len(value) + 32
        if name == b":path":
            path = value
        elif name == b":method":
            method = value
        elif name == b"content-type":
            content_type = value
        elif name == b"grpc-timeout":
            timeout = value
        elif name == b"grpc-encoding":
            encoding = value
    try:
        metadata: tuple[Any, ...] | StreamError = _metadata(headers)
    except StreamError as exc:
        metadata = exc
    return _Head(method, path.decode("utf-8", "replace"), content_type, timeout, encoding, size, metadata)


class _CountingTable(HeaderTable):  # type: ignore[misc]
    """HPACK's dynamic table, counting what is added: a header block decoded while nothing was added
    decodes the same way again as long as nothing is (see ``H2Connection._decode``)."""

    adds = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.adds += 1
        super().add(name, value)

    def _shrink(self) -> None:  # a size update can evict without adding
        before = len(self.dynamic_entries)
        super()._shrink()
        if len(self.dynamic_entries) != before:
            self.adds += 1


class Dispatch:
    """The methods a server serves: registered ones by path, then generic handlers in order."""

    def __init__(self) -> None:
        self.registered: dict[str, grpc.RpcMethodHandler] = {}
        self.generic: list[grpc.GenericRpcHandler] = []

    def find(self, method: str, metadata: tuple[Any, ...]) -> grpc.RpcMethodHandler | None:
        handler = self.registered.get(method)
        if handler is not None:
            return handler
        details = _CallDetails(method, metadata)
        for generic in self.generic:
            handler = generic.service(details)
            if handler is not None:
                return handler
        return None


class H2Connection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: NativeServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.table_update = b""  # an HPACK table size update owed to the client (see headers_frame)
        self.peer_table = 4096
        self.pending: list[bytes] = []  # pieces of a frame still arriving
        self.pending_len = 0
        self.need = 0  # bytes the pending frame needs in all
        self.preface = False
        self.decoder = hpack.Decoder(max_header_list_size=MAX_HEADER_LIST)
        self.decoder.max_allowed_table_size = 4096
        self.table = self.decoder.header_table = _CountingTable()
        self.heads: dict[bytes, tuple[tuple[int, int], _Head]] = {}  # header block -> (table state, its head)
        self.calls: dict[int, Call] = {}
        self.last_sid = 0
        self.peer_window = DEFAULT_WINDOW  # the client's initial stream window
        self.peer_frame = DEFAULT_FRAME
        self.send_window = DEFAULT_WINDOW  # the connection's, towards the client
        self.recv_window = DEFAULT_WINDOW  # the connection's, from the client (we raise it at once)
        self.header_sid = 0  # a header block continues (CONTINUATION) on this stream
        self.header_flags = 0
        self.header_block = bytearray()
        self.paused = False
        self.drained: asyncio.Event | None = None
        self.going_away = False
        self.closing = False
        self.peer_name = ""
        self.auth_context: dict[str, list[bytes]] = {}
        self.handshake_timer: asyncio.TimerHandle | None = None
        self.out: list[bytes] = []  # frames written together at the end of data_received
        self.window_start, self.window_resets, self.window_answered = 0.0, 0, 0  # see _count_reset
        self.sweep: asyncio.TimerHandle | None = None  # looks for unary requests that stopped arriving

    # -- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] # a stream transport (uvloop's is not a subclass)
        self.server.connections.add(self)
        self.peer_name = _peer_name(transport.get_extra_info("peername"))
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.auth_context = _auth_context(ssl_object.getpeercert())
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # a vanished peer is found out
        settings = b"".join(_SETTING.pack(k, v) for k, v in (
            (S_ENABLE_PUSH, 0), (S_MAX_CONCURRENT_STREAMS, self.server.stream_limit),
            (S_INITIAL_WINDOW_SIZE, STREAM_WINDOW), (S_MAX_FRAME_SIZE, MAX_FRAME),
            (S_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST)))
        transport.write(frame(SETTINGS, 0, 0, settings)
                        + frame(WINDOW_UPDATE, 0, 0, _U32.pack(CONNECTION_WINDOW - DEFAULT_WINDOW)))
        self.recv_window = CONNECTION_WINDOW
        self.handshake_timer = self.loop.call_later(self.server.handshake_timeout_s, self._handshake_late)

    def _handshake_late(self) -> None:
        if not self.preface:
            self.abort_connection(PROTOCOL_ERROR, "no HTTP/2 preface in time")

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
        if self.sweep is not None:
            self.sweep.cancel()
        self.closing = True
        for call in list(self.calls.values()):
            self._cancel(call, grpc.StatusCode.CANCELLED)
        self.calls.clear()
        if self.drained is not None:
            self.drained.set()

    def pause_writing(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()  # no new work while the client does not take its answers

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()
        if self.drained is not None:
            self.drained.set()

    def data_received(self, data: bytes) -> None:
        if self.pending:  # a frame still arriving: its pieces are joined once it is whole
            self.pending.append(data)
            self.pending_len += len(data)
            if self.pending_len < self.need:
                return
            buf = b"".join(self.pending)
            self.pending, self.pending_len = [], 0
        else:
            buf = data
        try:
            if not self.preface:
                if len(buf) < 24:
                    if not PREFACE.startswith(buf):
                        raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    self._keep(buf, 24)
                    return
                if buf[:24] != PREFACE:
                    raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self.preface = True
                if self.handshake_timer is not None:
                    self.handshake_timer.cancel()
                    self.handshake_timer = None
                buf = buf[24:]
            pos, end = 0, len(buf)
            need = 9
            while end - pos >= 9 and not self.closing:
                length = int.from_bytes(buf[pos:pos + 3], "big")
                if length > MAX_FRAME:
                    raise ConnectionError_(FRAME_SIZE_ERROR, f"a frame of {length} bytes (at most {MAX_FRAME})")
                if end - pos - 9 < length:
                    need = 9 + length
                    break
                kind, flags = buf[pos + 3], buf[pos + 4]
                sid = _U32.unpack_from(buf, pos + 5)[0] & 0x7FFFFFFF
                payload = buf[pos + 9:pos + 9 + length]
                pos += 9 + length
                self._frame(kind, flags, sid, payload)
            if pos < end and not self.closing:
                self._keep(buf[pos:], need)
        except ConnectionError_ as exc:
            self.abort_connection(exc.code, str(exc))
        finally:
            self.flush()

    def headers_frame(self, sid: int, flags: int, block: bytes) -> bytes:
        """A HEADERS frame of ours; the first after the client lowered its HPACK table size starts
        with the size update RFC 7541 4.2 asks for (our blocks never index, so it changes nothing
        else)."""
        if self.table_update:
            block, self.table_update = self.table_update + block, b""
        return frame(HEADERS, flags, sid, block)

    def _keep(self, rest: bytes, need: int) -> None:
        """The start of a frame (or of the preface): kept until ``need`` bytes have come."""
        self.pending, self.pending_len, self.need = [rest], len(rest), need

    # -- writing -----------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.out.append(data)
            if len(self.out) == 1:
                self.loop.call_soon(self.flush)

    def flush(self) -> None:
        if self.out:
            out, self.out = self.out, []
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    async def send_data(self, call: Call, data: bytes, end: bytes | None = None) -> None:
        """``data`` on ``call``'s stream within both flow-control windows and the client's frame
        size; then ``end`` (a trailers block) if given."""
        view = memoryview(data)
        while view:
            n = min(len(view), self.send_window, call.send_window, self.peer_frame)
            if n <= 0 or self.paused:
                await self._wait_window(call)
                if call.closed or self.closing:
                    raise asyncio.CancelledError()
                continue
            self.send_window -= n
            call.send_window -= n
            self.write(frame(DATA, 0, call.sid, bytes(view[:n])))
            self.flush()  # the transport says at once when it holds too much (pause_writing)
            view = view[n:]
        if end is not None:
            self.finish(call, end)

    async def _wait_window(self, call: Call) -> None:
        """Until the client takes more (its windows open, or our writes drain); a client that takes
        nothing for the body timeout loses the call (its slot is not held forever)."""
        if self.paused:
            if self.drained is None:
                self.drained = asyncio.Event()
            event = self.drained
        else:
            if call.window_event is None:
                call.window_event = asyncio.Event()
            event = call.window_event
        event.clear()
        self.flush()
        try:
            await asyncio.wait_for(event.wait(), self.server.body_timeout_s)
        except TimeoutError:
            log.debug("gRPC call %s on %s: the client took nothing for %g s", call.method[:200], self.peer_name,
                      self.server.body_timeout_s)
            if self.paused:
                self.abort_connection(ENHANCE_YOUR_CALM, "the client stopped reading")
            else:
                self._reset(call, CANCEL)
            raise asyncio.CancelledError() from None

    def finish(self, call: Call, trailers: bytes) -> None:
        """Ends ``call``'s stream with ``trailers`` (sending the response headers first if it has
        none yet: a trailers-only answer)."""
        if call.closed:
            return
        call.closed = True
        self._roll_window()
        self.window_answered += 1
        if call.trailing:
            trailers += _metadata_block(call.trailing)
        if call.headers_sent:
            self.write(self.headers_frame(call.sid, END_HEADERS | END_STREAM, trailers))
        else:
            call.headers_sent = True
            self.write(self.headers_frame(call.sid, END_HEADERS | END_STREAM, RESPONSE_HEADERS + trailers))
        self._forget(call, reset=not call.remote_closed)

    def _forget(self, call: Call, *, reset: bool) -> None:
        if self.calls.pop(call.sid, None) is not None:
            self.server.active -= 1
        if call.timer is not None:
            call.timer.cancel()
        if reset:  # the client is still sending: it need not (RFC 9113 8.1)
            self.write(frame(RST_STREAM, 0, call.sid, _U32.pack(NO_ERROR)))
        if self.going_away and not self.calls:
            self.flush()
            if self.transport is not None:
                self.transport.close()

    def give_back(self, call: Call) -> None:
        """A message was taken: the stream's window opens again."""
        if call.held and not call.remote_closed and not call.closed:
            self.write(frame(WINDOW_UPDATE, 0, call.sid, _U32.pack(call.held)))
        call.held = 0

    def abort_connection(self, code: int, message: str) -> None:
        if self.closing:
            return
        log.debug("gRPC connection from %s closed: %s", self.peer_name, message)
        self.write(frame(GOAWAY, 0, 0, _U32.pack(self.last_sid) + _U32.pack(code) + message.encode()[:200]))
        self.flush()
        self.closing = True
        for call in list(self.calls.values()):  # at once: the close waits for the client to read
            self._cancel(call, grpc.StatusCode.CANCELLED)
        if self.transport is not None:
            self.transport.close()
            self.loop.call_later(CLOSE_WAIT_S, self._cut)

    def _cut(self) -> None:
        """A connection that was closed but whose client never took what was left to send."""
        if self.transport is not None and self in self.server.connections:
            self.transport.abort()

    def go_away(self) -> None:
        """No new calls; the connection closes once its calls are answered (server stopping)."""
        if self.going_away or self.closing:
            return
        self.going_away = True
        self.write(frame(GOAWAY, 0, 0, _U32.pack(self.last_sid) + _U32.pack(NO_ERROR)))
        self.flush()
        if not self.calls and self.transport is not None:
            self.transport.close()

    # -- frames ------------------------------------------------------------------------------------
    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self.header_sid and kind != CONTINUATION:
            raise ConnectionError_(PROTOCOL_ERROR, "a header block was interrupted")
        if kind == DATA:
            self._data(flags, sid, payload)
        elif kind == HEADERS:
            self._headers(flags, sid, payload)
        elif kind == CONTINUATION:
            if not self.header_sid or sid != self.header_sid:
                raise ConnectionError_(PROTOCOL_ERROR, "CONTINUATION without a header block")
            self._header_fragment(payload, flags)
        elif kind == SETTINGS:
            self._settings(flags, sid, payload)
        elif kind == PING:
            if sid or len(payload) != 8:
                raise ConnectionError_(FRAME_SIZE_ERROR if len(payload) != 8 else PROTOCOL_ERROR, "a bad PING")
            if not flags & ACK:
                self.write(frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            self._window_update(sid, payload)
        elif kind == RST_STREAM:
            if len(payload) != 4:
                raise ConnectionError_(FRAME_SIZE_ERROR, "a RST_STREAM is 4 bytes")
            if not sid:
                raise ConnectionError_(PROTOCOL_ERROR, "RST_STREAM on stream 0")
            if sid > self.last_sid:
                raise ConnectionError_(PROTOCOL_ERROR, "RST_STREAM of an idle stream")
            call = self.calls.get(sid)
            if call is not None:
                call.remote_closed = True
                self._cancel(call, grpc.StatusCode.CANCELLED)
                self._count_reset()
        elif kind == PRIORITY:
            if not sid:
                raise ConnectionError_(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise ConnectionError_(FRAME_SIZE_ERROR, "a PRIORITY frame is 5 bytes")
        elif kind == GOAWAY:
            if sid:
                raise ConnectionError_(PROTOCOL_ERROR, "GOAWAY on a stream")
            self.going_away = True
            if not self.calls and self.transport is not None:
                self.transport.close()
        elif kind == PUSH_PROMISE:
            raise ConnectionError_(PROTOCOL_ERROR, "a client cannot push")
        # other frame types are ignored (RFC 9113 5.5)

    def _count_reset(self) -> None:
        """A flood of calls opened and reset at once (CVE-2023-44487) closes the connection: more
        than RESET_BURST resets within RESET_WINDOW_S, outnumbering the calls answered meanwhile (a
        busy client whose deadlines expire is not a flood)."""
        self._roll_window()
        self.window_resets += 1
        if self.window_resets > RESET_BURST and self.window_resets > self.window_answered:
            raise ConnectionError_(ENHANCE_YOUR_CALM, f"more than {RESET_BURST} calls reset in {RESET_WINDOW_S:g} s")

    def _roll_window(self) -> None:
        now = self.loop.time()
        if now - self.window_start > RESET_WINDOW_S:
            self.window_start, self.window_resets, self.window_answered = now, 0, 0

    def _sweep_requests(self) -> None:
        """Unary requests whose DATA stopped arriving for the body timeout are answered and
        dropped: a client cannot hold the server's call slots by sending slowly."""
        self.sweep = None
        limit = self.loop.time() - self.server.body_timeout_s
        waiting = False
        for call in list(self.calls.values()):
            if call.remote_closed or call.task is not None:
                continue
            if call.last_data < limit:
                self._refuse(call, StreamError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"the request stopped arriving for {self.server.body_timeout_s:g} s"))
            else:
                waiting = True
        self.flush()
        if waiting:
            self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        if self.sweep is None and not self.closing:
            self.sweep = self.loop.call_later(self.server.body_timeout_s / 2, self._sweep_requests)

    def _settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:
            raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ConnectionError_(FRAME_SIZE_ERROR, "a SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionError_(FRAME_SIZE_ERROR, "a SETTINGS payload is a multiple of 6 bytes")
        for off in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, off)
            if key == S_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ConnectionError_(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
                delta, self.peer_window = value - self.peer_window, value
                for call in self.calls.values():
                    call.send_window += delta
                    if call.send_window > MAX_WINDOW:
                        raise ConnectionError_(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream's window")
                    if call.window_event is not None and call.send_window > 0:
                        call.window_event.set()
            elif key == S_MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value <= 2**24 - 1:
                    raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self.peer_frame = value
            elif key == S_HEADER_TABLE_SIZE and value < self.peer_table:
                self.peer_table = value
                self.table_update = _hpack_int(value, 5, 0x20)
            elif key == S_ENABLE_PUSH and value > 1:
                raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH is 0 or 1")
        self.write(frame(SETTINGS, ACK, 0))

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "a WINDOW_UPDATE is 4 bytes")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if sid == 0:
            if increment == 0:
                raise ConnectionError_(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise ConnectionError_(FLOW_CONTROL_ERROR, "the connection window over 2^31-1")
            for call in self.calls.values():
                if call.window_event is not None:
                    call.window_event.set()
            return
        call = self.calls.get(sid)
        if call is None:
            if sid > self.last_sid:
                raise ConnectionError_(PROTOCOL_ERROR, "WINDOW_UPDATE of an idle stream")
            return
        if increment == 0 or call.send_window + increment > MAX_WINDOW:
            self._reset(call, PROTOCOL_ERROR if increment == 0 else FLOW_CONTROL_ERROR)
            return
        call.send_window += increment
        if call.window_event is not None:
            call.window_event.set()

    def _unpad(self, flags: int, payload: bytes) -> bytes:
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise ConnectionError_(PROTOCOL_ERROR, "padding longer than the frame")
            return payload[1:len(payload) - payload[0]]
        return payload

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ConnectionError_(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self.recv_window -= size
        if self.recv_window < 0:
            raise ConnectionError_(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        if self.recv_window < CONNECTION_WINDOW // 2:  # given back in bulk; each stream's window holds the bound
            self.write(frame(WINDOW_UPDATE, 0, 0, _U32.pack(CONNECTION_WINDOW - self.recv_window)))
            self.recv_window = CONNECTION_WINDOW
        call = self.calls.get(sid)
        if call is None:
            if sid > self.last_sid:
                raise ConnectionError_(PROTOCOL_ERROR, "DATA on an idle stream")
            return  # a stream we have answered (or reset): ignored
        if call.remote_closed:
            self._reset(call, STREAM_CLOSED)
            return
        call.held += size
        call.last_data = self.loop.time()
        if call.held > STREAM_WINDOW:
            self._reset(call, FLOW_CONTROL_ERROR)
            return
        body = self._unpad(flags, payload)
        try:
            call.take_data(body, self.server.max_message)
        except StreamError as exc:
            self._refuse(call, exc)
            return
        if flags & END_STREAM:
            call.remote_closed = True
            if call.message_event is not None:
                call.message_event.set()
            if call.task is None:
                self._start(call)
        elif not call.messages:
            self.give_back(call)  # nothing waits to be taken: the client may go on

    def _headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0 or not sid & 1:
            raise ConnectionError_(PROTOCOL_ERROR, "HEADERS on stream 0 or an even stream")
        payload = self._unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise ConnectionError_(FRAME_SIZE_ERROR, "HEADERS shorter than its priority")
            payload = payload[5:]
        if flags & END_HEADERS:  # the whole block in this frame (as almost always)
            if len(payload) > MAX_HEADER_BLOCK:
                raise ConnectionError_(ENHANCE_YOUR_CALM, f"a header block over {MAX_HEADER_BLOCK} bytes")
            self._header_block(sid, flags, payload)
            return
        self.header_sid, self.header_flags, self.header_block = sid, flags, bytearray()
        self._header_fragment(payload, flags)

    def _header_fragment(self, payload: bytes, flags: int) -> None:
        self.header_block += payload
        if len(self.header_block) > MAX_HEADER_BLOCK:
            raise ConnectionError_(ENHANCE_YOUR_CALM, f"a header block over {MAX_HEADER_BLOCK} bytes")
        if flags & END_HEADERS:
            sid, first_flags, block = self.header_sid, self.header_flags, bytes(self.header_block)
            self.header_sid, self.header_block = 0, bytearray()
            self._header_block(sid, first_flags, block)

    def _decode(self, block: bytes) -> _Head:
        """A header block's head. A client repeats the same block call after call (its headers
        indexed, or literals that are never indexed); decoding one that changed nothing in the
        table, with the table as it was, gives the same headers: such blocks are kept (32 at
        most, short ones only) and not decoded again."""
        state = (self.table.adds, self.table.maxsize)
        kept = self.heads.get(block)
        if kept is not None and kept[0] == state:
            return kept[1]
        try:
            head = _head(self.decoder.decode(block, raw=True))
        except hpack.OversizedHeaderListError:
            raise ConnectionError_(ENHANCE_YOUR_CALM, f"a header list over {MAX_HEADER_LIST} bytes") from None
        except (hpack.HPACKError, IndexError, ValueError) as exc:
            raise ConnectionError_(COMPRESSION_ERROR, f"headers do not decode: {exc}") from None
        if (self.table.adds, self.table.maxsize) == state and len(block) <= 2048 and head.size <= 4096:
            if len(self.heads) >= 32:
                self.heads.clear()
            self.heads[block] = (state, head)
        return head

    def _header_block(self, sid: int, first_flags: int, block: bytes) -> None:
        head = self._decode(block)
        call = self.calls.get(sid)
        if call is not None or sid <= self.last_sid:  # trailers from the client
            if call is not None:
                if not first_flags & END_STREAM:
                    raise ConnectionError_(PROTOCOL_ERROR, "trailers without END_STREAM")
                call.remote_closed = True
                if call.message_event is not None:
                    call.message_event.set()
                if call.task is None:
                    self._start(call)
            return
        self.last_sid = sid
        if self.going_away or len(self.calls) >= self.server.stream_limit:
            self.write(frame(RST_STREAM, 0, sid, _U32.pack(REFUSED_STREAM)))
            return
        call = Call(self, sid, self.peer_window)
        self.calls[sid] = call
        self.server.active += 1
        if self.server.active > self.server.max_concurrent:
            self._refuse(call, StreamError(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!"))
            return
        try:
            if not self._open(call, head):
                return
            call.handler = self.server.dispatch.find(call.method, call.metadata)
            if call.handler is None:
                raise StreamError(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        except StreamError as exc:
            self._refuse(call, exc)
            return
        if first_flags & END_STREAM:
            call.remote_closed = True
            self._start(call)
        elif call.handler.unary_unary is None and call.handler.unary_stream is None:
            self._start(call)  # a streaming request: its handler reads the messages as they come
        else:
            call.last_data = self.loop.time()
            self._schedule_sweep()

    def _open(self, call: Call, head: _Head) -> bool:
        """The call's method, metadata and deadline from its headers; False when it was refused as
        not gRPC (answered with its HTTP status)."""
        if head.http_method != b"POST":
            self._http_refuse(call, b"405", "a gRPC call is a POST")
            return False
        content_type = head.content_type
        if not content_type.startswith(b"application/grpc") or content_type[16:17] not in (b"", b"+", b";"):
            self._http_refuse(call, b"415", f"content-type {content_type[:60].decode('latin-1')!r} is not gRPC")
            return False
        if head.size > MAX_METADATA:
            raise StreamError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"the call's metadata is {head.size} bytes, over the {MAX_METADATA} accepted")
        if head.timeout:
            timeout = parse_timeout(head.timeout)
            if timeout is None:
                raise StreamError(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"grpc-timeout {head.timeout[:20].decode('latin-1')!r} is not a gRPC timeout")
            call.deadline = self.loop.time() + timeout
            call.timer = self.loop.call_at(call.deadline, self._expire, call)
        if isinstance(head.metadata, StreamError):
            raise StreamError(head.metadata.code, head.metadata.message)
        call.method = head.path
        call.metadata = head.metadata
        call.encoding = head.encoding
        return True

    def _http_refuse(self, call: Call, status: bytes, message: str) -> None:
        block = literal(b":status", status) + literal(b"content-type", b"text/plain")
        call.headers_sent = True
        call.closed = True
        body = message.encode()
        if len(body) <= min(self.send_window, call.send_window, self.peer_frame):
            self.send_window -= len(body)
            self.write(self.headers_frame(call.sid, END_HEADERS, block) + frame(DATA, END_STREAM, call.sid, body))
        else:  # no room in the client's windows: the status alone
            self.write(self.headers_frame(call.sid, END_HEADERS | END_STREAM, block))
        self._forget(call, reset=not call.remote_closed)

    def _refuse(self, call: Call, exc: StreamError) -> None:
        if not call.closed:
            self.finish(call, status_trailers(exc.code, exc.message))
        if call.task is not None:
            call.task.cancel()

    def _reset(self, call: Call, code: int) -> None:
        """A stream error (RFC 9113 5.4.2): the stream is reset and its handler cancelled."""
        call.closed = True
        self.write(frame(RST_STREAM, 0, call.sid, _U32.pack(code)))
        self._forget(call, reset=False)
        if call.task is not None:
            call.task.cancel()

    def _cancel(self, call: Call, code: grpc.StatusCode) -> None:
        call.code = code
        if not call.closed:
            call.closed = True
            self._forget(call, reset=False)
        if call.task is not None and not call.task.done():
            call.task.cancel()
        if call.window_event is not None:
            call.window_event.set()
        if call.message_event is not None:
            call.message_event.set()

    def _expire(self, call: Call) -> None:
        call.timer = None
        if call.closed:
            return
        call.expired = True
        self.finish(call, status_trailers(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
        self.flush()
        if call.task is not None:
            call.task.cancel()

    # -- calls -------------------------------------------------------------------------------------
    def _start(self, call: Call) -> None:
        """The call's handler: for a unary request once the request is whole, else at once."""
        if call.task is None and not call.closed:
            call.task = self.loop.create_task(self._run(call))

    async def _run(self, call: Call) -> None:
        handler = call.handler
        assert handler is not None
        try:
            if handler.unary_unary is not None:
                await self._unary(call, handler.unary_unary, self._one_request(call, handler),
                                  handler.response_serializer)
            elif handler.unary_stream is not None:
                await self._streaming(call, handler.unary_stream, self._one_request(call, handler))
            elif handler.stream_unary is not None:
                await self._unary(call, handler.stream_unary, call.requests(handler.request_deserializer),
                                  handler.response_serializer)
            else:
                await self._streaming(call, handler.stream_stream, call.requests(handler.request_deserializer))
        except StreamError as exc:
            self.finish(call, status_trailers(exc.code, exc.message))
        except grpc.aio.AbortError:
            self.finish(call, status_trailers(call.code, call.details))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and not task.cancelling() and not call.closed:
                # raised by something the handler awaited, not a cancellation of this call
                self.finish(call, status_trailers(grpc.StatusCode.CANCELLED, "the call was cancelled"))
                return
            if not call.closed:  # the server is stopping
                self.finish(call, status_trailers(grpc.StatusCode.UNAVAILABLE, "the server is stopping"))
            raise
        except Exception:  # logged here, a short status to the client
            log.exception("gRPC handler of %s failed", call.method[:200])
            self.finish(call, status_trailers(grpc.StatusCode.UNKNOWN, "Unexpected error in RPC handling"))
        finally:
            self.flush()

    @staticmethod
    def _one_request(call: Call, handler: grpc.RpcMethodHandler) -> Any:
        """A unary call's request: the client has finished sending, with exactly one message."""
        if len(call.messages) != 1 or call.inbound:
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"a unary call carries exactly one request message (got {len(call.messages)}"
                              f"{' and a part of one' if call.inbound else ''})")
        return _deserialize(handler.request_deserializer, call.messages.popleft())

    async def _unary(self, call: Call, behavior: Callable[..., Any], request: Any,
                     serializer: Callable[[Any], bytes] | None) -> None:
        answer = behavior(request, call)
        if inspect.isawaitable(answer):
            answer = await answer
        if call.closed:
            return
        if call.code != grpc.StatusCode.OK:  # set_code: the status instead of the message
            self.finish(call, status_trailers(call.code, call.details))
            return
        data = answer if serializer is None else serializer(answer)
        self.server.check_send(data)
        message = b"\0" + _U32.pack(len(data)) + data
        if not call.headers_sent and not self.paused \
                and len(message) <= min(self.send_window, call.send_window, self.peer_frame):
            # the whole answer in one write: headers, the message, trailers
            call.headers_sent = True
            self.send_window -= len(message)
            call.send_window -= len(message)
            self.write(self.headers_frame(call.sid, END_HEADERS, RESPONSE_HEADERS) + frame(DATA, 0, call.sid, message))
            self.finish(call, OK_TRAILERS)
            return
        if not call.headers_sent:
            call.headers_sent = True
            self.write(self.headers_frame(call.sid, END_HEADERS, RESPONSE_HEADERS))
        await self.send_data(call, message, OK_TRAILERS)

    async def _streaming(self, call: Call, behavior: Callable[..., Any], request: Any) -> None:
        answer = behavior(request, call)
        if inspect.isasyncgen(answer):
            async for item in answer:
                await call.write(item)
        elif inspect.isawaitable(answer):
            await answer  # the handler wrote with context.write
        elif answer is not None:
            for item in answer:
                await call.write(item)
        self.finish(call, OK_TRAILERS if call.code == grpc.StatusCode.OK
                    else status_trailers(call.code, call.details))


def _peer_name(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"ipv6:[{host}]:{port}" if ":" in str(host) else f"ipv4:{host}:{port}"
    return f"unix:{address}" if address else "unknown"


def _auth_context(cert: Mapping[str, Any] | None) -> dict[str, list[bytes]]:
    """grpcio's auth context for a verified client certificate (its CN and SANs)."""
    context: dict[str, list[bytes]] = {"transport_security_type": [b"ssl"]}
    if not cert:
        return context
    names = [value.encode() for rdn in cert.get("subject", ()) for key, value in rdn
             if key == "commonName" and isinstance(value, str)]
    sans = [value.encode() for _kind, value in cert.get("subjectAltName", ()) if isinstance(value, str)]
    if names:
        context["x509_common_name"] = names
    if sans:
        context["x509_subject_alternative_name"] = sans
    return context


class NativeServer:
    """Stands in for ``grpc.aio.Server``: services are registered the same way; ``start`` serves
    them on the given listening sockets; ``stop(grace)`` refuses new calls, lets those in flight
    finish for ``grace`` seconds, then cancels them."""

    def __init__(self, *, max_message: int, max_concurrent: int, handshake_timeout_s: float,
                 body_timeout_s: float = 30.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.dispatch = Dispatch()
        self.max_message = max_message
        self.max_concurrent = max_concurrent
        # A client may open more streams than the server serves at once: those beyond the bound are
        # answered RESOURCE_EXHAUSTED (as grpcio's maximum_concurrent_rpcs), not queued in the client.
        self.stream_limit = 2 * max_concurrent + 16
        self.handshake_timeout_s = handshake_timeout_s
        self.body_timeout_s = body_timeout_s
        self.ssl_context = ssl_context
        self.connections: set[H2Connection] = set()
        self.active = 0
        self._servers: list[asyncio.Server] = []

    def check_send(self, data: bytes) -> None:
        if len(data) > self.max_message:
            raise StreamError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"Sent message larger than max ({len(data)} vs. {self.max_message})")

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        for name, handler in handlers.items():
            self.dispatch.registered[f"/{service}/{name}"] = handler

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.dispatch.generic.extend(handlers)

    async def start(self, sockets: Sequence[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        for sock in sockets:  # on a failure, what was started is closed by the caller's stop()
            server = await loop.create_server(lambda: H2Connection(self), sock=sock, ssl=self.ssl_context,
                                              ssl_handshake_timeout=self.handshake_timeout_s
                                              if self.ssl_context is not None else None, backlog=1024)
            self._servers.append(server)

    @property
    def ports(self) -> list[int]:
        return [int(sock.getsockname()[1]) for server in self._servers for sock in server.sockets]

    async def stop(self, grace: float | None) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.go_away()
        deadline = asyncio.get_running_loop().time() + (grace or 0.0)
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        tasks = []
        for conn in list(self.connections):
            for call in list(conn.calls.values()):
                if call.task is not None and not call.task.done():
                    call.task.cancel()
                    tasks.append(call.task)
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        for conn in list(self.connections):
            conn.flush()
            if conn.transport is not None:
                conn.transport.close()
        loop = asyncio.get_running_loop()
        until = loop.time() + 0.5
        while self.connections and loop.time() < until:  # close() waits for the client to read
            await asyncio.sleep(0.02)
        for conn in list(self.connections):  # a client that does not read is cut off
            if conn.transport is not None:
                conn.transport.abort()
            self.connections.discard(conn)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def wait_for_termination(self) -> None:
        for server in self._servers:
            await server.wait_closed()
