"""``MemoryStore``: the Store port for a single mesh instance (the embedded default, and tests).

Design:

- Entries live in a dict; a sorted list of keys (``bisect``) serves prefix ranges. New keys cost a
  list insert (microseconds at 100k keys); updates touch only the dict.
- Every method runs to completion without awaiting, so each call is atomic on the event loop: no
  lock exists, none is held across an await.
- Each change is appended to a bounded history (``history_size`` events). Watches buffer at most
  ``watch_buffer`` events each, and replay or catch up from that history (``memory_watch.py``).
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

from kserve_mesh.core.errors import InvalidArgument, Unavailable
from kserve_mesh.store.base import (
    CasResult,
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
from kserve_mesh.store.memory_watch import EventHistory, MemoryWatch

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
        self._history = EventHistory(history_size)
        self._watch_buffer = watch_buffer
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
            await asyncio.wait([self._reaper])  # never raises the task's CancelledError
            self._reaper = None
        for watch in list(self._watches):
            watch.fail(Unavailable("the in-memory store is closed"))
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
        replay_from: int | None = None
        if start_revision is None:
            start_revision = self._revision + 1
        elif start_revision < 1:
            raise InvalidArgument(f"watch start_revision must be at least 1, got {start_revision}")
        else:
            replay_from = self._history.first_seq_at(start_revision)
        watch = MemoryWatch(
            self._history,
            prefix,
            min_revision=start_revision,
            replay_from_seq=replay_from,
            buffer=self._watch_buffer,
            on_close=self._watches.discard,
        )
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
            seq = self._history.append(event)
            for watch in list(self._watches):
                watch.feed(seq, event)
