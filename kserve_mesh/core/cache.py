"""Capacity accounting of one instance's model cache, in bytes, with a pluggable eviction policy.

Every copy in the cache is an entry counted against capacity for as long as it holds (or may hold)
memory: while LOADING (its reserved, predicted size), LOADED (its measured size) and UNLOADING (until
the runtime confirms the memory is released). The ledger's one invariant is
``used_bytes <= capacity_bytes`` at every moment; any operation that would break it is refused, and
the caller (the mesh) evicts, waits for unloads, and asks again.

Making room is two steps because unloads take time: ``plan_eviction`` picks victims with the policy
and marks them UNLOADING (their bytes stay counted), the mesh unloads them, ``release`` drops them,
and ``try_reserve`` then succeeds.

Memory no copy accounts for (the runtime process holds more than its copies' sizes: allocator
fragmentation, leaks) can be counted as used too (``count_unaccounted``, issue 16): it is clamped to
the free space, so the invariant holds, and what did not fit is returned for the caller to evict.
The eviction policy is a seam (DESIGN.md): a ``TrackingPolicy`` sees every copy that starts
loading (a miss), every access, each load's measured time and size, and each copy that leaves; it
orders victims. The ledger keeps every invariant itself: it offers only LOADED, unprotected entries
of its own as victims, refuses anything else a policy returns, and does the accounting. ``LruPolicy``
(ModelMesh's policy, the default) and ``AdaptivePolicy`` (``core/eviction.py``) are both tracking
policies; a plain ``EvictionPolicy`` (``choose_victims`` over a candidate list) still plugs in.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kserve_mesh.core.errors import CapacityExceeded, InternalError
from kserve_mesh.core.ids import ModelId
from kserve_mesh.core.records import CopyState


@dataclass(slots=True)
class CacheEntry:
    model_id: ModelId
    size_bytes: int
    last_used_ms: int
    state: CopyState
    loaded_at_ms: int = 0
    load_ms: float = 0.0  # the measured time of its load (0 until loaded)
    hits: int = 0  # requests that found it LOADED (since its load)
    slot: Any = field(default=None, compare=False, repr=False)  # the tracking policy's handle


class EvictionPolicy(Protocol):
    def choose_victims(self, candidates: Iterable[CacheEntry], needed_bytes: int) -> list[CacheEntry]:
        """Pick LOADED entries whose sizes add up to at least ``needed_bytes`` (fewer if impossible)."""
        ...


Evictable = Callable[[CacheEntry], bool]


class TrackingPolicy:
    """The widened seam: a policy that follows the cache's life and keeps its own victim order.

    The ledger tells it: ``on_reserve`` (a copy starts loading: a miss), ``on_access`` (a request
    used a copy, ``now_ms`` its stamp), ``on_loaded`` (the load ended: measured time, and the entry's
    measured size), ``on_resize``, ``on_remove`` (the copy left: ``evicted`` when the policy chose
    it). ``select_victims`` returns LOADED entries for which ``evictable`` is true, in eviction order,
    whose sizes add up to at least ``needed_bytes`` (fewer if impossible); the ledger checks them.
    ``entry.slot`` is the policy's own per-entry handle. Hooks must be O(log n) or better.
    """

    name = "base"

    def attach(self, capacity_bytes: int) -> None:
        """The ledger it serves, of ``capacity_bytes``, takes it (before any other call)."""

    def on_reserve(self, entry: CacheEntry, now_ms: int, prefetch: bool = False) -> None:
        """``prefetch``: no request waits for this copy; the mesh chose to place it (an explicit
        load, a copy re-homed from an instance that leaves, an extra copy of a hot model)."""

    def on_access(self, entry: CacheEntry, now_ms: int, counted: bool = True) -> None:
        """``counted=False``: only the last-used stamp moved (the miss was ``on_reserve``)."""

    def on_loaded(self, entry: CacheEntry, load_ms: float) -> None:
        pass

    def on_resize(self, entry: CacheEntry, old_size: int) -> None:
        pass

    def on_remove(self, entry: CacheEntry, evicted: bool) -> None:
        pass

    def select_victims(self, needed_bytes: int, evictable: Evictable) -> list[CacheEntry]:
        raise NotImplementedError

    def next_victim_value(self) -> float | None:
        """How much the copy that would go first is worth (policy units, higher = keep), or None."""
        return None

    def stats(self) -> dict[str, float]:
        """The policy's own counters (metrics)."""
        return {}


class LruPolicy(TrackingPolicy):
    """ModelMesh's policy: evict the least recently used first (oldest ``last_used_ms``, then id).

    A heap of ``(last_used_ms, model_id, entry)`` with lazy deletion: an item is current while it is
    its entry's ``slot``; a touch pushes a new item. Victims come out in exactly the order of
    ``choose_victims`` (a sort of the candidates), in O(log n) each.
    """

    name = "lru"

    def __init__(self) -> None:
        self._heap: list[tuple[int, str, int, CacheEntry]] = []
        self._live = 0
        self._seq = 0

    def choose_victims(self, candidates: Iterable[CacheEntry], needed_bytes: int) -> list[CacheEntry]:
        victims: list[CacheEntry] = []
        freed = 0
        for entry in sorted(candidates, key=lambda e: (e.last_used_ms, e.model_id)):
            if freed >= needed_bytes:
                break
            victims.append(entry)
            freed += entry.size_bytes
        return victims

    def _push(self, entry: CacheEntry) -> None:
        self._seq += 1
        item = (entry.last_used_ms, entry.model_id, self._seq, entry)
        entry.slot = item
        heapq.heappush(self._heap, item)
        if len(self._heap) > 2 * self._live + 64:  # drop stale items: amortised O(1)
            self._heap = [it for it in self._heap if it[3].slot is it]
            heapq.heapify(self._heap)

    def on_reserve(self, entry: CacheEntry, now_ms: int, prefetch: bool = False) -> None:
        self._live += 1
        self._push(entry)

    def on_access(self, entry: CacheEntry, now_ms: int, counted: bool = True) -> None:
        slot = entry.slot
        if slot is not None and slot[0] != entry.last_used_ms:
            self._push(entry)

    def on_remove(self, entry: CacheEntry, evicted: bool) -> None:
        if entry.slot is not None:
            entry.slot = None
            self._live -= 1

    def select_victims(self, needed_bytes: int, evictable: Evictable) -> list[CacheEntry]:
        heap = self._heap
        victims: list[CacheEntry] = []
        kept: list[tuple[int, str, int, CacheEntry]] = []
        freed = 0
        while freed < needed_bytes and heap:
            item = heapq.heappop(heap)
            entry = item[3]
            if entry.slot is not item:
                continue  # stale
            kept.append(item)  # a victim stays in the order until the ledger removes it
            if evictable(entry):
                victims.append(entry)
                freed += entry.size_bytes
        for item in kept:
            heapq.heappush(heap, item)
        return victims

    def next_victim_value(self) -> float | None:
        heap = self._heap
        while heap and heap[0][3].slot is not heap[0]:
            heapq.heappop(heap)
        return float(heap[0][0]) if heap else None


class CacheLedger:
    """Bytes accounting of the copies in one instance. Pure: no I/O, times passed in."""

    def __init__(self, capacity_bytes: int, policy: EvictionPolicy | None = None) -> None:
        if capacity_bytes <= 0:
            raise ValueError("capacity_bytes must be positive")
        self.capacity_bytes = capacity_bytes
        self._entries: dict[ModelId, CacheEntry] = {}
        self._oldest: CacheEntry | None = None  # cached answer of lru_time_ms; None = recompute
        self._used = 0  # the entries' sizes plus ``_unaccounted``
        self._unaccounted = 0
        self._unloading = 0  # bytes of UNLOADING entries
        self._tracking: TrackingPolicy | None = None
        self.policy = policy if policy is not None else LruPolicy()
        # the cache's own counters, whatever the policy (metrics): copies reserved (misses), accesses
        # that found a LOADED copy (hits), copies evicted, and of those the ones never hit after
        # their load (the policy let them in, then found them worth less than what stayed)
        self.misses = 0
        self.hits = 0
        self.evictions = 0
        self.evicted_unused = 0

    @property
    def policy(self) -> EvictionPolicy | TrackingPolicy:
        return self._policy

    @policy.setter
    def policy(self, policy: EvictionPolicy | TrackingPolicy) -> None:
        """Set the policy; a tracking policy is told of the entries already here."""
        self._policy = policy
        self._tracking = policy if isinstance(policy, TrackingPolicy) else None
        if self._tracking is not None:
            self._tracking.attach(self.capacity_bytes)
        for entry in self._entries.values():
            entry.slot = None
            if self._tracking is not None:
                self._tracking.on_reserve(entry, entry.last_used_ms)
                if entry.state is not CopyState.LOADING:
                    self._tracking.on_loaded(entry, entry.load_ms)

    # -- reading ---------------------------------------------------------------------------------
    @property
    def used_bytes(self) -> int:
        return self._used

    @property
    def accounted_bytes(self) -> int:
        """The copies' sizes alone (``used_bytes`` less the unaccounted memory counted as used)."""
        return self._used - self._unaccounted

    @property
    def unaccounted_bytes(self) -> int:
        """Memory no copy accounts for, counted as used (``count_unaccounted``)."""
        return self._unaccounted

    @property
    def free_bytes(self) -> int:
        return self.capacity_bytes - self._used

    def get(self, model_id: ModelId) -> CacheEntry | None:
        return self._entries.get(model_id)

    def _entry(self, model_id: ModelId) -> CacheEntry:
        entry = self._entries.get(model_id)
        if entry is None:
            raise KeyError(f"model '{model_id}' has no entry in this cache")
        return entry

    def entries(self) -> list[CacheEntry]:
        return list(self._entries.values())

    def count(self, state: CopyState | None = None) -> int:
        if state is None:
            return len(self._entries)
        return sum(1 for e in self._entries.values() if e.state is state)

    def lru_time_ms(self, default: int) -> int:
        """Oldest last-used time among LOADED copies (the instance's "cache age"), or ``default``.

        It is published and scraped often and a cache can hold tens of thousands of copies, so the
        oldest entry is remembered and only looked for again when it changes (it was used,
        unloaded or evicted): with many models, rarely.
        """
        oldest = self._oldest
        if oldest is None or oldest.state is not CopyState.LOADED or self._entries.get(oldest.model_id) is not oldest:
            oldest = None
            for entry in self._entries.values():
                if entry.state is CopyState.LOADED and (oldest is None or entry.last_used_ms < oldest.last_used_ms):
                    oldest = entry
            self._oldest = oldest
        return oldest.last_used_ms if oldest is not None else default

    def count_unaccounted(self, wanted_bytes: int) -> int:
        """Count ``wanted_bytes`` of memory that no copy accounts for as used, as far as it fits
        (it takes only free space: ``used_bytes`` never exceeds capacity). Returns the bytes that did
        not fit, for the caller to evict; 0 when all of it is counted. ``0`` stops counting."""
        wanted = max(0, wanted_bytes)
        counted = min(wanted, self.capacity_bytes - self.accounted_bytes)
        self._used += counted - self._unaccounted
        self._unaccounted = counted
        return wanted - counted

    def unloading_bytes(self) -> int:
        return self._unloading

    def next_victim_value(self) -> float | None:
        """The tracking policy's value of the copy it would evict first (None: nothing, or no
        tracking policy). Published for placement: a new copy goes where it displaces least."""
        return self._tracking.next_victim_value() if self._tracking is not None else None

    def policy_stats(self) -> dict[str, float]:
        """The cache's counters and the tracking policy's own numbers (``TrackingPolicy.stats``)."""
        requests = self.hits + self.misses
        out = {
            "requests": float(requests),
            "hits": float(self.hits),
            "hit_ratio": self.hits / requests if requests else 0.0,
            "evictions": float(self.evictions),
            "evicted_unused": float(self.evicted_unused),
        }
        if self._tracking is not None:
            out.update(self._tracking.stats())
        return out

    @property
    def policy_name(self) -> str:
        return getattr(self._policy, "name", type(self._policy).__name__)

    def _set_state(self, entry: CacheEntry, state: CopyState) -> None:
        if entry.state is CopyState.UNLOADING:
            self._unloading -= entry.size_bytes
        if state is CopyState.UNLOADING:
            self._unloading += entry.size_bytes
        entry.state = state

    # -- admission -------------------------------------------------------------------------------
    def check_fits_at_all(self, model_id: ModelId, size_bytes: int) -> None:
        if size_bytes > self.capacity_bytes:
            raise CapacityExceeded(
                f"model '{model_id}' needs {size_bytes} bytes but the instance capacity is "
                f"{self.capacity_bytes} bytes"
            )

    def try_reserve(self, model_id: ModelId, size_bytes: int, last_used_ms: int, *, prefetch: bool = False) -> bool:
        """Add a LOADING entry of ``size_bytes`` if it fits now; False if space must be made first.
        ``prefetch``: no request waits for it (the tracking policy's ``on_reserve``)."""
        _check_size(model_id, size_bytes)
        self.check_fits_at_all(model_id, size_bytes)
        if model_id in self._entries:
            raise ValueError(f"model '{model_id}' already has an entry in this cache")
        if self._used + size_bytes > self.capacity_bytes:
            return False
        entry = CacheEntry(model_id, size_bytes, last_used_ms, CopyState.LOADING)
        self._entries[model_id] = entry
        self._used += size_bytes
        self.misses += 1
        if self._tracking is not None:
            self._tracking.on_reserve(entry, last_used_ms, prefetch)
        return True

    def plan_eviction(self, needed_bytes: int, *, protect: Iterable[ModelId] = ()) -> list[ModelId]:
        """Mark LOADED victims UNLOADING so that ``needed_bytes`` more will be free once they unload.

        Bytes already on their way out (UNLOADING) count towards the need, so concurrent callers do
        not evict more than necessary. Returns the newly chosen victims (possibly none).
        """
        shortfall = needed_bytes - self.free_bytes - self.unloading_bytes()
        if shortfall <= 0:
            return []
        protected = set(protect)
        entries = self._entries

        def evictable(e: CacheEntry) -> bool:
            return e.state is CopyState.LOADED and e.model_id not in protected and entries.get(e.model_id) is e

        if self._tracking is not None:
            chosen = self._tracking.select_victims(shortfall, evictable)
        else:
            candidates = [e for e in entries.values() if evictable(e)]
            chosen = self._policy.choose_victims(candidates, shortfall)  # type: ignore[union-attr]
        # Accounting must stay sound whatever a pluggable policy returns: only an evictable entry
        # of this ledger may become UNLOADING, each one once, and nothing changes if any is wrong.
        for victim in chosen:
            if not evictable(victim):
                raise InternalError(
                    f"eviction policy {type(self._policy).__name__} chose model '{victim.model_id}', "
                    "which is not a LOADED, unprotected copy in this cache"
                )
        victims: list[ModelId] = []
        seen: set[int] = set()
        for victim in chosen:
            if id(victim) not in seen and victim.state is not CopyState.UNLOADING:  # skip one chosen twice
                seen.add(id(victim))
                self._set_state(victim, CopyState.UNLOADING)
                victims.append(victim.model_id)
                self.evictions += 1
                if not victim.hits:
                    self.evicted_unused += 1
                if self._tracking is not None:
                    self._tracking.on_remove(victim, True)
        return victims

    def mark_unloading(self, model_id: ModelId) -> bool:
        """Start an explicit unload (unregister). False if absent or already unloading."""
        entry = self._entries.get(model_id)
        if entry is None or entry.state is CopyState.UNLOADING:
            return False
        self._set_state(entry, CopyState.UNLOADING)
        if self._tracking is not None:
            self._tracking.on_remove(entry, False)
        return True

    # -- completion ------------------------------------------------------------------------------
    def resize(self, model_id: ModelId, size_bytes: int) -> bool:
        """Set a copy's size to its measured value; False (nothing changed) if growth doesn't fit."""
        _check_size(model_id, size_bytes)
        entry = self._entry(model_id)
        delta = size_bytes - entry.size_bytes
        if delta > 0 and self._used + delta > self.capacity_bytes:
            return False
        old = entry.size_bytes
        entry.size_bytes = size_bytes
        self._used += delta
        if entry.state is CopyState.UNLOADING:
            self._unloading += delta
        if self._tracking is not None and delta:
            self._tracking.on_resize(entry, old)
        return True

    def mark_loaded(self, model_id: ModelId, now_ms: int, load_ms: float | None = None) -> None:
        """The copy's load ended (``load_ms``: how long it took, measured; None: not measured)."""
        entry = self._entry(model_id)
        self._set_state(entry, CopyState.LOADED)
        entry.loaded_at_ms = now_ms
        if load_ms is not None:
            entry.load_ms = max(0.0, float(load_ms))
        oldest = self._oldest
        if oldest is not None and entry.last_used_ms < oldest.last_used_ms:
            self._oldest = entry
        if self._tracking is not None:
            self._tracking.on_loaded(entry, entry.load_ms)

    def record_load_time(self, model_id: ModelId, load_ms: float) -> None:
        """The measured time of a copy's load, known after ``mark_loaded`` (the cache manager)."""
        entry = self._entries.get(model_id)
        if entry is not None and load_ms > 0 and entry.state is not CopyState.LOADING:
            entry.load_ms = float(load_ms)
            if self._tracking is not None and entry.state is CopyState.LOADED:
                self._tracking.on_loaded(entry, entry.load_ms)

    def touch(self, model_id: ModelId, now_ms: int, *, counted: bool = True) -> None:
        """A request used the copy at ``now_ms`` (its last-used stamp moves forward only).

        ``counted=False``: the request that waited for this copy's load (its miss was counted when
        the copy was reserved): the stamp moves, but it is no second access and no hit."""
        entry = self._entries.get(model_id)
        if entry is None:
            return
        if now_ms > entry.last_used_ms:
            entry.last_used_ms = now_ms
            if entry is self._oldest:
                self._oldest = None
        if counted and entry.state is CopyState.LOADED:
            entry.hits += 1
            self.hits += 1
        if self._tracking is not None:
            self._tracking.on_access(entry, now_ms, counted)

    def release(self, model_id: ModelId) -> CacheEntry | None:
        """Drop an entry (load failed, or unload finished); its bytes become free."""
        entry = self._entries.pop(model_id, None)
        if entry is not None:
            self._used -= entry.size_bytes
            if entry.state is CopyState.UNLOADING:
                self._unloading -= entry.size_bytes
            if self._tracking is not None:
                self._tracking.on_remove(entry, False)
        return entry


def _check_size(model_id: ModelId, size_bytes: int) -> None:
    # A negative size would lower ``used_bytes`` and let later reservations overfill the cache.
    if size_bytes < 0:
        raise ValueError(f"model '{model_id}': size must not be negative, got {size_bytes} bytes")
