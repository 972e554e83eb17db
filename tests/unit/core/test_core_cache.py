"""CacheLedger and LruPolicy: bytes accounting of one instance's cache, eviction by least recent use.

Times are plain integers (virtual epoch milliseconds); nothing here sleeps or does I/O.
"""

from __future__ import annotations

import pytest

from kserve_mesh.core.cache import CacheEntry, CacheLedger, LruPolicy
from kserve_mesh.core.errors import CapacityExceeded, InternalError
from kserve_mesh.core.ids import ModelId
from kserve_mesh.core.records import CopyState

M = ModelId


def loaded(ledger: CacheLedger, model: str, size: int, last_used: int, now: int = 0) -> None:
    assert ledger.try_reserve(M(model), size, last_used)
    ledger.mark_loaded(M(model), now)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity_bytes"):
        CacheLedger(0)


def test_reserve_counts_bytes_as_loading_until_marked_loaded() -> None:
    ledger = CacheLedger(100)
    assert ledger.try_reserve(M("a"), 40, last_used_ms=5)
    entry = ledger.get(M("a"))
    assert entry is not None and entry.state is CopyState.LOADING
    assert (ledger.used_bytes, ledger.free_bytes) == (40, 60)
    ledger.mark_loaded(M("a"), now_ms=7)
    assert entry.state is CopyState.LOADED and entry.loaded_at_ms == 7
    assert ledger.count() == 1 and ledger.count(CopyState.LOADED) == 1 and ledger.count(CopyState.LOADING) == 0


def test_reserve_refuses_what_does_not_fit_now_without_changing_anything() -> None:
    ledger = CacheLedger(100)
    assert ledger.try_reserve(M("a"), 70, 1)
    assert not ledger.try_reserve(M("b"), 31, 2)
    assert ledger.get(M("b")) is None and ledger.used_bytes == 70
    assert ledger.try_reserve(M("b"), 30, 2)  # exactly full is allowed
    assert ledger.used_bytes == 100 and ledger.free_bytes == 0


def test_reserve_twice_for_one_model_is_a_bug_reported_clearly() -> None:
    ledger = CacheLedger(100)
    ledger.try_reserve(M("a"), 10, 1)
    with pytest.raises(ValueError, match="'a' already has an entry"):
        ledger.try_reserve(M("a"), 10, 1)


def test_model_bigger_than_capacity_is_capacity_exceeded_not_a_wait() -> None:
    ledger = CacheLedger(100)
    with pytest.raises(CapacityExceeded) as info:
        ledger.try_reserve(M("huge"), 101, 1)
    assert "'huge'" in str(info.value) and "101" in str(info.value) and "100" in str(info.value)
    with pytest.raises(CapacityExceeded):
        ledger.check_fits_at_all(M("huge"), 101)
    ledger.check_fits_at_all(M("ok"), 100)
    assert ledger.used_bytes == 0 and ledger.count() == 0


def test_plan_eviction_takes_least_recently_used_first_and_keeps_their_bytes_until_release() -> None:
    ledger = CacheLedger(100)
    loaded(ledger, "new", 30, last_used=300)
    loaded(ledger, "old", 30, last_used=100)
    loaded(ledger, "mid", 30, last_used=200)
    victims = ledger.plan_eviction(40)  # 10 free, 30 short: one victim suffices
    assert victims == [M("old")]
    assert ledger.get(M("old")).state is CopyState.UNLOADING  # type: ignore[union-attr]
    assert ledger.used_bytes == 90 and ledger.unloading_bytes() == 30
    assert not ledger.try_reserve(M("x"), 40, 1)  # the unload has not finished
    released = ledger.release(M("old"))
    assert released is not None and released.model_id == "old"
    assert ledger.used_bytes == 60
    assert ledger.try_reserve(M("x"), 40, 1)
    assert ledger.used_bytes == 100


def test_plan_eviction_takes_as_many_victims_as_needed_oldest_first() -> None:
    ledger = CacheLedger(100)
    for i, model in enumerate(["a", "b", "c", "d"]):
        loaded(ledger, model, 25, last_used=10 * (4 - i))  # d oldest, a newest
    assert ledger.plan_eviction(60) == [M("d"), M("c"), M("b")]
    assert [e.model_id for e in ledger.entries() if e.state is CopyState.LOADED] == [M("a")]


def test_plan_eviction_counts_bytes_already_unloading() -> None:
    ledger = CacheLedger(100)
    loaded(ledger, "a", 50, last_used=1)
    loaded(ledger, "b", 50, last_used=2)
    assert ledger.plan_eviction(50) == [M("a")]
    # A second caller with the same need finds the bytes already on their way out.
    assert ledger.plan_eviction(50) == []
    assert ledger.get(M("b")).state is CopyState.LOADED  # type: ignore[union-attr]


def test_plan_eviction_when_space_is_free_evicts_nothing() -> None:
    ledger = CacheLedger(100)
    loaded(ledger, "a", 50, last_used=1)
    assert ledger.plan_eviction(50) == []
    assert ledger.count(CopyState.UNLOADING) == 0


def test_plan_eviction_skips_protected_loading_and_unloading_entries() -> None:
    ledger = CacheLedger(100)
    loaded(ledger, "in-use", 20, last_used=1)
    assert ledger.try_reserve(M("loading"), 20, last_used_ms=0)
    loaded(ledger, "leaving", 20, last_used=2)
    assert ledger.mark_unloading(M("leaving"))
    loaded(ledger, "cold", 20, last_used=3)
    loaded(ledger, "warm", 20, last_used=4)
    # free 0, unloading 20; 60 more needed -> 40 short.
    assert ledger.plan_eviction(60, protect=[M("in-use")]) == [M("cold"), M("warm")]
    assert ledger.get(M("loading")).state is CopyState.LOADING  # type: ignore[union-attr]
    assert ledger.get(M("in-use")).state is CopyState.LOADED  # type: ignore[union-attr]


def test_plan_eviction_takes_what_there_is_when_it_cannot_free_enough() -> None:
    ledger = CacheLedger(100)
    loaded(ledger, "a", 30, last_used=1)
    assert ledger.try_reserve(M("loading"), 70, 0)
    assert ledger.plan_eviction(100) == [M("a")]


def test_lru_ties_are_broken_by_model_id() -> None:
    ledger = CacheLedger(100)
    loaded(ledger, "b", 50, last_used=1)
    loaded(ledger, "a", 50, last_used=1)
    assert ledger.plan_eviction(50) == [M("a")]


def test_touch_moves_a_model_to_the_young_end_and_never_backwards() -> None:
    ledger = CacheLedger(100)
    loaded(ledger, "a", 50, last_used=1)
    loaded(ledger, "b", 50, last_used=2)
    ledger.touch(M("a"), 10)
    ledger.touch(M("a"), 5)  # an older stamp arriving late does not make it colder
    assert ledger.get(M("a")).last_used_ms == 10  # type: ignore[union-attr]
    assert ledger.plan_eviction(50) == [M("b")]
    ledger.touch(M("absent"), 10)  # no entry: nothing to do, no error
    assert ledger.get(M("absent")) is None


def test_lru_time_is_the_oldest_loaded_stamp() -> None:
    ledger = CacheLedger(100)
    assert ledger.lru_time_ms(default=999) == 999
    assert ledger.try_reserve(M("loading"), 10, last_used_ms=1)
    assert ledger.lru_time_ms(default=999) == 999  # loading copies are not part of the cache age
    loaded(ledger, "a", 10, last_used=50)
    loaded(ledger, "b", 10, last_used=30)
    assert ledger.lru_time_ms(default=999) == 30
    ledger.touch(M("b"), 70)
    assert ledger.lru_time_ms(default=999) == 50


def test_resize_to_measured_size_shrinks_always_and_grows_only_into_free_space() -> None:
    ledger = CacheLedger(100)
    assert ledger.try_reserve(M("a"), 50, 1)
    assert ledger.try_reserve(M("b"), 30, 1)
    assert ledger.resize(M("a"), 20)
    assert ledger.used_bytes == 50 and ledger.get(M("a")).size_bytes == 20  # type: ignore[union-attr]
    assert ledger.resize(M("a"), 70)  # exactly fills the capacity
    assert ledger.used_bytes == 100
    assert not ledger.resize(M("b"), 31)
    assert ledger.used_bytes == 100 and ledger.get(M("b")).size_bytes == 30  # type: ignore[union-attr]


def test_resize_after_eviction_makes_room_for_growth() -> None:
    """The cache manager's path: plan_eviction(delta) -> unload -> release -> resize succeeds."""
    ledger = CacheLedger(100)
    loaded(ledger, "cold", 50, last_used=1)
    assert ledger.try_reserve(M("new"), 40, 5)
    assert not ledger.resize(M("new"), 61)  # 11 more, only 10 free
    assert ledger.plan_eviction(21, protect=[M("new")]) == [M("cold")]
    ledger.release(M("cold"))
    assert ledger.resize(M("new"), 61)
    assert ledger.used_bytes == 61


def test_negative_sizes_are_refused() -> None:
    ledger = CacheLedger(100)
    with pytest.raises(ValueError, match="'a'"):
        ledger.try_reserve(M("a"), -1, 1)
    assert ledger.try_reserve(M("a"), 10, 1)
    with pytest.raises(ValueError, match="'a'"):
        ledger.resize(M("a"), -5)
    assert ledger.used_bytes == 10


def test_mark_unloading_and_release_are_idempotent() -> None:
    ledger = CacheLedger(100)
    loaded(ledger, "a", 10, last_used=1)
    assert ledger.mark_unloading(M("a"))
    assert not ledger.mark_unloading(M("a"))
    assert not ledger.mark_unloading(M("absent"))
    assert ledger.release(M("a")) is not None
    assert ledger.release(M("a")) is None
    assert ledger.used_bytes == 0 and ledger.count() == 0


def test_resize_or_mark_loaded_of_an_unknown_model_names_it() -> None:
    ledger = CacheLedger(100)
    with pytest.raises(KeyError, match="'ghost' has no entry"):
        ledger.resize(M("ghost"), 10)
    with pytest.raises(KeyError, match="'ghost' has no entry"):
        ledger.mark_loaded(M("ghost"), 1)


def test_release_of_a_failed_load_frees_its_reservation() -> None:
    ledger = CacheLedger(100)
    assert ledger.try_reserve(M("a"), 60, 1)
    ledger.release(M("a"))
    assert ledger.free_bytes == 100


def test_policy_is_pluggable() -> None:
    class BiggestFirst:
        def choose_victims(self, candidates, needed_bytes):  # type: ignore[no-untyped-def]
            return sorted(candidates, key=lambda e: -e.size_bytes)[:1]

    ledger = CacheLedger(100, BiggestFirst())
    loaded(ledger, "small-old", 10, last_used=1)
    loaded(ledger, "big-new", 80, last_used=9)
    assert ledger.plan_eviction(20) == [M("big-new")]


def test_a_policy_cannot_evict_what_is_not_evictable() -> None:
    class Rogue:
        def __init__(self, ledger: CacheLedger) -> None:
            self.ledger = ledger

        def choose_victims(self, candidates, needed_bytes):  # type: ignore[no-untyped-def]
            return [self.ledger.get(M("a")), self.ledger.get(M("loading"))]

    ledger = CacheLedger(100)
    ledger.policy = Rogue(ledger)
    loaded(ledger, "a", 50, last_used=1)
    assert ledger.try_reserve(M("loading"), 50, 1)
    with pytest.raises(InternalError, match="Rogue chose model 'loading'"):
        ledger.plan_eviction(10)
    # Nothing was marked: the valid victim chosen alongside stays LOADED.
    assert ledger.get(M("a")).state is CopyState.LOADED  # type: ignore[union-attr]
    assert ledger.get(M("loading")).state is CopyState.LOADING  # type: ignore[union-attr]


def test_a_victim_chosen_twice_is_unloaded_once() -> None:
    class Twice:
        def choose_victims(self, candidates, needed_bytes):  # type: ignore[no-untyped-def]
            first = min(candidates, key=lambda e: e.last_used_ms)
            return [first, first]

    ledger = CacheLedger(100, Twice())
    loaded(ledger, "a", 50, last_used=1)
    loaded(ledger, "b", 50, last_used=2)
    assert ledger.plan_eviction(10) == [M("a")]


def test_lru_policy_alone_stops_once_enough_is_freed() -> None:
    entries = [CacheEntry(M(n), s, t, CopyState.LOADED) for n, s, t in [("a", 5, 3), ("b", 5, 1), ("c", 5, 2)]]
    assert [e.model_id for e in LruPolicy().choose_victims(entries, 6)] == ["b", "c"]
    assert LruPolicy().choose_victims(entries, 0) == []
