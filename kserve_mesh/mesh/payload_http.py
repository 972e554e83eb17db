"""The HTTP/1.1 client payload events travel on: one keep-alive connection per worker, requests pipelined.

Payload events share the event loop with inference, so what a send costs the loop is what logging
costs inference. Measured against the same local sink (one connection, small events), the loop time
per event was ~600 us with ``httpx.AsyncClient``, ~50 us with the peers' forwarding pool
(``HttpPeers``: a shared pool with waiters, a peer's headers and TLS material) and ~23 us with this
client, which keeps only what a worker needs: its own connection (no pool, no waiters), a request
head prepared by the caller, the status of the answer (parsed by ``httptools``, as uvicorn and the
peers' pool do; the body is discarded).

Requests go out pipelined (``post_many``: HTTP/1.1 pipelining, answers in order): a write of many
requests costs one system call where one per event cost ~50 us of loop time (a loopback ``send``
that wakes the sink), most of what an event cost. A sink that speaks HTTP/1.1 takes pipelined
requests (Go's net/http, as Knative's broker; Python's http.server; uvicorn).

``post`` answers the HTTP status, or raises ``NotDelivered`` saying whether the sink may have the
event (``maybe_delivered``: the connection broke or the time ran out after the request was
written) or surely has not (the connection could not be made; or a reused connection was closed
before any byte of an answer came, which is the server closing an idle connection as we wrote, and
is retried once on a fresh one). Connections idle for ``IDLE_REUSE_S`` are not reused (servers close
idle keep-alive connections after a few seconds; never race them). ``https://`` sinks are dialled
with the TLS context the caller gives (the system CA bundle) and verified against their host name.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence

import httptools

from kserve_mesh.core import errors as e

IDLE_REUSE_S = 2.0


class NotDelivered(e.Unavailable):
    """A send that did not end in an HTTP answer."""

    def __init__(self, message: str, *, maybe_delivered: bool) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.got_bytes = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiters: deque[asyncio.Future[int]] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad HTTP answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("connection closed by the sink"))

    def on_message_complete(self) -> None:
        waiter = self._waiters.popleft() if self._waiters else None
        if not self._parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(self._parser.get_status_code())

    def send_many(self, requests: Sequence[tuple[bytes, bytes]]) -> list[asyncio.Future[int]]:
        """Write every request (head, body) at once; one future per answer, in order."""
        assert self.transport is not None and not self._waiters
        self.got_bytes = False
        loop = asyncio.get_running_loop()
        waiters = [loop.create_future() for _ in requests]
        self._waiters.extend(waiters)
        self.transport.writelines([part for request in requests for part in request])
        return waiters

    def _fail(self, exc: Exception) -> None:
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class SinkClient:
    """One worker's keep-alive connection to one sink."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.tls = host, port, tls
        self._conn: _Conn | None = None

    async def post(self, head: bytes, body: bytes, timeout_s: float) -> int:
        """Send one request (``head``: its request line and headers, ending in an empty line) and
        return the answer's status."""
        (answer,) = await self.post_many([(head, body)], timeout_s)
        if isinstance(answer, NotDelivered):
            raise answer
        return answer

    async def post_many(self, requests: Sequence[tuple[bytes, bytes]], timeout_s: float) -> list[int | NotDelivered]:
        """Send the requests pipelined on one connection; per request, in order, its answer's
        status or why it has none (the connection broke or the time ran out after it was written:
        ``maybe_delivered``). Raises ``NotDelivered`` (not delivered) when no connection could be
        made; a reused connection the sink closed before answering anything is retried once."""
        if not requests:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for attempt in (0, 1):
            conn, reused = self._conn, True
            if conn is None or conn.closed or loop.time() - conn.idle_since >= IDLE_REUSE_S:
                self.close()
                conn, reused = await self._connect(deadline), False
            self._conn = None  # in use: whatever happens below, nobody else may take it
            waiters = conn.send_many(requests)
            timer = loop.call_at(deadline, _expire, waiters)
            try:
                answers, timed_out = await _answers(waiters, timeout_s)
            except BaseException:
                conn.close()  # cancelled mid-answer: the connection is in an unknown state
                _forget(waiters)
                raise
            finally:
                timer.cancel()
            if isinstance(answers[-1], NotDelivered):
                conn.close()
                if reused and not conn.got_bytes and not timed_out and attempt == 0:
                    continue  # an idle connection the sink closed as we wrote: nothing was read
                return answers
            if not conn.closed:
                conn.idle_since = loop.time()
                self._conn = conn
            return answers
        raise AssertionError("unreachable")

    async def _connect(self, deadline: float) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            connecting = loop.create_connection(_Conn, self.host, self.port, ssl=self.tls,
                                                server_hostname=self.host if self.tls is not None else None)
            _, conn = await asyncio.wait_for(connecting, max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise NotDelivered("no connection in time", maybe_delivered=False) from None
        except OSError as exc:  # refused, unreachable, name not resolved, certificate not trusted
            raise NotDelivered(f"cannot connect: {exc}", maybe_delivered=False) from None
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


async def _answers(waiters: list[asyncio.Future[int]], timeout_s: float) -> tuple[list[int | NotDelivered], bool]:
    """The statuses, in order; from the first that did not come on, why (the connection is done:
    the later answers are forgotten); and whether that was the time running out."""
    answers: list[int | NotDelivered] = []
    for i, waiter in enumerate(waiters):
        try:
            answers.append(await waiter)
            continue
        except ConnectionError as exc:
            missing, timed_out = NotDelivered(str(exc), maybe_delivered=True), False
        except TimeoutError:
            missing, timed_out = NotDelivered(f"no answer within {timeout_s:g} s", maybe_delivered=True), True
        _forget(waiters[i + 1:])
        return answers + [missing] * (len(waiters) - i), timed_out
    return answers, False


def _forget(waiters: list[asyncio.Future[int]]) -> None:
    for waiter in waiters:
        if waiter.done():
            if not waiter.cancelled():
                waiter.exception()  # retrieved: no "never retrieved" warning
        else:
            waiter.cancel()


def _expire(waiters: list[asyncio.Future[int]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(TimeoutError())
