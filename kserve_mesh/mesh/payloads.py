"""Payload logging: every inference request and response sent to the payload sinks, off the request path.

ModelMesh's ``payloadProcessors`` with KServe's logger semantics (``payload_events`` has the wire
form, ``payload_config`` the sink URLs). The data plane calls two plain functions per inference::

    cid = payloads.request(model_id, request.id, body, vmodel_id=vmodel_id)   # None: nobody listens
    ...                                                                        # run the inference
    if cid is not None:
        payloads.response(model_id, cid, response, vmodel_id=vmodel_id)       # success only (as KServe)

They never await, never render and never do I/O: they pick the sinks that want this model (one dict
lookup when no sink filters by model, and when there are no sinks at all), wrap the body in one
``PayloadEvent`` shared by those sinks, and append it to each sink's bounded queue. A full queue
(``queue_size`` events or ``max_queued_bytes`` bytes per sink, queued or in flight) drops the event
and counts it: a slow or dead sink costs dropped events, never inference time or unbounded memory.

Each sink is drained by one task owned by the logger (``start()`` / ``stop()``), in bursts: it waits
for an event, lingers ``linger_s`` (100 ms), then sends everything queued over ``concurrency``
keep-alive HTTP/1.1 connections (``payload_http.SinkClient``: about half the loop time per event of
the peers' forwarding pool, a twentieth of ``httpx``'s). The bursts are what keeps logging off the
request path: these sends share the event loop with inference, and sent one by one right behind
each answer (~25-50 us of loop time each, plus reading the sink's answers) they delayed the next
request, +0.1-0.2 ms at p50 in ``benchmarks/payloads.py``; in bursts every 5 ms still ~+0.09 ms;
every 100 ms the difference is within the noise of the "stalled sink" row. Each connection sends
``PIPELINE`` events per write (HTTP/1.1 pipelining): one event per write cost ~80 us of CPU each,
mostly the loopback ``send`` waking the sink, and +10-14% at p50 with a live sink; 32 per write cost
~15-30 us per event and +1-2% (``benchmarks/payloads.py``). Under load the bursts grow, they do not
wait longer. An event reaches its sink up to ``linger_s`` later; its ``ce-time``
is when the mesh saw the payload either way.

Delivery: a short timeout per send; up to ``attempts`` tries when the sink could not be reached or
answered 5xx/429, never once the request may have arrived (a timeout, a connection broken
mid-answer: the sink must never get an event twice). A failed delivery ends the burst: what it had
left (the rest of its pipelined chunk that surely did not arrive, and what was not sent) is queued again and the sink pauses (``failure_pause_s``, doubling to ``MAX_PAUSE_S`` while
failures go on), so a dead sink is not dialled once per event and its events are dropped (counted)
once its queue is full. ``https://`` sinks are verified against the system CA bundle
(``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured) and their host name; user info in a URL becomes
Basic auth and is never shown. A gRPC message is rendered to V2 JSON once for all sinks, in a thread
when it is large (``RENDER_INLINE_BYTES``). ``stop()`` takes no new events, gives the queued ones
``drain_s`` to go out, then cancels the task; what is still queued, or was cut off mid-send, counts
as dropped.

``counters()`` returns, per sink, what was sent, dropped (queue full or stopped) and failed (not
delivered after its tries, or a body that could not be rendered), and what is queued: the server
exports them as metrics at scrape time, so the request path never touches a metric.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from kserve_mesh.core import errors as e
from kserve_mesh.core.payload_config import SinkSpec, parse_payload_processors
from kserve_mesh.mesh.payload_events import (
    REQUEST,
    RESPONSE,
    Body,
    PayloadEvent,
    ce_headers,
    encode_headers,
    render,
    static_headers,
)
from kserve_mesh.mesh.payload_http import NotDelivered, SinkClient
from kserve_mesh.mesh.payload_sinks import SinkCounters, SinkQueue

log = logging.getLogger(__name__)

MiB = 1024 * 1024
RENDER_INLINE_BYTES = 256 * 1024
"""Messages larger than this are rendered to JSON in a thread, never on the event loop."""
WARN_EVERY_S = 30.0
MAX_PAUSE_S = 10.0
MAX_CLIENT_ID_CHARS = 256
"""A client's request id longer than this is not the correlation id (a uuid4 is): it travels in a header."""
_RETRIED = frozenset({429, 500, 502, 503, 504})
PIPELINE = 32
"""Events a connection sends at once (HTTP/1.1 pipelining): one write for all of them."""


class PayloadLogger:
    """The payload sinks of one instance, their queues and the tasks that drain them. ``request()``
    and ``response()`` are called from the event loop's thread."""

    def __init__(self, sinks: Sequence[SinkSpec], *, source: str, namespace: str = "", queue_size: int = 10_000,
                 max_queued_bytes: int = 64 * MiB, concurrency: int = 4, send_timeout_s: float = 2.0,
                 attempts: int = 3, retry_backoff_s: float = 0.05, failure_pause_s: float = 0.5,
                 linger_s: float = 0.1, drain_s: float = 2.0, wall: Callable[[], float] = time.time) -> None:
        if queue_size <= 0 or max_queued_bytes <= 0 or concurrency <= 0 or attempts <= 0:
            raise e.InvalidArgument("payload queue size, byte bound, concurrency and attempts must be positive")
        self._sinks = tuple(SinkQueue(spec, queue_size, max_queued_bytes) for spec in sinks)
        self._all = tuple(s for s in self._sinks if s.spec.model_id is None)
        by_id: dict[str, tuple[SinkQueue, ...]] = {}
        for sink in self._sinks:
            if sink.spec.model_id is not None:
                by_id[sink.spec.model_id] = (*by_id.get(sink.spec.model_id, ()), sink)
        self._by_id = by_id
        self._static = static_headers(source, namespace)
        self._concurrency = concurrency
        self._send_timeout_s = send_timeout_s
        self._attempts = attempts
        self._retry_backoff_s = retry_backoff_s
        self._failure_pause_s = failure_pause_s
        self._linger_s = linger_s
        self._drain_s = drain_s
        self._wall = wall
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._bad_body_logged = False
        self._tls: ssl.SSLContext | None = None

    @classmethod
    def from_setting(cls, payload_processors: str, **options: object) -> PayloadLogger:
        """A logger for a ``payload_processors`` setting; ``InvalidArgument`` names a bad URL."""
        return cls(parse_payload_processors(payload_processors), **options)  # type: ignore[arg-type]

    @property
    def enabled(self) -> bool:
        return bool(self._sinks)

    @property
    def sinks(self) -> tuple[str, ...]:
        """The sinks, as shown (credentials hidden)."""
        return tuple(s.spec.name for s in self._sinks)

    # -- the request path: plain functions, never awaiting ------------------------------------------
    def request(self, model_id: str, request_id: str, body: Body, *, vmodel_id: str = "",
                headers: Mapping[str, str] | None = None) -> str | None:
        """Log an inference request; returns its correlation id (``request_id``, or a new uuid4 when
        it is empty or too long) to give ``response()``, or ``None`` when no sink wants this model.

        ``body``: the V2 REST body as it came (``headers``: its content-type and
        inference-header-content-length when it uses the binary extension), or the
        ``ModelInferRequest`` (not to be changed afterwards), or a cheap callable returning bytes or
        ``(bytes, headers)``, called by a worker."""
        sinks = self._route(model_id, vmodel_id)
        if not sinks:
            return None
        correlation_id = request_id if 0 < len(request_id) <= MAX_CLIENT_ID_CHARS else str(uuid.uuid4())
        self._offer(sinks, REQUEST, model_id, vmodel_id, correlation_id, body, headers)
        return correlation_id

    def response(self, model_id: str, correlation_id: str, body: Body, *, vmodel_id: str = "",
                 headers: Mapping[str, str] | None = None) -> None:
        """Log the successful response of the request ``request()`` returned ``correlation_id`` for;
        ``body`` as for ``request()`` (a ``ModelInferResponse`` for a message)."""
        sinks = self._route(model_id, vmodel_id)
        if sinks:
            self._offer(sinks, RESPONSE, model_id, vmodel_id, correlation_id, body, headers)

    def _route(self, model_id: str, vmodel_id: str) -> tuple[SinkQueue, ...]:
        by_id = self._by_id
        if not by_id:
            return self._all
        mine = by_id.get(model_id, ())
        if vmodel_id and vmodel_id != model_id:
            mine += by_id.get(vmodel_id, ())
        return self._all + mine if mine else self._all

    def _offer(self, sinks: tuple[SinkQueue, ...], kind: str, model_id: str, vmodel_id: str, correlation_id: str,
               body: Body, headers: Mapping[str, str] | None) -> None:
        try:
            event = PayloadEvent(kind, model_id, vmodel_id, correlation_id, body, headers, self._wall())
        except Exception:  # a caller's bug must never fail an inference: counted, logged once
            if not self._bad_body_logged:
                self._bad_body_logged = True
                log.exception("a payload event for model %s could not be made (logged once)", model_id)
            for sink in sinks:
                sink.failed += 1
            return
        for sink in sinks:
            sink.offer(event)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start one task per sink, in the running loop."""
        if self._tasks or self._closing:
            return
        for sink in self._sinks:
            task = asyncio.create_task(self._run(sink), name=f"payloads {sink.spec.name}")
            task.add_done_callback(_check_ended)
            self._tasks.append(task)
        if self._sinks:
            log.info("payload logging to %s", ", ".join(self.sinks))

    async def stop(self) -> None:
        """Take no new events, give the queued ones ``drain_s`` to go out, then cancel the workers;
        bounded by ``drain_s`` plus the cancellation."""
        self._closing = True
        for sink in self._sinks:
            sink.open = False
            sink.ready.set()
        tasks, self._tasks = self._tasks, []
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._drain_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for sink in self._sinks:
            sink.drop_queued()

    def counters(self) -> list[SinkCounters]:
        """Per sink: sent, dropped, failed (since start), queued and in flight (now)."""
        return [sink.counters() for sink in self._sinks]

    # -- the workers -------------------------------------------------------------------------------
    async def _run(self, sink: SinkQueue) -> None:
        """Deliver one sink's events in bursts: wait for one, linger, then send everything queued
        over ``concurrency`` connections; after a failed delivery, put back what the burst had
        left and pause."""
        clients = [SinkClient(sink.spec.host, sink.spec.port, self._tls_context() if sink.spec.secure else None)
                   for _ in range(self._concurrency)]
        try:
            while True:
                if not sink.queue:
                    if self._closing:
                        return
                    sink.ready.clear()
                    await sink.ready.wait()
                    continue
                if self._linger_s > 0 and not self._closing:
                    await asyncio.sleep(self._linger_s)
                batch = sink.take_all()
                try:
                    delivered = await self._send(sink, clients, batch)
                finally:  # stopping (or cancelled by stop()): dropped; else a failure: queued again
                    sink.put_back(batch, drop=self._closing)
                if delivered:
                    sink.pause_s = 0.0
                elif not self._closing:
                    sink.pause_s = min(MAX_PAUSE_S, sink.pause_s * 2 or self._failure_pause_s)
                    await asyncio.sleep(sink.pause_s)
        finally:
            for client in clients:
                client.close()

    async def _send(self, sink: SinkQueue, clients: list[SinkClient], batch: deque[PayloadEvent]) -> bool:
        """Send the burst's events, ``PIPELINE`` at a time per connection, one connection per
        sender; False once one was not delivered (the senders stop: what is left stays in ``batch``)."""
        failed = False

        async def sender(client: SinkClient) -> None:
            nonlocal failed
            while batch and not failed:
                chunk = [batch.popleft() for _ in range(min(PIPELINE, len(batch)))]
                counted = [0]  # how many of the chunk are counted (sent or failed), for a cancellation
                back: list[PayloadEvent] = []
                try:
                    ok, back = await self._deliver(sink, client, chunk, counted)
                    failed = failed or not ok
                except asyncio.CancelledError:
                    sink.dropped += len(chunk) - counted[0]  # stopped mid-send: not known to be delivered
                    raise
                finally:
                    batch.extendleft(reversed(back))  # surely not delivered: the caller queues them again
                    for event in chunk:
                        if event not in back:
                            sink.done(event)

        senders = min(len(batch), len(clients))
        if senders == 1:
            await sender(clients[0])
        else:  # the group owns the senders: cancelling it, or one failing, cancels them all
            async with asyncio.TaskGroup() as group:
                for client in clients[:senders]:
                    group.create_task(sender(client))
        return not failed

    async def _deliver(self, sink: SinkQueue, client: SinkClient, events: list[PayloadEvent],
                       counted: list[int]) -> tuple[bool, list[PayloadEvent]]:
        """Send events pipelined on one connection. Each is tried up to ``attempts`` times while it
        surely did not arrive (no connection, or a 5xx/429 answer), never again once it may have.
        Returns whether all were taken, and the events to queue again: after a failure (counted),
        those of the chunk that surely did not arrive, as one event at a time would have left them."""
        pending: list[tuple[PayloadEvent, tuple[bytes, bytes]]] = []
        for event in events:
            try:
                body, lines = await self._wire(event)
            except Exception as exc:  # noqa: BLE001 - a body that cannot be rendered is this event's problem only
                self._failed(sink, f"a {event.kind.rpartition('.')[2]} of model {event.model_id!r} could not be "
                                   f"rendered: {exc}", counted)
                continue
            pending.append((event, (b"%scontent-length: %d\r\n%s\r\n" % (sink.prefix, len(body), lines), body)))
        ok, why = True, ""
        for attempt in range(self._attempts):
            if not pending:
                break
            if attempt:
                await asyncio.sleep(self._retry_backoff_s * 2 ** (attempt - 1))
            try:
                answers: list[int | NotDelivered] = await client.post_many([r for _, r in pending],
                                                                           self._send_timeout_s)
            except NotDelivered as exc:  # no connection: nothing was sent
                why = str(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - not a known failure: counted and logged, never retried
                client.close()
                why = f"unexpected error: {exc!r}"
                answers = [NotDelivered(why, maybe_delivered=True)] * len(pending)
            retry = []
            for item, answer in zip(pending, answers, strict=True):
                if isinstance(answer, int) and 200 <= answer < 300:
                    sink.sent += 1
                    counted[0] += 1
                elif (answer in _RETRIED) if isinstance(answer, int) else not answer.maybe_delivered:
                    why = f"HTTP {answer}" if isinstance(answer, int) else str(answer)
                    retry.append(item)
                else:
                    ok = self._failed(sink, f"HTTP {answer}" if isinstance(answer, int) else str(answer), counted)
            pending = retry
        if pending:  # out of tries: the first fails, the others wait for the next burst
            ok = self._failed(sink, why, counted)
            return ok, [event for event, _ in pending[1:]]
        return ok, []

    def _failed(self, sink: SinkQueue, why: str, counted: list[int]) -> bool:
        sink.failed += 1
        counted[0] += 1
        self._warn(sink, why)
        return False

    async def _wire(self, event: PayloadEvent) -> tuple[bytes, bytes]:
        """The event's body and header lines, rendered once for every sink."""
        if event.wire is None:
            body = event.body  # another sink's worker may finish first and let it go
            inline = isinstance(body, (bytes, bytearray, memoryview)) or event.size <= RENDER_INLINE_BYTES
            args = (event.kind, body, event.headers)
            data, content_type, header_length = render(*args) if inline else await asyncio.to_thread(render, *args)
            if event.wire is None:
                event.wire = (data, encode_headers(ce_headers(event, self._static, content_type, header_length)))
                event.body = None  # the message is not needed any more: let it go
        return event.wire

    def _tls_context(self) -> ssl.SSLContext:
        """The system CA bundle (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured), host names checked."""
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _warn(self, sink: SinkQueue, why: str) -> None:
        """A delivery problem, logged at most once per ``WARN_EVERY_S`` per sink (with the count)."""
        sink.unwarned += 1
        now = asyncio.get_running_loop().time()
        if now - sink.warned_at < WARN_EVERY_S:
            return
        log.warning("payload sink %s: event not delivered (%s); %d undelivered since the last warning",
                    sink.spec.name, why, sink.unwarned)
        sink.warned_at, sink.unwarned = now, 0


def _check_ended(task: asyncio.Task[None]) -> None:
    """A sink's task ends only at stop(); anything else is a bug, and says so."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s ended: %r", task.get_name(), task.exception(), exc_info=task.exception())


__all__ = ["PayloadLogger", "SinkCounters", "SinkSpec", "parse_payload_processors"]
