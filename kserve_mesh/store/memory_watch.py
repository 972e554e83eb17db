"""Change history and watches of ``MemoryStore``: bounded buffering without losing events.

``EventHistory`` keeps the last ``size`` changes, each with a sequence number (several changes can
share a revision: a transaction or a lease revoke writes many keys at one revision). A
``MemoryWatch`` is fed every change synchronously by the store and buffers at most ``buffer``
events for its prefix. When the buffer is full it stops buffering and remembers the sequence number
it missed; once its consumer has drained the buffer it re-reads from history, a buffer-full at a
time, and goes back to the live feed when it has caught up. Only a consumer that falls behind the
whole history gets ``Compacted`` (then re-list and re-watch). Replaying from a ``start_revision``
is the same resync path, started at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Self

from kserve_mesh.store.base import Compacted, WatchEvent

log = logging.getLogger(__name__)


class EventHistory:
    """The last ``size`` changes of a store, in order."""

    def __init__(self, size: int) -> None:
        self._events: deque[tuple[int, WatchEvent]] = deque()
        self._size = size
        self.next_seq = 0
        self._dropped_seq = 0  # events with a smaller seq are gone
        self.complete_from_revision = 1  # every event at this revision or later is kept

    def append(self, event: WatchEvent) -> int:
        seq = self.next_seq
        self.next_seq += 1
        self._events.append((seq, event))
        if len(self._events) > self._size:
            old_seq, old = self._events.popleft()
            self._dropped_seq = old_seq + 1
            self.complete_from_revision = old.revision + 1
        return seq

    def first_seq_at(self, revision: int) -> int:
        """Sequence number of the first event at ``revision`` or later (``Compacted`` if gone)."""
        if revision < self.complete_from_revision:
            raise Compacted(revision, self.complete_from_revision)
        for seq, event in self._events:
            if event.revision >= revision:
                return seq
        return self.next_seq

    def read(self, seq: int, limit: int) -> tuple[list[WatchEvent], int | None] | None:
        """Up to ``limit`` events from ``seq`` and the seq to go on from (None: caught up);
        None when events from ``seq`` are no longer kept."""
        if seq < self._dropped_seq:
            return None
        start = seq - self._events[0][0] if self._events else 0
        chunk = [ev for _, ev in itertools.islice(self._events, start, start + limit)]
        next_seq = seq + len(chunk)
        return chunk, (next_seq if next_seq < self.next_seq else None)


class MemoryWatch:
    """A watch on a ``MemoryStore`` (see ``Store.watch``)."""

    def __init__(
        self,
        history: EventHistory,
        prefix: str,
        *,
        min_revision: int,
        replay_from_seq: int | None,
        buffer: int,
        on_close: Callable[[MemoryWatch], None],
    ) -> None:
        self._history = history
        self._prefix = prefix
        self._min_revision = min_revision
        self._buf: deque[WatchEvent] = deque()
        self._max = buffer
        self._on_close = on_close
        # Sequence number from which events must be re-read from history (None: live feed).
        self._resync_from: int | None = replay_from_seq
        self._error: Exception | None = None
        self._closed = False
        # The revision to restart from if history runs out (reported in ``Compacted``).
        self._resume_revision = min_revision
        self._wakeup = asyncio.Event()

    def feed(self, seq: int, event: WatchEvent) -> None:
        """Called by the store, synchronously, for every change in order."""
        if self._closed or self._resync_from is not None or not self._wants(event):
            return
        if len(self._buf) >= self._max:
            log.debug("watch on %r fell behind at revision %d", self._prefix, event.revision)
            self._resync_from = seq
            return
        self._buffer(event)
        self._wakeup.set()

    def fail(self, error: Exception) -> None:
        """End the watch with ``error`` once its buffered events are consumed."""
        self._error = error
        self._wakeup.set()

    def _wants(self, event: WatchEvent) -> bool:
        return event.revision >= self._min_revision and event.kv.key.startswith(self._prefix)

    def _buffer(self, event: WatchEvent) -> None:
        self._buf.append(event)
        self._resume_revision = event.revision

    def _resync(self) -> None:
        assert self._resync_from is not None
        answer = self._history.read(self._resync_from, self._max)
        if answer is None:
            self._resync_from = None
            self._error = Compacted(self._resume_revision, self._history.complete_from_revision)
            return
        events, self._resync_from = answer
        for event in events:
            if self._wants(event):
                self._buffer(event)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> WatchEvent:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._buf:
                return self._buf.popleft()
            if self._error is not None:
                raise self._error
            if self._resync_from is not None:
                self._resync()
                continue
            self._wakeup.clear()
            await self._wakeup.wait()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._buf.clear()
            self._on_close(self)
            self._wakeup.set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
