"""``EtcdWatch``: an etcd watch stream that survives etcd restarts without losing or repeating events.

One reader task per watch (owned by the watch: ``aclose`` cancels and awaits it) keeps a gRPC Watch
stream open and hands each answer's events to the consumer through a bounded queue. A full queue
stops the reader, so gRPC flow control pushes back to etcd (which parks a slow watcher and replays
it later; nothing is dropped).

Resuming: the reader remembers the next revision it needs (``_next``): the start revision, then
last delivered event's revision + 1 (etcd never splits one revision over two answers), or a
progress notification's revision + 1. When the stream breaks (etcd restarted, connection lost) it
re-creates the watch from ``_next`` with bounded exponential backoff, for as long as the watch is
open; events below ``_next`` are dropped, so nothing is seen twice. If etcd compacted that history
meanwhile, the consumer gets ``Compacted`` and must re-list, then watch again.

Without an explicit ``start_revision`` the store passes the newest revision it has seen + 1, so
every change this process makes after calling ``watch()`` is seen, even before the stream is up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Final, Self

import grpc.aio

from kserve_mesh.core.errors import Unavailable
from kserve_mesh.store.base import Compacted, EventType, WatchEvent
from kserve_mesh.store.etcd_grpc import is_transient, kv_from_pb, pb

log = logging.getLogger(__name__)

_QUEUE_ANSWERS: Final = 64  # etcd answers (each up to many events) buffered per watch
# Wakes a consumer waiting on an empty queue after close or failure.
_END: Final = object()


class EtcdWatch:
    """A live etcd watch (see ``kserve_mesh.store.base.Watch``)."""

    def __init__(
        self,
        stub: pb.WatchStub,
        *,
        key: bytes,
        range_end: bytes,
        root_len: int,
        start_revision: int,
        strict: bool,
        describe: str,
        on_close: Callable[[EtcdWatch], None],
        backoff_s: tuple[float, float] = (0.05, 2.0),
    ) -> None:
        self._stub = stub
        self._key = key
        self._range_end = range_end
        self._root_len = root_len
        # Next revision to receive; 0: "from now" (resolved by the first created answer).
        self._next = start_revision
        # strict: a compacted start raises Compacted. Not strict (an implicit start the caller
        # never saw): start from "now" instead, until the first answer establishes the watch.
        self._strict = strict
        self._describe = describe
        self._on_close = on_close
        self._backoff_s = backoff_s
        self._queue: asyncio.Queue[list[WatchEvent] | object] = asyncio.Queue(_QUEUE_ANSWERS)
        self._pending: deque[WatchEvent] = deque()
        self._error: Exception | None = None
        self._closed = False
        self._created = False  # the current stream was accepted by etcd
        self._interrupted = False  # a stream broke and has not been re-created yet
        loop = asyncio.get_running_loop()
        self._reader: asyncio.Task[None] | None = loop.create_task(
            self._read_forever(), name=f"etcd-watch {describe}"
        )

    # ---- consumer side ----

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> WatchEvent:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._pending:
                return self._pending.popleft()
            if self._queue.empty() and self._error is not None:
                raise self._error
            item = await self._queue.get()
            if isinstance(item, list):
                self._pending.extend(item)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        await self._stop_reader()
        self._on_close(self)
        self._wake()

    async def fail(self, error: Exception) -> None:
        """End the watch with ``error`` once the events already received are consumed."""
        if self._error is None:
            self._error = error
        await self._stop_reader()
        self._wake()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _wake(self) -> None:
        if self._queue.empty():
            self._queue.put_nowait(_END)

    async def _stop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.wait([reader])  # never raises the task's CancelledError

    # ---- reader task ----

    async def _read_forever(self) -> None:
        first_delay, max_delay = self._backoff_s
        delay = first_delay
        while True:
            self._created = False
            try:
                await self._stream_once()
                reason = "etcd ended the watch stream"
            except grpc.aio.AioRpcError as exc:
                if not is_transient(exc):
                    message = f"etcd refused to watch {self._describe}: {exc.details()}"
                    self._finish(Unavailable(message))
                    return
                reason = f"{exc.code().name}: {exc.details()}"
            except Compacted as exc:
                self._finish(exc)
                return
            except _Reconnect as exc:
                reason = str(exc)
            if self._created:  # this stream had worked: a new interruption starts
                delay = first_delay
                self._interrupted = True
                log.warning(
                    "watch on %s interrupted (%s); resuming from revision %d",
                    self._describe,
                    reason,
                    self._next,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)

    def _finish(self, error: Exception) -> None:
        self._error = error
        self._reader = None  # this task is ending on its own
        self._wake()

    async def _stream_once(self) -> None:
        create = pb.WatchCreateRequest(
            key=self._key,
            range_end=self._range_end,
            start_revision=self._next,
            prev_kv=True,
            progress_notify=True,
        )

        # Requests are written on the call (no request generator: an async generator left
        # suspended in grpc's writer task cannot be finalized cleanly when the call is cancelled).
        call = self._stub.Watch()
        try:
            await call.write(pb.WatchRequest(create_request=create))
            while True:
                answer = await call.read()
                if answer is grpc.aio.EOF:
                    return
                await self._handle(answer)
        finally:
            call.cancel()

    async def _handle(self, answer: pb.WatchResponse) -> None:
        if answer.compact_revision > 0:
            if not self._strict:
                self._next = 0  # an implicit start was compacted: start from now instead
                raise _Reconnect("implicit start revision compacted")
            raise Compacted(self._next, answer.compact_revision)
        if answer.canceled:
            raise _Reconnect(f"etcd cancelled the watch: {answer.cancel_reason or 'no reason'}")
        if answer.created:
            if self._next == 0:
                self._next = answer.header.revision + 1
            self._created = True
            if self._interrupted:
                self._interrupted = False
                log.info("watch on %s resumed from revision %d", self._describe, self._next)
            return
        # From the first progress or event on, a compacted resume point must reach the consumer.
        self._strict = True
        if not answer.events:  # progress notification: nothing below this revision is pending
            self._next = max(self._next, answer.header.revision + 1)
            return
        batch = [self._event(ev) for ev in answer.events if ev.kv.mod_revision >= self._next]
        self._next = max(self._next, answer.events[-1].kv.mod_revision + 1)
        if batch:
            await self._queue.put(batch)

    def _event(self, ev: pb.kv_pb2.Event) -> WatchEvent:
        kind = EventType.DELETE if ev.type == pb.kv_pb2.Event.DELETE else EventType.PUT
        kv = kv_from_pb(ev.kv, self._root_len)
        prev = kv_from_pb(ev.prev_kv, self._root_len) if ev.HasField("prev_kv") else None
        return WatchEvent(kind, kv, prev)


class _Reconnect(Exception):
    """The stream must be re-created (etcd cancelled it)."""
