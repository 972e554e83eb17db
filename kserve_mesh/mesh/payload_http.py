"""The HTTP/1.1 client payload events travel on: one keep-alive connection per worker, one request at a time.

Payload events share the event loop with inference, so what a send costs the loop is what logging
costs inference. Measured against the same local sink (one connection, small events), the loop time
per event was ~600 us with ``httpx.AsyncClient``, ~50 us with the peers' forwarding pool
(``HttpPeers``: a shared pool with waiters, a peer's headers and TLS material) and ~23 us with this
client, which keeps only what a worker needs: its own connection (no pool, no waiters), a request
head prepared by the caller, the status of the answer (parsed by ``httptools``, as uvicorn and the
peers' pool do; the body is discarded).

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
        self._waiter: asyncio.Future[int] | None = None

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
        waiter, self._waiter = self._waiter, None
        if not self._parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(self._parser.get_status_code())

    def send(self, head: bytes, body: bytes) -> asyncio.Future[int]:
        assert self.transport is not None and self._waiter is None
        self.got_bytes = False
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.writelines((head, body))
        return self._waiter

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for attempt in (0, 1):
            conn, reused = self._conn, True
            if conn is None or conn.closed or loop.time() - conn.idle_since >= IDLE_REUSE_S:
                self.close()
                conn, reused = await self._connect(deadline), False
            self._conn = None  # in use: whatever happens below, nobody else may take it
            waiter = conn.send(head, body)
            timer = loop.call_at(deadline, _expire, waiter)
            try:
                status = await waiter
            except ConnectionError as exc:
                conn.close()
                if reused and not conn.got_bytes and attempt == 0:
                    continue  # an idle connection the sink closed as we wrote: nothing was read
                raise NotDelivered(str(exc), maybe_delivered=True) from None
            except TimeoutError:
                conn.close()
                raise NotDelivered(f"no answer within {timeout_s:g} s", maybe_delivered=True) from None
            except BaseException:
                conn.close()  # cancelled mid-answer: the connection is in an unknown state
                raise
            finally:
                timer.cancel()
            if not conn.closed:
                conn.idle_since = loop.time()
                self._conn = conn
            return status
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


def _expire(waiter: asyncio.Future[int]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
