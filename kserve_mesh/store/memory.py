"""``MemoryStore``: the Store port for a single mesh instance (the embedded default, and tests).

Design:

- Entries live in a dict; a sorted list of keys (``bisect``) serves prefix ranges. New keys cost a
  list insert (microseconds at 100k keys); updates touch only the dict.
- Every method runs to completion without awaiting, so each call is atomic on the event loop: no
  lock exists, none is held across an await.
- Each change is appended to a bounded history (``history_size`` events, each with a sequence
  number). Watches replay from it (``start_revision``) and resync from it when they fall behind:
  a watch buffers at most ``watch_buffer`` events; on overflow it stops buffering and, once its
  consumer has drained the buffer, re-reads the missed events from history. Only when history no
  longer holds them does the watch fail with ``Compacted``.
- Leases expire by an injected monotonic clock. Expiry is checked lazily at the start of every
  call (a heap of deadlines) and, when the owner runs the store as ``async with MemoryStore()``,
  by a background task every ``reap_interval_s`` so watchers see expiries without other traffic.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

from kserve_mesh.core.errors import InvalidArgument, Unavailable
from kserve_mesh.store.base import (
    CasResult,
    Compacted,
    Compare,
    Delete,
    EventType,
    Get,
    KeyValue,
    LeaseId,
    LeaseNotFound,
    Op,
    Put,
    RangeResult,
    TxnResult,
    WatchEvent,
)

log = logging.getLogger(__name__)


class MonotonicClock(Protocol):
    def monotonic(self) -> float: ...


class _SystemMonotonic:
    def monotonic(self) -> float:
        return time.monotonic()


@dataclass(slots=True)
class _Lease:
    ttl_s: float
    deadline: float
    keys: set[str] = field(default_factory=set)


class MemoryWatch:
    """A watch on a ``MemoryStore`` (see ``Store.watch``)."""

    def __init__(
        self, store: MemoryStore, prefix: str, min_revision: int, replay_from_seq: int | None
    ) -> None:
        self._store = store
        self._prefix = prefix
        self._min_revision = min_revision
        self._buf: deque[WatchEvent] = deque()
        self._max = store.watch_buffer
        # Sequence number from which events must be re-read from history (None: live feed).
        self._resync_from: int | None = replay_from_seq
        self._error: Exception | None = None
        self._closed = False
        # Revision to resume from if this watch must be re-created (reported in ``Compacted``).
        self._next_revision = min_revision
        self._wakeup = asyncio.Event()

    # Called by the store, synchronously, for every change in order.
    def _feed(self, seq: int, event: WatchEvent) -> None:
        if self._closed or self._resync_from is not None:
            return
        if event.revision < self._min_revision or not event.kv.key.startswith(self._prefix):
            return
        if len(self._buf) >= self._max:
            log.debug("watch on %r fell behind at revision %d; resyncing", self._prefix, seq)
            self._resync_from = seq
            return
        self._buf.append(event)
        self._next_revision = event.revision
        self._wakeup.set()

    def _fail(self, error: Exception) -> None:
        self._error = error
        self._wakeup.set()

    def _resync(self) -> None:
        assert self._resync_from is not None
        try:
            events, next_seq = self._store._history_from(self._resync_from, self._max)
        except LookupError:
            self._resync_from = None
            self._error = Compacted(self._next_revision, self._store._complete_from_revision)
            return
        for event in events:
            if event.revision >= self._min_revision and event.kv.key.startswith(self._prefix):
                self._buf.append(event)
                self._next_revision = event.revision
        self._resync_from = next_seq

    def __aiter__(self) -> MemoryWatch:
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
            self._store._watches.discard(self)
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


class MemoryStore:
    """In-memory implementation of ``kserve_mesh.store.base.Store`` for one process."""

    def __init__(
        self,
        *,
        clock: MonotonicClock | None = None,
        history_size: int = 10_000,
        watch_buffer: int = 1_000,
        reap_interval_s: float = 0.5,
    ) -> None:
        if history_size < 1 or watch_buffer < 1:
            raise InvalidArgument("history_size and watch_buffer must be at least 1")
        self._clock = clock or _SystemMonotonic()
        self._data: dict[str, KeyValue] = {}
        self._keys: list[str] = []
        self._revision = 0
        self._history: deque[tuple[int, WatchEvent]] = deque()
        self._history_size = history_size
        self._next_seq = 0
        self._compacted_seq = 0  # events with seq < this are gone from history
        self._complete_from_revision = 1  # every event at this revision or later is kept
        self.watch_buffer = watch_buffer
        self._watches: set[MemoryWatch] = set()
        self._leases: dict[LeaseId, _Lease] = {}
        self._deadlines: list[tuple[float, LeaseId]] = []
        self._lease_ids: Callable[[], int] = itertools.count(0x1000).__next__
        self._reap_interval_s = reap_interval_s
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    # ---- lifecycle ----

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def start(self) -> None:
        """Start the background lease reaper (optional: expiry is also checked on every call)."""
        self._check_open()
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(
                self._reap_forever(), name="memory-store-lease-reaper"
            )

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self._reap_interval_s)
            self._reap()

    async def close(self) -> None:
        """Close the store: later calls raise ``Unavailable``; open watches fail with it."""
        if self._closed:
            return
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            try:
                await self._reaper
            except asyncio.CancelledError:
                pass
            self._reaper = None
        for watch in list(self._watches):
            watch._fail(Unavailable("the in-memory store is closed"))
        self._watches.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the in-memory store is closed")

    def _enter(self) -> None:
        self._check_open()
        self._reap()

    # ---- reads ----

    async def get(self, key: str) -> KeyValue | None:
        self._enter()
        return self._data.get(key)

    async def range(self, prefix: str, *, limit: int | None = None) -> RangeResult:
        self._enter()
        if limit is not None and limit < 1:
            raise InvalidArgument(f"range limit must be at least 1, got {limit}")
        keys = self._keys
        out: list[KeyValue] = []
        i = bisect.bisect_left(keys, prefix)
        while i < len(keys) and keys[i].startswith(prefix):
            if limit is not None and len(out) == limit:
                return RangeResult(out, self._revision, more=True)
            out.append(self._data[keys[i]])
            i += 1
        return RangeResult(out, self._revision)

    async def revision(self) -> int:
        self._enter()
        return self._revision

    # ---- writes ----

    async def put(self, key: str, value: bytes, *, lease: LeaseId | None = None) -> int:
        self._enter()
        self._check_put(key, value)
        self._check_lease(lease)
        events: list[WatchEvent] = []
        self._revision += 1
        self._apply_put(key, value, lease, events)
        self._publish(events)
        return self._revision

    async def delete(self, key: str) -> bool:
        self._enter()
        return self._delete_now([key]) > 0

    async def put_if(
        self,
        key: str,
        value: bytes,
        *,
        expected_mod_revision: int | None,
        lease: LeaseId | None = None,
    ) -> CasResult:
        self._enter()
        current = self._data.get(key)
        if not self._revision_matches(current, expected_mod_revision or 0):
            return CasResult(False, self._revision, current)
        self._check_put(key, value)
        self._check_lease(lease)
        events: list[WatchEvent] = []
        self._revision += 1
        self._apply_put(key, value, lease, events)
        self._publish(events)
        return CasResult(True, self._revision, self._data[key])

    async def delete_if(self, key: str, expected_mod_revision: int) -> CasResult:
        self._enter()
        current = self._data.get(key)
        if current is None or current.mod_revision != expected_mod_revision:
            return CasResult(False, self._revision, current)
        self._delete_now([key])
        return CasResult(True, self._revision, None)

    async def transaction(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        self._enter()
        for ops in (success, failure):
            written = [op.key for op in ops if not isinstance(op, Get)]
            if len(written) != len(set(written)):
                raise InvalidArgument("a transaction may write each key at most once per branch")
        ok = all(self._compare_holds(c) for c in compares)
        ops = success if ok else failure
        for op in ops:
            if isinstance(op, Put):
                self._check_put(op.key, op.value)
                self._check_lease(op.lease)
        will_write = any(
            isinstance(op, Put) or (isinstance(op, Delete) and op.key in self._data) for op in ops
        )
        if will_write:
            self._revision += 1
        events: list[WatchEvent] = []
        responses: list[int | bool | KeyValue | None] = []
        for op in ops:
            if isinstance(op, Put):
                self._apply_put(op.key, op.value, op.lease, events)
                responses.append(self._revision)
            elif isinstance(op, Delete):
                responses.append(self._apply_delete(op.key, events))
            else:
                responses.append(self._data.get(op.key))
        self._publish(events)
        return TxnResult(ok, self._revision, tuple(responses))

    # ---- watch ----

    def watch(self, prefix: str, *, start_revision: int | None = None) -> MemoryWatch:
        self._enter()
        if start_revision is None:
            watch = MemoryWatch(self, prefix, self._revision + 1, None)
        else:
            if start_revision < 1:
                raise InvalidArgument(f"watch start_revision must be at least 1, got {start_revision}")
            replay_from = self._first_seq_at(start_revision)
            watch = MemoryWatch(self, prefix, start_revision, replay_from)
        self._watches.add(watch)
        return watch

    # ---- leases ----

    async def grant_lease(self, ttl_s: float) -> LeaseId:
        self._enter()
        if ttl_s <= 0:
            raise InvalidArgument(f"lease TTL must be positive, got {ttl_s}")
        lease = LeaseId(self._lease_ids())
        deadline = self._clock.monotonic() + ttl_s
        self._leases[lease] = _Lease(ttl_s, deadline)
        heapq.heappush(self._deadlines, (deadline, lease))
        return lease

    async def keepalive(self, lease: LeaseId) -> float:
        self._enter()
        entry = self._leases.get(lease)
        if entry is None:
            raise LeaseNotFound(lease)
        entry.deadline = self._clock.monotonic() + entry.ttl_s
        heapq.heappush(self._deadlines, (entry.deadline, lease))
        return entry.ttl_s

    async def revoke(self, lease: LeaseId) -> bool:
        self._enter()
        return self._revoke_now(lease)

    # ---- internals (all synchronous: atomic on the event loop) ----

    def _reap(self) -> None:
        now = self._clock.monotonic()
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, lease = heapq.heappop(heap)
            entry = self._leases.get(lease)
            if entry is not None and entry.deadline == deadline:
                log.info("lease %#x expired; deleting %d key(s)", lease, len(entry.keys))
                self._revoke_now(lease)

    def _revoke_now(self, lease: LeaseId) -> bool:
        entry = self._leases.pop(lease, None)
        if entry is None:
            return False
        self._delete_now(sorted(entry.keys))
        return True

    def _delete_now(self, keys: Sequence[str]) -> int:
        present = [k for k in keys if k in self._data]
        if not present:
            return 0
        self._revision += 1
        events: list[WatchEvent] = []
        for key in present:
            self._apply_delete(key, events)
        self._publish(events)
        return len(present)

    @staticmethod
    def _check_put(key: str, value: bytes) -> None:
        if not isinstance(key, str) or not key:
            raise InvalidArgument(f"store keys are non-empty str, got {key!r}")
        if not isinstance(value, bytes):
            raise InvalidArgument(f"store values are bytes, got {type(value).__name__} for {key!r}")

    def _check_lease(self, lease: LeaseId | None) -> None:
        if lease is not None and lease not in self._leases:
            raise LeaseNotFound(lease)

    @staticmethod
    def _revision_matches(current: KeyValue | None, expected: int) -> bool:
        if expected == 0:
            return current is None
        return current is not None and current.mod_revision == expected

    def _compare_holds(self, compare: Compare) -> bool:
        current = self._data.get(compare.key)
        if compare.mod_revision is not None:
            return self._revision_matches(current, compare.mod_revision)
        return current is not None and current.value == compare.value

    def _apply_put(
        self, key: str, value: bytes, lease: LeaseId | None, events: list[WatchEvent]
    ) -> None:
        prev = self._data.get(key)
        if prev is None:
            bisect.insort(self._keys, key)
            kv = KeyValue(key, value, self._revision, self._revision, 1, lease)
        else:
            kv = KeyValue(key, value, prev.create_revision, self._revision, prev.version + 1, lease)
            if prev.lease is not None and prev.lease != lease and prev.lease in self._leases:
                self._leases[prev.lease].keys.discard(key)
        if lease is not None:
            self._leases[lease].keys.add(key)
        self._data[key] = kv
        events.append(WatchEvent(EventType.PUT, kv, prev))

    def _apply_delete(self, key: str, events: list[WatchEvent]) -> bool:
        prev = self._data.pop(key, None)
        if prev is None:
            return False
        del self._keys[bisect.bisect_left(self._keys, key)]
        if prev.lease is not None and prev.lease in self._leases:
            self._leases[prev.lease].keys.discard(key)
        tomb = KeyValue(key, b"", 0, self._revision, 0, None)
        events.append(WatchEvent(EventType.DELETE, tomb, prev))
        return True

    def _publish(self, events: list[WatchEvent]) -> None:
        for event in events:
            seq = self._next_seq
            self._next_seq += 1
            self._history.append((seq, event))
            if len(self._history) > self._history_size:
                old_seq, old = self._history.popleft()
                self._compacted_seq = old_seq + 1
                self._complete_from_revision = old.revision + 1
            for watch in list(self._watches):
                watch._feed(seq, event)

    def _first_seq_at(self, revision: int) -> int:
        """Sequence number of the first kept event at ``revision`` or later."""
        if revision < self._complete_from_revision:
            raise Compacted(revision, self._complete_from_revision)
        for seq, event in self._history:
            if event.revision >= revision:
                return seq
        return self._next_seq

    def _history_from(self, seq: int, limit: int) -> tuple[list[WatchEvent], int | None]:
        """Up to ``limit`` events from ``seq``; and the seq to continue from (None: caught up).

        Raises ``LookupError`` when events from ``seq`` are no longer kept."""
        if seq < self._compacted_seq:
            raise LookupError(seq)
        start = seq - self._history[0][0] if self._history else 0
        chunk = [ev for _, ev in itertools.islice(self._history, start, start + limit)]
        next_seq = seq + len(chunk)
        return chunk, (next_seq if next_seq < self._next_seq else None)
