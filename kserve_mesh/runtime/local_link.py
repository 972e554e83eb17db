"""The local link: inference between a mesh instance and its built-in runtime child, framed over a
Unix domain socket (issue 15: the hop of ``--runtime process`` must not eat what a second core gains).

gRPC stays the runtime SPI (``mmesh.ModelRuntime``, V2 ``GRPCInferenceService``) for management,
streaming, the relay and every third-party runtime; only ``ModelInfer`` of the built-in runtime's
child takes this link, because most of a grpc.aio server's CPU is spent inside grpcio itself.

One connection multiplexes every request in flight. Each frame is a 13-byte header, then its payload:

    u32 payload length | u8 frame type | u64 request id      (little-endian)

    REQUEST   client -> server  f64 timeout in seconds (0: none), then a serialized ModelInferRequest
    RESPONSE  server -> client  a serialized ModelInferResponse
    REST      client -> server  f64 timeout, i64 binary header length (-1: none), u16 length of the
                                model id, the model id (UTF-8), then a V2 REST request body as it came
    REST_OK   server -> client  u16 length of the headers, the headers ("name: value" lines, UTF-8),
                                then the V2 REST response body
    ERROR     server -> client  u8 gRPC status code, u16 length of the error kind, the kind (the
                                mesh error class name, as ``grpc_errors``' trailing metadata key
                                carries it), then the message (UTF-8)
    CANCEL    client -> server  no payload: the client stopped waiting (deadline, its caller went away)

A REST body travels undecoded (``LinkedRuntimeClient.infer_rest``, for bodies the instance would
decode on its event loop): the child decodes it straight to arrays and renders the answer
(``BuiltinRuntime.infer_rest``), so the instance's process only moves bytes; without it the
instance built a ``ModelInferRequest`` to send and parsed the answer to render it, and its process
was the one short of CPU under load while the child idled.

The server runs each request as its own task, so the runtime's batcher sees concurrent requests
together. Errors are rebuilt on the client with ``grpc_errors.error_of``: the same classes and
messages the gRPC path gives. Everything is bounded: a payload over the instance's
``grpc_max_message_bytes`` is refused before it is sent (``PayloadTooLarge``) and a frame that
announces one closes the connection, as does any malformed frame; requests in flight per connection
are bounded (the client waits for a slot within the request's deadline); every request has a
deadline on both sides; a partly received frame must complete within ``FRAME_STALL_S``; a server
whose client stops reading closes the connection after ``WRITE_TIMEOUT_S``. A lost connection fails
every request in flight with ``Unavailable``; the next request connects again (after the supervisor
restarted the child, ``reconnect`` retires the old connection at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import stat
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from kserve_mesh.core.errors import (
    DeadlineExceeded,
    InternalError,
    InvalidArgument,
    MeshError,
    PayloadTooLarge,
)
from kserve_mesh.protocol import v2
from kserve_mesh.runtime.grpc_client import DEFAULT_MAX_MESSAGE_BYTES, OLD_CHANNEL_GRACE_S, GrpcRuntimeClient
from kserve_mesh.runtime.grpc_errors import code_of, error_of

log = logging.getLogger(__name__)

HEADER = struct.Struct("<IBQ")
REQUEST_HEAD = struct.Struct("<d")
REST_HEAD = struct.Struct("<qH")  # after the request head (the timeout)
ERROR_HEAD = struct.Struct("<BH")
REST_ANSWER_HEAD = struct.Struct("<H")
REQUEST, RESPONSE, ERROR, CANCEL, REST, REST_OK = 1, 2, 3, 4, 5, 6
ANSWER_OF = {REQUEST: RESPONSE, REST: REST_OK}
LINK_SOCKET_NAME = "link.sock"

MAX_IN_FLIGHT = 512  # requests one client keeps in flight on its connection (more wait for a slot)
SERVER_MAX_IN_FLIGHT = 2 * MAX_IN_FLIGHT  # cancelled requests may still be ending on the server
FRAME_OVERHEAD = 64 * 1024  # beyond the message limit: request head, error kinds and messages
MAX_ERROR_MESSAGE = 16 * 1024
CONNECT_TIMEOUT_S = 5.0
FRAME_STALL_S = 30.0  # a frame whose first bytes arrived must be complete within this
WRITE_TIMEOUT_S = 30.0  # a server whose client reads nothing for this long closes the connection
SERVER_DEADLINE_GRACE_S = 1.0  # the server's own deadline is the client's plus this (the client's wins)
METHOD = "ModelInfer"
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class _Expired(Exception):
    """The request's deadline passed on the client."""


class _Lost(Exception):
    """The connection ended with the request in flight."""


# -- framing ---------------------------------------------------------------------------------------
def frame(kind: int, request_id: int, payload: bytes = b"") -> bytes:
    """One frame: header and payload."""
    return HEADER.pack(len(payload), kind, request_id) + payload


def error_payload(code: grpc.StatusCode, kind: str, message: str) -> bytes:
    kind_bytes = kind.encode()
    text = message.encode()[:MAX_ERROR_MESSAGE]
    return ERROR_HEAD.pack(code.value[0], len(kind_bytes)) + kind_bytes + text


def parse_error(payload: bytes) -> tuple[grpc.StatusCode, str, str]:
    """(code, kind, message) of an ERROR payload; ValueError when it is malformed."""
    if len(payload) < ERROR_HEAD.size:
        raise ValueError("short error frame")
    code, kind_len = ERROR_HEAD.unpack_from(payload)
    end = ERROR_HEAD.size + kind_len
    if code not in _CODES or end > len(payload):
        raise ValueError("malformed error frame")
    return _CODES[code], payload[ERROR_HEAD.size:end].decode(errors="replace"), payload[end:].decode(errors="replace")


def rest_payload(model_id: str, body: bytes, header_length: int | None) -> bytes:
    """A REST frame's payload after its request head."""
    name = model_id.encode()
    return REST_HEAD.pack(-1 if header_length is None else header_length, len(name)) + name + body


def parse_rest(payload: bytes) -> tuple[str, bytes, int | None]:
    """(model id, body, binary header length) of a REST frame's payload (request head included);
    ValueError when it is malformed."""
    head = REQUEST_HEAD.size + REST_HEAD.size
    if len(payload) < head:
        raise ValueError("a REST frame without its head")
    header_length, name_len = REST_HEAD.unpack_from(payload, REQUEST_HEAD.size)
    start = head + name_len
    if start > len(payload) or header_length < -1:
        raise ValueError("a malformed REST frame")
    model_id = payload[head:start].decode()  # UnicodeDecodeError is a ValueError
    return model_id, payload[start:], None if header_length < 0 else header_length


def rest_answer(body: bytes, headers: dict[str, str]) -> bytes:
    """A REST_OK payload: the headers as lines, then the body."""
    head = "\r\n".join(f"{name}: {value}" for name, value in headers.items()).encode()
    return REST_ANSWER_HEAD.pack(len(head)) + head + body


def parse_rest_answer(payload: bytes) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a REST_OK payload; ValueError when it is malformed."""
    if len(payload) < REST_ANSWER_HEAD.size:
        raise ValueError("a short REST answer")
    (head_len,) = REST_ANSWER_HEAD.unpack_from(payload)
    start = REST_ANSWER_HEAD.size + head_len
    if start > len(payload):
        raise ValueError("a malformed REST answer")
    headers: dict[str, str] = {}
    if head_len:
        for line in payload[REST_ANSWER_HEAD.size:start].decode().split("\r\n"):
            name, sep, value = line.partition(": ")
            if not sep or not name:
                raise ValueError("a malformed header in a REST answer")
            headers[name] = value
    return payload[start:], headers


class _Framed(asyncio.Protocol):
    """Frames out of a byte stream: complete ones go to ``frame_received``; a malformed one (an
    unknown type, a payload over the limit) or a stalled partial one closes the connection."""

    accepts: frozenset[int] = frozenset()

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buf = bytearray()
        self._stall: asyncio.TimerHandle | None = None
        self._writable: asyncio.Future[None] | None = None  # set while the transport is paused
        self._out: list[bytes] = []  # frames of this loop turn, written together (one send)
        self._stuck: asyncio.TimerHandle | None = None  # armed while the transport is paused
        self._flushing = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._buf:
            self._buf += data
            data = self._buf  # type: ignore[assignment]
        n, pos, size = len(data), 0, HEADER.size
        while n - pos >= size:
            length, kind, request_id = HEADER.unpack_from(data, pos)
            if kind not in self.accepts:
                self.protocol_error(f"unexpected frame type {kind}")
                return
            if length > self.max_payload:
                self.protocol_error(f"a frame of {length} bytes, over the limit of {self.max_payload}")
                return
            end = pos + size + length
            if end > n:
                break
            payload = bytes(data[pos + size:end])
            pos = end
            self.frame_received(kind, request_id, payload)
            if self.closed:
                return
        if pos == n:
            if self._buf:
                self._buf = bytearray()
            if self._stall is not None:
                self._stall.cancel()
                self._stall = None
            return
        if data is self._buf:
            if pos:
                del self._buf[:pos]
        else:
            self._buf = bytearray(data[pos:])
        if pos or self._stall is None:  # a new partial frame: it has FRAME_STALL_S to complete
            if self._stall is not None:
                self._stall.cancel()
            self._stall = asyncio.get_running_loop().call_later(FRAME_STALL_S, self.protocol_error,
                                                               f"a frame stalled for {FRAME_STALL_S:g} s")

    def eof_received(self) -> bool:
        return False  # close the connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        if self._stuck is not None:
            self._stuck.cancel()
            self._stuck = None
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self.lost(exc)

    def pause_writing(self) -> None:
        loop = asyncio.get_running_loop()
        if self._writable is None or self._writable.done():
            self._writable = loop.create_future()
        if self._stuck is None:  # a peer that reads nothing for this long is given up on
            self._stuck = loop.call_later(WRITE_TIMEOUT_S, self.protocol_error,
                                          f"the other side read nothing for {WRITE_TIMEOUT_S:g} s")

    def resume_writing(self) -> None:
        if self._stuck is not None:
            self._stuck.cancel()
            self._stuck = None
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # the two sides
    def frame_received(self, kind: int, request_id: int, payload: bytes) -> None:
        raise NotImplementedError

    def lost(self, exc: Exception | None) -> None:
        raise NotImplementedError

    # helpers
    def protocol_error(self, why: str) -> None:
        if self.closed:
            return
        log.warning("runtime link: %s; closing the connection", why)
        self.close(abort=True)

    def send(self, kind: int, request_id: int, payload: bytes = b"") -> None:
        """Queue a frame: the frames of one loop turn leave in one write (the answers of one batch,
        the requests of concurrent callers), one system call and one wake-up of the other side."""
        self.send_frame(frame(kind, request_id, payload))

    def send_frame(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            return
        self._out.append(data)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        out, self._out = self._out, []
        if self.closed or self.transport is None or not out:
            return
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    async def writable(self, timeout: float) -> bool:
        """Wait (at most ``timeout``) until the transport takes writes again; False if it did not."""
        waiter = self._writable
        if waiter is None or waiter.done():
            return True
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            return False
        return not self.closed

    def close(self, *, abort: bool = False) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        self.closed = True


# -- server (the runtime child) ----------------------------------------------------------------------
InferHandler = Callable[..., Awaitable[v2.ModelInferResponse]]
RestHandler = Callable[..., Awaitable[tuple[bytes, dict[str, str]]]]
"""``infer_rest(model_id, body, header_length, timeout=)``: a V2 REST body's answer (body, headers)."""


class _ServerConnection(_Framed):
    def __init__(self, infer: InferHandler, infer_rest: RestHandler | None, max_message_bytes: int,
                 max_in_flight: int, connections: set[_ServerConnection]) -> None:
        super().__init__(max_message_bytes + FRAME_OVERHEAD)
        self.accepts = frozenset((REQUEST, CANCEL, REST) if infer_rest is not None else (REQUEST, CANCEL))
        self.infer = infer
        self.infer_rest = infer_rest
        self.max_message_bytes = max_message_bytes
        self.max_in_flight = max_in_flight
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self._connections = connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._connections.add(self)

    def frame_received(self, kind: int, request_id: int, payload: bytes) -> None:
        if kind == CANCEL:
            task = self.tasks.get(request_id)
            if task is not None:
                task.cancel()
            return
        if request_id in self.tasks:
            self.protocol_error(f"request id {request_id} is already in flight")
            return
        if len(payload) < REQUEST_HEAD.size:
            self.protocol_error("a request frame without its head")
            return
        if len(payload) - REQUEST_HEAD.size > self.max_message_bytes:
            self.protocol_error(f"a request of {len(payload) - REQUEST_HEAD.size} bytes, over the limit of "
                                f"{self.max_message_bytes}")
            return
        if len(self.tasks) >= self.max_in_flight:
            self.send(ERROR, request_id, error_payload(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "Overloaded",
                f"runtime link: {self.max_in_flight} requests in flight on this connection already"))
            return
        (timeout,) = REQUEST_HEAD.unpack_from(payload)  # both kinds of request start with it
        task = asyncio.get_running_loop().create_task(self._serve(request_id, kind, timeout, payload))
        self.tasks[request_id] = task
        task.add_done_callback(lambda t, rid=request_id: self._done(rid, t))

    def _done(self, request_id: int, task: asyncio.Task[None]) -> None:
        if self.tasks.get(request_id) is task:
            del self.tasks[request_id]
        if not task.cancelled() and task.exception() is not None:  # not expected: _serve answers everything
            log.error("runtime link: request %d failed", request_id, exc_info=task.exception())

    def _decode(self, kind: int, payload: bytes, timeout: float | None) -> tuple[str, Awaitable[bytes]]:
        """The request's model id and the call that answers it (the answer frame's payload)."""
        if kind == REST:
            try:
                model_id, body, header_length = parse_rest(payload)
            except ValueError as exc:
                raise InvalidArgument(f"runtime link: {exc}") from None
            return model_id, self._rest(model_id, body, header_length, timeout)
        try:
            request = v2.ModelInferRequest.FromString(payload[REQUEST_HEAD.size:])
        except DecodeError:
            raise InvalidArgument("runtime link: the request is not a ModelInferRequest") from None
        return request.model_name, self._message(request, timeout)

    async def _message(self, request: v2.ModelInferRequest, timeout: float | None) -> bytes:
        response = await (self.infer(request) if timeout is None else self.infer(request, timeout=timeout))
        return response.SerializeToString()

    async def _rest(self, model_id: str, body: bytes, header_length: int | None, timeout: float | None) -> bytes:
        assert self.infer_rest is not None  # REST frames are accepted only with a handler
        answer, headers = await self.infer_rest(model_id, body, header_length, timeout=timeout)
        return rest_answer(answer, headers)

    async def _serve(self, request_id: int, kind: int, timeout: float, payload: bytes) -> None:
        model_id = ""
        try:
            model_id, work = self._decode(kind, payload, timeout if timeout > 0 else None)
            if timeout > 0:
                try:
                    async with asyncio.timeout(timeout + SERVER_DEADLINE_GRACE_S):
                        body = await work
                except TimeoutError:
                    raise DeadlineExceeded(f"model '{model_id}' did not answer within {timeout:g} s") from None
            else:
                body = await work
            if len(body) > self.max_message_bytes:
                raise PayloadTooLarge(f"the response of model '{model_id}' is {len(body)} bytes, over the limit of "
                                      f"{self.max_message_bytes} bytes (grpc_max_message_bytes)")
            answer = frame(ANSWER_OF[kind], request_id, body)
        except MeshError as err:
            answer = frame(ERROR, request_id, error_payload(code_of(err), type(err).__name__, str(err)))
        except Exception as exc:  # the edge: log the bug, answer a clean INTERNAL
            log.exception("unexpected error in %s of model '%s'", METHOD, model_id)
            answer = frame(ERROR, request_id, error_payload(grpc.StatusCode.INTERNAL, "",
                                                            f"internal error in {METHOD}: {type(exc).__name__}"))
        # A client that reads nothing: answers wait here (still counted in flight) instead of
        # piling up in the transport, and the connection closes after WRITE_TIMEOUT_S.
        if not await self.writable(WRITE_TIMEOUT_S):
            self.protocol_error(f"the client read nothing for {WRITE_TIMEOUT_S:g} s")
            return
        self.send_frame(answer)

    def lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        for task in list(self.tasks.values()):
            task.cancel()


class LinkServer:
    """The link's listening socket and its connections."""

    def __init__(self, server: asyncio.AbstractServer, path: str, connections: set[_ServerConnection]) -> None:
        self.server = server
        self.path = path
        self.address = f"unix:{path}"
        self.connections = connections

    async def close(self, grace: float = 0.0) -> None:
        """Stop listening, let requests in flight finish (up to ``grace`` s), end every connection
        (what still runs is cancelled)."""
        self.server.close()
        tasks = [task for conn in self.connections for task in conn.tasks.values()]
        if tasks and grace > 0:
            await asyncio.wait(tasks, timeout=grace)
        for conn in list(self.connections):
            conn.close(abort=True)
        await self.server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


async def serve_link(path: str, infer: InferHandler, *, infer_rest: RestHandler | None = None,
                     max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                     max_in_flight: int = SERVER_MAX_IN_FLIGHT) -> LinkServer:
    """Serve ``infer(request, timeout=)`` (a ``ModelRuntime.infer``), and REST bodies when given
    ``infer_rest`` (``BuiltinRuntime.infer_rest``), on a Unix socket at ``path``, made owner-only
    (0600); a socket file left there by a killed runtime is replaced."""
    remove_stale_socket(path)
    connections: set[_ServerConnection] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(
        lambda: _ServerConnection(infer, infer_rest, max_message_bytes, max_in_flight, connections), path)
    os.chmod(path, 0o600)
    log.info("runtime link listening on unix:%s", path)
    return LinkServer(server, path, connections)


def remove_stale_socket(path: str) -> None:
    """A socket file left by a runtime that was killed; refuse to remove anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket")
    os.unlink(path)


# -- client (the mesh instance) ------------------------------------------------------------------------
class _ClientConnection(_Framed):
    accepts = frozenset((RESPONSE, ERROR, REST_OK))

    def __init__(self, max_message_bytes: int) -> None:
        super().__init__(max_message_bytes + FRAME_OVERHEAD)
        self.pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self.retired = False
        self.reason = ""  # why it ended, when this side knows better than the socket
        self._grace: asyncio.TimerHandle | None = None

    def frame_received(self, kind: int, request_id: int, payload: bytes) -> None:
        fut = self.pending.get(request_id)
        if fut is not None and not fut.done():  # else a request that gave up: its answer is dropped
            fut.set_result((kind, payload))

    def lost(self, exc: Exception | None) -> None:
        if self._grace is not None:
            self._grace.cancel()
        if not self.reason:
            self.reason = "the connection to the runtime was lost" + (f" ({exc})" if exc else "")
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(_Lost(self.reason))

    def protocol_error(self, why: str) -> None:
        self.reason = f"the runtime sent a malformed frame ({why})"
        super().protocol_error(why)

    def finished(self, request_id: int) -> None:
        self.pending.pop(request_id, None)
        if self.retired and not self.pending:
            self.close()

    def retire(self, grace_s: float) -> None:
        """No new requests: close once the ones in flight ended, or after ``grace_s``."""
        self.retired = True
        if not self.pending:
            self.close()
        elif not self.closed:
            self._grace = asyncio.get_running_loop().call_later(grace_s, lambda: self.close(abort=True))


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(_Expired())


class LinkClient:
    """Sends serialized ModelInferRequests to a :func:`serve_link` server at ``path``, many in
    flight on one connection; connects on first use and again after a loss. Create it inside a
    running event loop."""

    def __init__(self, path: str, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 max_in_flight: int = MAX_IN_FLIGHT, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.path = path
        self.target = f"unix:{path}"
        self.max_message_bytes = max_message_bytes
        self.connect_timeout_s = connect_timeout_s
        self._slots = asyncio.Semaphore(max_in_flight)
        self._conn: _ClientConnection | None = None
        self._connect_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def _fail(self, code: grpc.StatusCode, details: str, model_id: str) -> MeshError:
        what = f"{METHOD} of model '{model_id}'" if model_id else METHOD
        return error_of(code, f"runtime at {self.target}: {what} failed ({code.name}): {details}",
                        method=METHOD, model_id=model_id)

    async def call(self, payload: bytes, timeout: float, model_id: str = "", *, kind: int = REQUEST) -> bytes:
        """The serialized response to the serialized request ``payload`` (``kind`` REST: the
        ``rest_payload`` of a REST body, answered by a ``rest_answer``); the runtime's errors as
        mesh errors (``grpc_errors``), ``DeadlineExceeded`` after ``timeout`` s, ``Unavailable``
        when the runtime cannot be reached or the connection is lost."""
        if len(payload) > self.max_message_bytes:
            raise PayloadTooLarge(f"the request to model '{model_id}' is {len(payload)} bytes, over the limit of "
                                  f"{self.max_message_bytes} bytes of the runtime link (grpc_max_message_bytes)")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        slots = self._slots
        if slots.locked():
            try:
                await asyncio.wait_for(slots.acquire(), timeout)
            except TimeoutError:
                raise self._fail(grpc.StatusCode.DEADLINE_EXCEEDED, "no free slot on the runtime link in time",
                                 model_id) from None
        else:
            await slots.acquire()
        try:
            conn = self._conn
            if conn is None or conn.closed:
                conn = await self._connect(deadline, model_id)
            if conn.closed:  # lost while it was being opened
                raise self._fail(grpc.StatusCode.UNAVAILABLE, conn.reason or "the connection to the runtime was lost",
                                 model_id)
            request_id = next(self._ids)
            fut: asyncio.Future[tuple[int, bytes]] = loop.create_future()
            conn.pending[request_id] = fut
            timer = loop.call_at(deadline, _expire, fut)
            try:
                conn.send(kind, request_id, REQUEST_HEAD.pack(max(deadline - loop.time(), 1e-6)) + payload)
                answer, body = await fut
            except _Expired:
                conn.send(CANCEL, request_id)
                raise self._fail(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", model_id) from None
            except _Lost as lost:
                raise self._fail(grpc.StatusCode.UNAVAILABLE, str(lost), model_id) from None
            except asyncio.CancelledError:
                conn.send(CANCEL, request_id)  # the server stops working on it
                raise
            finally:
                timer.cancel()
                conn.finished(request_id)
        finally:
            slots.release()
        if answer == ANSWER_OF[kind]:
            return body
        if answer != ERROR:
            raise InternalError(f"runtime at {self.target}: {METHOD} of model '{model_id}': an answer of frame "
                                f"type {answer} to a request of type {kind}")
        try:
            code, error_kind, message = parse_error(body)
        except ValueError as exc:
            raise InternalError(f"runtime at {self.target}: {METHOD} of model '{model_id}': {exc}") from None
        if not error_kind and code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                       grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN):
            raise self._fail(code, message, model_id)
        raise error_of(code, message, kind=error_kind, method=METHOD, model_id=model_id)

    async def _connect(self, deadline: float, model_id: str) -> _ClientConnection:
        if self._closed:
            raise self._fail(grpc.StatusCode.UNAVAILABLE, "the runtime client is closed", model_id)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(min(deadline - loop.time(), self.connect_timeout_s)):
                async with self._connect_lock:
                    conn = self._conn
                    if conn is not None and not conn.closed:
                        return conn
                    _, conn = await loop.create_unix_connection(lambda: _ClientConnection(self.max_message_bytes),
                                                                self.path)
                    self._conn = conn
                    return conn
        except TimeoutError:
            raise self._fail(grpc.StatusCode.UNAVAILABLE, "no connection to the runtime link in time",
                             model_id) from None
        except OSError as exc:
            raise self._fail(grpc.StatusCode.UNAVAILABLE, f"cannot connect: {exc.strerror or exc}",
                             model_id) from None

    def reconnect(self, grace_s: float = OLD_CHANNEL_GRACE_S) -> None:
        """The next request connects afresh (a restarted child); requests in flight on the old
        connection get ``grace_s`` to end."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.reason = "the runtime client reconnected"
            conn.retire(grace_s)

    async def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.reason = "the runtime client is closing"
            conn.close(abort=True)
            await asyncio.sleep(0)  # connection_lost runs: requests in flight fail


class LinkedRuntimeClient(GrpcRuntimeClient):
    """``GrpcRuntimeClient`` whose ``infer`` and ``infer_bytes`` take the local link to the
    built-in runtime child (``--runtime process`` with ``runtime_link=frames``); management,
    streaming and the relay stay on gRPC."""

    def __init__(self, target: str, link_path: str, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 **kwargs: Any) -> None:
        super().__init__(target, max_message_bytes=max_message_bytes, **kwargs)
        self.link = LinkClient(link_path, max_message_bytes=max_message_bytes)

    async def infer(self, request: v2.ModelInferRequest, *, timeout: float | None = None) -> v2.ModelInferResponse:
        model_id = request.model_name
        body = await self.link.call(request.SerializeToString(), timeout or self.infer_deadline_s, model_id)
        try:
            return v2.ModelInferResponse.FromString(body)
        except DecodeError:
            raise InternalError(f"runtime at {self.link.target}: {METHOD} of model '{model_id}': the answer is "
                                "not a ModelInferResponse") from None

    async def infer_bytes(
        self, request: bytes, *, model_id: str = "", timeout: float | None = None,
        metadata: tuple[tuple[str, str | bytes], ...] | None = None,
    ) -> bytes:
        if metadata:  # the link carries no metadata
            return await super().infer_bytes(request, model_id=model_id, timeout=timeout, metadata=metadata)
        return await self.link.call(request, timeout or self.infer_deadline_s, model_id)

    async def infer_rest(self, model_id: str, body: bytes, header_length: int | None, *,
                         timeout: float | None = None) -> tuple[bytes, dict[str, str]]:
        """A V2 REST body's answer (body, headers), decoded and rendered by the child."""
        answer = await self.link.call(rest_payload(model_id, body, header_length), timeout or self.infer_deadline_s,
                                      model_id, kind=REST)
        try:
            return parse_rest_answer(answer)
        except ValueError as exc:
            raise InternalError(f"runtime at {self.link.target}: {METHOD} of model '{model_id}': {exc}") from None

    async def reconnect(self, target: str | None = None) -> None:
        await super().reconnect(target)
        self.link.reconnect()

    async def close(self) -> None:
        await self.link.close()
        await super().close()


__all__ = ["LINK_SOCKET_NAME", "LinkClient", "LinkServer", "LinkedRuntimeClient", "serve_link"]
