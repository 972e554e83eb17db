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
``EvictionPolicy`` is the seam for a better policy than plain LRU
(DESIGN.md): it only ranks LOADED entries, it never touches accounting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

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


class EvictionPolicy(Protocol):
    def choose_victims(self, candidates: Iterable[CacheEntry], needed_bytes: int) -> list[CacheEntry]:
        """Pick LOADED entries whose sizes add up to at least ``needed_bytes`` (fewer if impossible)."""
        ...


class LruPolicy:
    """ModelMesh's policy: evict the least recently used first (oldest ``last_used_ms``)."""

    def choose_victims(self, candidates: Iterable[CacheEntry], needed_bytes: int) -> list[CacheEntry]:
        victims: list[CacheEntry] = []
        freed = 0
        for entry in sorted(candidates, key=lambda e: (e.last_used_ms, e.model_id)):
            if freed >= needed_bytes:
                break
            victims.append(entry)
            freed += entry.size_bytes
        return victims


class CacheLedger:
    """Bytes accounting of the copies in one instance. Pure: no I/O, times passed in."""

    def __init__(self, capacity_bytes: int, policy: EvictionPolicy | None = None) -> None:
        if capacity_bytes <= 0:
            raise ValueError("capacity_bytes must be positive")
        self.capacity_bytes = capacity_bytes
        self.policy: EvictionPolicy = policy or LruPolicy()
        self._entries: dict[ModelId, CacheEntry] = {}
        self._oldest: CacheEntry | None = None  # cached answer of lru_time_ms; None = recompute
        self._used = 0  # the entries' sizes plus ``_unaccounted``
        self._unaccounted = 0

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
        return sum(e.size_bytes for e in self._entries.values() if e.state is CopyState.UNLOADING)

    # -- admission -------------------------------------------------------------------------------
    def check_fits_at_all(self, model_id: ModelId, size_bytes: int) -> None:
        if size_bytes > self.capacity_bytes:
            raise CapacityExceeded(
                f"model '{model_id}' needs {size_bytes} bytes but the instance capacity is "
                f"{self.capacity_bytes} bytes"
            )

    def try_reserve(self, model_id: ModelId, size_bytes: int, last_used_ms: int) -> bool:
        """Add a LOADING entry of ``size_bytes`` if it fits now; False if space must be made first."""
        _check_size(model_id, size_bytes)
        self.check_fits_at_all(model_id, size_bytes)
        if model_id in self._entries:
            raise ValueError(f"model '{model_id}' already has an entry in this cache")
        if self._used + size_bytes > self.capacity_bytes:
            return False
        self._entries[model_id] = CacheEntry(model_id, size_bytes, last_used_ms, CopyState.LOADING)
        self._used += size_bytes
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
        candidates = [
            e for e in self._entries.values() if e.state is CopyState.LOADED and e.model_id not in protected
        ]
        chosen = self.policy.choose_victims(candidates, shortfall)
        # Accounting must stay sound whatever a pluggable policy returns: only an evictable entry
        # of this ledger may become UNLOADING, each one once, and nothing changes if any is wrong.
        evictable = {id(e) for e in candidates}
        for victim in chosen:
            if id(victim) not in evictable:
                raise InternalError(
                    f"eviction policy {type(self.policy).__name__} chose model '{victim.model_id}', "
                    "which is not a LOADED, unprotected copy in this cache"
                )
        victims: list[ModelId] = []
        for victim in chosen:
            if victim.state is not CopyState.UNLOADING:  # skip one chosen twice
                victim.state = CopyState.UNLOADING
                victims.append(victim.model_id)
        return victims

    def mark_unloading(self, model_id: ModelId) -> bool:
        """Start an explicit unload (unregister). False if absent or already unloading."""
        entry = self._entries.get(model_id)
        if entry is None or entry.state is CopyState.UNLOADING:
            return False
        entry.state = CopyState.UNLOADING
        return True

    # -- completion ------------------------------------------------------------------------------
    def resize(self, model_id: ModelId, size_bytes: int) -> bool:
        """Set a copy's size to its measured value; False (nothing changed) if growth doesn't fit."""
        _check_size(model_id, size_bytes)
        entry = self._entry(model_id)
        delta = size_bytes - entry.size_bytes
        if delta > 0 and self._used + delta > self.capacity_bytes:
            return False
        entry.size_bytes = size_bytes
        self._used += delta
        return True

    def mark_loaded(self, model_id: ModelId, now_ms: int) -> None:
        entry = self._entry(model_id)
        entry.state = CopyState.LOADED
        entry.loaded_at_ms = now_ms
        oldest = self._oldest
        if oldest is not None and entry.last_used_ms < oldest.last_used_ms:
            self._oldest = entry

    def touch(self, model_id: ModelId, now_ms: int) -> None:
        entry = self._entries.get(model_id)
        if entry is not None and now_ms > entry.last_used_ms:
            entry.last_used_ms = now_ms
            if entry is self._oldest:
                self._oldest = None

    def release(self, model_id: ModelId) -> CacheEntry | None:
        """Drop an entry (load failed, or unload finished); its bytes become free."""
        entry = self._entries.pop(model_id, None)
        if entry is not None:
            self._used -= entry.size_bytes
        return entry


def _check_size(model_id: ModelId, size_bytes: int) -> None:
    # A negative size would lower ``used_bytes`` and let later reservations overfill the cache.
    if size_bytes < 0:
        raise ValueError(f"model '{model_id}': size must not be negative, got {size_bytes} bytes")
