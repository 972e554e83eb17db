"""Limits on what a REST client may make the server hold: body size, header time, body pauses.

uvicorn bounds none of these: it accepts a body of any size, waits for headers forever, and waits
for a body that never comes as long as the client keeps the connection open. This module is the
HTTP protocol class the REST server runs instead (``uvicorn.Config(http=...)``), uvicorn's httptools
protocol with these checks:

- **Body size.** A declared ``Content-Length`` over the limit is answered 413 before a byte of the
  body is read (no application task is started); a chunked body is counted as it arrives and
  answered 413 the moment it passes the limit. Inference routes (``.../infer`` and the peer
  forwarding route) take up to ``max_body_bytes``; every other route (management, repository,
  KServe resources) takes at most ``OTHER_MAX_BODY_BYTES``, because those bodies are parsed by
  pydantic on the event loop and are small by nature.
- **Header time.** A connection must complete a request's headers within ``header_timeout_s`` of
  the connection opening or of the request's first byte; otherwise it is closed. Idle keep-alive
  time between requests is not counted (uvicorn's keep-alive timeout governs it).
- **Body pauses.** While a body arrives, a pause longer than ``body_timeout_s`` is answered 408 and
  the connection closed. Time the server itself stopped reading (flow control while the
  application has not consumed what came) is never blamed on the client.
- **Compressed bodies.** A body sent with ``Content-Encoding: gzip`` or ``deflate`` is decompressed
  here, as it arrives (api/http_decompress.py), and the size limit applies to it decompressed (as
  well as to what was sent): a decompression bomb is answered 413 once it passes the limit and
  never expands beyond it. The application sees a plain body: the ``Content-Encoding`` and
  ``Content-Length`` headers are taken out of the request's headers, so every route (the inference
  fast path, the JSON decode worker, forwarding to a peer, which sends the body it read) gets the
  decompressed bytes. Another coding is answered 415, a body that is not valid data of its coding
  (corrupt or truncated) 400.

Timers cost nothing per request: each connection keeps deadlines as plain numbers, and one sweep
per server (every quarter of the shorter timeout, at most once a second) closes what is overdue.
The refusals are JSON like every other error: ``{"error": ..., "type": ...}``, with
``Connection: close``. After a refusal the connection lingers for up to ``LINGER_S``, reading and
dropping what the client still sends (write side shut where TCP allows): closing a socket with
unread data makes the kernel reset the connection, and a client still sending its body (most do
not wait for ``100 Continue``) would then lose the answer.
"""

from __future__ import annotations

import json
import logging
from asyncio import AbstractEventLoop, TimerHandle, Transport
from collections.abc import Sequence
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from kserve_mesh.api.http_decompress import BodyDecoder, CorruptBody, TooLarge, UnsupportedEncoding, coding_of
from kserve_mesh.mesh.http_peer import FORWARD_PATH

log = logging.getLogger(__name__)

MiB = 1 << 20
OTHER_MAX_BODY_BYTES = 2 * MiB
"""Largest body of a route other than inference (management, repository, KServe resources)."""
LINGER_S = 3.0
"""How long a refused connection keeps reading (and dropping) what the client sends."""

_FORWARD = FORWARD_PATH.encode()


def is_inference_path(path: bytes) -> bool:
    """``/v2/models/{name}[/versions/{v}]/infer`` or the peer forwarding route."""
    return (path.startswith(b"/v2/models/") and path.endswith(b"/infer")) or path == _FORWARD


class HttpLimits:
    """The limits of one REST server, and the sweep that enforces its timeouts."""

    def __init__(self, max_body_bytes: int, header_timeout_s: float, body_timeout_s: float) -> None:
        if max_body_bytes <= 0 or header_timeout_s <= 0 or body_timeout_s <= 0:
            raise ValueError("HTTP limits must be positive")
        self.max_body_bytes = max_body_bytes
        self.other_max_body_bytes = min(max_body_bytes, OTHER_MAX_BODY_BYTES)
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.interval_s = max(0.05, min(1.0, min(header_timeout_s, body_timeout_s) / 4))
        self._watched: set[LimitedHttpProtocol] = set()
        self._sweep_handle: TimerHandle | None = None

    def limit_for(self, url: bytes) -> int:
        """The body limit of the request to ``url`` (its path decides)."""
        try:
            path = httptools.parse_url(url).path or b""
        except httptools.HttpParserInvalidURLError:
            path = b""
        return self.max_body_bytes if is_inference_path(path) else self.other_max_body_bytes

    def flag_for(self, limit: int) -> str:
        if limit == self.max_body_bytes:
            return "--rest-max-body-bytes"
        return f"non-inference routes take at most {OTHER_MAX_BODY_BYTES} bytes"

    # -- the sweep ---------------------------------------------------------------------------------
    def watch(self, protocol: LimitedHttpProtocol, loop: AbstractEventLoop) -> None:
        self._watched.add(protocol)
        if self._sweep_handle is None:
            self._sweep_handle = loop.call_later(self.interval_s, self._sweep, loop)

    def unwatch(self, protocol: LimitedHttpProtocol) -> None:
        self._watched.discard(protocol)

    def _sweep(self, loop: AbstractEventLoop) -> None:
        now = loop.time()
        for protocol in tuple(self._watched):
            protocol.check_deadlines(now)
        self._sweep_handle = loop.call_later(self.interval_s, self._sweep, loop) if self._watched else None


def error_bytes(status: int, error_type: str, message: str, default_headers: list[tuple[bytes, bytes]],
                extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """A complete HTTP/1.1 JSON error response that closes the connection."""
    body = json.dumps({"error": message, "type": error_type}).encode()
    head = [STATUS_LINE[status]]
    for name, value in (*default_headers, *extra_headers):
        head.extend((name, b": ", value, b"\r\n"))
    head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
    return b"".join(head) + body


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of ``limits`` (set by ``limited_protocol``)."""

    limits: HttpLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: float | None = None
        self._body_since: float | None = None  # last sign of life of a body still arriving
        self._body_limit: int | None = None  # set while a body of unknown length is counted
        self._body_count = 0
        self._refused = False  # answered by us: the parser's remaining callbacks are ignored
        self._linger_until: float | None = None
        self._decoder: BodyDecoder | None = None  # set while a compressed body is decompressed

    # -- connection --------------------------------------------------------------------------------
    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_deadline = self.loop.time() + self.limits.header_timeout_s
        self.limits.watch(self, self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        self.limits.unwatch(self)
        self._header_deadline = self._body_since = self._linger_until = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: dropped unparsed
        super().data_received(data)

    # -- parser callbacks --------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_deadline is None:
            self._header_deadline = self.loop.time() + self.limits.header_timeout_s

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._header_deadline = None
        length: int | None = None
        counted = False
        encoding: bytes | None = None
        for name, value in self.headers:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None  # llhttp refuses such a header before we get here
            elif name == b"transfer-encoding":
                counted = True
            elif name == b"content-encoding":
                encoding = value if encoding is None else encoding + b"," + value
        limits = self.limits
        if length is not None and length > limits.other_max_body_bytes:
            limit = limits.limit_for(self.url)
            if length > limit:
                self._refuse(413, "PayloadTooLarge",
                             f"request body of {length} bytes is larger than the limit of {limit} bytes "
                             f"({limits.flag_for(limit)})", current=False)
                return
        self._decoder = None
        if encoding is not None and (counted or length) and not self._start_decoding(encoding):
            return
        super().on_headers_complete()
        if counted or self._decoder is not None:
            self._body_limit, self._body_count = limits.limit_for(self.url), 0
        else:
            self._body_limit = None
        if counted or length:
            self._body_since = self.loop.time()

    def _start_decoding(self, encoding: bytes) -> bool:
        """Set up the decompression of a body sent with ``Content-Encoding: encoding``, and take
        the headers that describe the compressed body out of the request (the application sees
        the body decompressed). False: refused (415)."""
        try:
            coding = coding_of(encoding)
        except UnsupportedEncoding as exc:
            self._refuse(415, "UnsupportedMediaType", str(exc), current=False,
                         extra_headers=[(b"accept-encoding", b"gzip, deflate")])
            return False
        if coding is None:
            return True  # identity
        self._decoder = BodyDecoder(coding)
        # In place: the request's scope holds this very list.
        self.headers[:] = [(n, v) for n, v in self.headers if n not in (b"content-encoding", b"content-length")]
        return True

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        if self._body_limit is not None:
            self._body_count += len(body)  # what was sent; a compressed body is counted again decompressed
            if self._body_count > self._body_limit:
                limit = self._body_limit
                self._refuse(413, "PayloadTooLarge",
                             f"request body is larger than the limit of {limit} bytes ({self.limits.flag_for(limit)}): "
                             f"{self._body_count} bytes had arrived", current=True)
                return
        self._body_since = self.loop.time()
        decoder = self._decoder
        if decoder is None:
            super().on_body(body)
            return
        assert self._body_limit is not None
        try:
            decoder.feed(body, self._body_limit, super().on_body)
        except TooLarge as exc:
            limit = self._body_limit
            self._refuse(413, "PayloadTooLarge",
                         f"request body is larger than the limit of {limit} bytes ({self.limits.flag_for(limit)}) "
                         f"once decompressed (Content-Encoding: {decoder.coding}): {exc}", current=True)
        except CorruptBody as exc:
            self._refuse(400, "InvalidArgument", str(exc), current=True)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._body_since = None
        if self._decoder is not None:
            decoder, self._decoder = self._decoder, None
            try:
                decoder.finish()
            except CorruptBody as exc:
                self._refuse(400, "InvalidArgument", str(exc), current=True)
                return
        super().on_message_complete()

    # -- enforcement -------------------------------------------------------------------------------
    def check_deadlines(self, now: float) -> None:
        """Called by the sweep: close or answer what is overdue."""
        if self.transport.is_closing():
            return
        if self._linger_until is not None:
            if now >= self._linger_until:
                self.transport.close()
            return
        if self._header_deadline is not None and now >= self._header_deadline:
            self._header_deadline = None
            log.debug("closing a connection from %s: no complete request headers within %g s",
                      self.client, self.limits.header_timeout_s)
            self._refused = True
            self.transport.close()
            return
        since = self._body_since
        if since is None:
            return
        if self.flow.read_paused:  # we are not reading: the pause is ours, not the client's
            self._body_since = now
        elif now - since >= self.limits.body_timeout_s:
            self._refuse(408, "RequestTimeout",
                         f"the request body stopped arriving: nothing for {self.limits.body_timeout_s:g} s "
                         "(--http-body-timeout-s)", current=True)

    def _refuse(self, status: int, error_type: str, message: str, *, current: bool,
                extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        """Answer ``status`` and close. ``current``: the request's own cycle exists (the body phase);
        otherwise the cycle, if any, is an earlier pipelined request."""
        self._refused = True
        self._header_deadline = self._body_since = None
        log.debug("refusing a request from %s: %s", self.client, message)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if not current or cycle.response_started:
                self.transport.close()  # a response is under way: nothing can be said any more
                return
            cycle.disconnected = True  # the application's sends are dropped, its receive sees a disconnect
            cycle.message_event.set()
        self._decoder = None
        self.transport.write(error_bytes(status, error_type, message, self.server_state.default_headers,
                                         extra_headers))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self._linger_until = self.loop.time() + LINGER_S


def limited_protocol(*, max_body_bytes: int, header_timeout_s: float, body_timeout_s: float) -> type[LimitedHttpProtocol]:
    """The protocol class for one REST server (``uvicorn.Config(http=...)``) with these limits."""
    limits = HttpLimits(max_body_bytes, header_timeout_s, body_timeout_s)
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})
