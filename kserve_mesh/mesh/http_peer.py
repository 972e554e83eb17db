"""Forwarding V2 REST inference to a peer instance as it came: the body's bytes, over HTTP/1.1.

A REST request that enters an instance without a copy of its model goes to the holder's REST port
unparsed; the holder's answer comes back as bytes too. Compared with re-encoding it as a gRPC
``ModelInfer``, the entering instance neither parses the JSON nor renders a response, and the
receiving instance takes the request on a connection of its own: a ``grpc.aio`` server accepts one
call per event-loop turn, so under saturation forwarded gRPC calls queued behind the REST traffic
for seconds (``benchmarks/density.py``, closed loop).

``HttpPeers`` keeps a pool of keep-alive connections per peer (at most ``max_connections``, then
callers wait in order). Responses are parsed with ``httptools`` (uvicorn's parser). A connection
that was idle long enough for the peer to have closed it is not reused; a reused connection that
closes before any byte of the answer is retried once on a new one. The routing headers travel
along: ``mm-model-id``, ``mm-forwarded`` (the peer serves locally, loading if it must), and
``mm-timeout-ms`` with the caller's remaining time. Peers that serve TLS (``https://`` REST
endpoints) are reached over TLS with this instance's certificate (mTLS); with a peer token, every
forwarded request carries this instance's own ``authorization`` header, never the caller's.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

import httptools

from kserve_mesh.core import errors as e
from kserve_mesh.mesh.tls import TlsMaterial
from kserve_mesh.mesh.wire import FORWARD_PATH, TIMEOUT_HEADER, error_from_answer

__all__ = ["FORWARD_PATH", "HttpAnswer", "HttpPeers"]  # FORWARD_PATH: see mesh/wire.py (kept for old imports)

IDLE_REUSE_S = 2.0  # uvicorn closes keep-alive connections idle for 5 s; never race it


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[HttpAnswer] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self.got_bytes = False

    # -- asyncio.Protocol --------------------------------------------------------------------------
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
        self._fail(ConnectionError("connection closed by the peer"))

    # -- httptools callbacks -----------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        answer = HttpAnswer(self._parser.get_status_code(), self._headers, b"".join(self._body))
        if not self._parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    # -- use -------------------------------------------------------------------------------------
    def send(self, head: bytes, body: bytes) -> asyncio.Future[HttpAnswer]:
        assert self.transport is not None and self._waiter is None
        self._headers, self._body, self.got_bytes = {}, [], False
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


class _Pool:
    def __init__(self, host: str, port: int, max_connections: int, tls: TlsMaterial | None = None) -> None:
        self.host, self.port = host, port
        self.max_connections = max_connections
        self.tls = tls
        self.idle: deque[_Conn] = deque()
        self.open = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def take(self, timeout_s: float) -> tuple[_Conn, bool]:
        """A connection and whether it was reused."""
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()  # the most recently used: the likeliest to be alive
            if not conn.closed and now - conn.idle_since < IDLE_REUSE_S:
                return conn, True
            self._discard(conn)
        if self.open >= self.max_connections:
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, timeout_s)
            except TimeoutError:
                raise e.DeadlineExceeded(f"no connection to {self.host}:{self.port} became free in time") from None
            finally:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
            return await self.take(timeout_s)
        return await self.connect(timeout_s), False

    async def connect(self, timeout_s: float) -> _Conn:
        self.open += 1
        try:
            loop = asyncio.get_running_loop()
            if self.tls is None:
                connecting = loop.create_connection(_Conn, self.host, self.port)
            else:  # the peer's certificate is checked against the mesh CA and the peer's name
                connecting = loop.create_connection(_Conn, self.host, self.port, ssl=self.tls.client_context(),
                                                    server_hostname=self.tls.peer_name(self.host))
            _, conn = await asyncio.wait_for(connecting, timeout_s)
        except BaseException:
            self.open -= 1
            self._wake()
            raise
        return conn

    def give_back(self, conn: _Conn) -> None:
        if conn.closed:
            self._discard(conn)
            return
        conn.idle_since = time.monotonic()
        self.idle.append(conn)
        self._wake()

    def _discard(self, conn: _Conn) -> None:
        conn.close()
        self.open -= 1
        self._wake()

    def _wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class HttpPeers:
    """Keep-alive HTTP/1.1 pools to the peers' REST ports, for forwarding raw REST inference."""

    def __init__(self, max_connections: int = 256, *, tls: TlsMaterial | None = None, token: str = "") -> None:
        self.max_connections = max_connections
        self.tls = tls
        self._auth = f"authorization: Bearer {token}" if token else ""
        self._pools: dict[str, _Pool] = {}

    def _pool(self, url: str) -> _Pool:
        pool = self._pools.get(url)
        if pool is None:
            secure = url.startswith("https://")
            if secure and self.tls is None:
                raise e.Unavailable(f"instance at {url} serves TLS but this instance has no TLS configuration")
            hostport = url.removeprefix("https://" if secure else "http://").rstrip("/")
            host, _, port = hostport.rpartition(":")
            pool = self._pools[url] = _Pool(host.strip("[]"), int(port), self.max_connections,
                                            self.tls if secure else None)
        return pool

    async def post(self, url: str, path: str, body: bytes, headers: dict[str, str], timeout_s: float) -> HttpAnswer:
        """POST ``body`` to ``url + path``; raises ``Unavailable`` when the peer cannot be reached
        and ``DeadlineExceeded`` when it does not answer in ``timeout_s``."""
        pool = self._pool(url)
        deadline = time.monotonic() + timeout_s
        lines = [f"POST {path} HTTP/1.1", f"host: {pool.host}:{pool.port}", f"content-length: {len(body)}",
                 f"{TIMEOUT_HEADER}: {max(1, int(timeout_s * 1000))}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if self._auth:
            lines.append(self._auth)  # this instance's own credential, never the caller's
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        for attempt in (0, 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise e.DeadlineExceeded(f"forwarding to {url} timed out")
            try:
                conn, reused = await pool.take(remaining)
            except OSError as exc:
                raise e.Unavailable(f"instance at {url} unavailable: {exc}") from None
            except TimeoutError:
                raise e.Unavailable(f"instance at {url} did not accept a connection in time") from None
            waiter = conn.send(head, body)
            timer = asyncio.get_running_loop().call_later(
                max(0.0, deadline - time.monotonic()), _expire, waiter)
            try:
                answer = await waiter
            except ConnectionError as exc:
                retry = reused and not conn.got_bytes and attempt == 0
                pool._discard(conn)
                if retry:
                    continue  # the peer closed an idle connection as we sent: nothing was served
                raise e.Unavailable(f"instance at {url} unavailable: {exc}") from None
            except TimeoutError:
                pool._discard(conn)
                raise e.DeadlineExceeded(f"instance at {url} did not answer within {timeout_s:.3f} s") from None
            except BaseException:
                pool._discard(conn)  # cancelled mid-answer: the connection is in an unknown state
                raise
            finally:
                timer.cancel()
            pool.give_back(conn)
            return answer
        raise AssertionError("unreachable")

    @staticmethod
    def error(answer: HttpAnswer, where: str) -> e.MeshError:
        """The peer's error answer as the mesh error it was (``wire.error_from_answer``)."""
        return error_from_answer(answer.status, answer.body, where)

    def drop(self, url: str) -> None:
        """Close the idle connections to ``url`` (calls in flight finish on theirs)."""
        pool = self._pools.pop(url, None)
        if pool is not None:
            pool.close()

    def close(self) -> None:
        """Close every idle connection (calls in flight finish on theirs); used at stop and when
        the TLS material changes, so that new connections use the new certificate."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def _expire(waiter: asyncio.Future[HttpAnswer]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
