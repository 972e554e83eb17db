"""MemoryStore behaviour: the Store contract every adapter must keep (see store/base.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from kserve_mesh.core.errors import InvalidArgument, Unavailable
from kserve_mesh.store import (
    Compacted,
    Compare,
    Delete,
    EventType,
    Get,
    LeaseNotFound,
    MemoryStore,
    Put,
    WatchEvent,
)
from kserve_mesh.store.memory_watch import MemoryWatch

WAIT_S = 2.0


class FakeClock:
    """Monotonic time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(clock: FakeClock) -> AsyncIterator[MemoryStore]:
    async with MemoryStore(clock=clock, reap_interval_s=0.01) as s:
        yield s


async def next_event(watch: MemoryWatch) -> WatchEvent:
    return await asyncio.wait_for(watch.__anext__(), WAIT_S)


async def take(watch: MemoryWatch, n: int) -> list[WatchEvent]:
    return [await next_event(watch) for _ in range(n)]


# ---- basic reads and writes ----


async def test_put_get_delete_and_revisions(store: MemoryStore) -> None:
    assert await store.get("k") is None
    assert await store.revision() == 0
    r1 = await store.put("k", b"v1")
    r2 = await store.put("k", b"v2")
    assert (r1, r2) == (1, 2)
    kv = await store.get("k")
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"v2", 1, 2, 2)
    assert await store.delete("k") is True
    assert await store.delete("k") is False
    assert await store.get("k") is None
    assert await store.revision() == 3  # deleting an absent key does not bump the revision
    await store.put("k", b"again")
    kv = await store.get("k")
    assert kv is not None and (kv.create_revision, kv.version) == (4, 1)


async def test_rejects_non_bytes_values_without_bumping_revision(store: MemoryStore) -> None:
    with pytest.raises(InvalidArgument, match="bytes"):
        await store.put("k", "text")  # type: ignore[arg-type]
    assert await store.revision() == 0


# ---- compare-and-set ----


async def test_create_only_succeeds_once(store: MemoryStore) -> None:
    first = await store.put_if("k", b"a", expected_mod_revision=0)
    assert first.succeeded and first.current is not None and first.current.value == b"a"
    second = await store.put_if("k", b"b", expected_mod_revision=None)
    assert not second
    assert second.current is not None and second.current.value == b"a"
    assert second.revision == first.revision  # a failed CAS writes nothing
    kv = await store.get("k")
    assert kv is not None and kv.value == b"a"


async def test_update_only_if_unchanged(store: MemoryStore) -> None:
    rev = await store.put("k", b"a")
    ok = await store.put_if("k", b"b", expected_mod_revision=rev)
    assert ok.succeeded and ok.current is not None and ok.current.mod_revision == rev + 1
    stale = await store.put_if("k", b"c", expected_mod_revision=rev)
    assert not stale.succeeded
    assert stale.current is not None and stale.current.value == b"b"
    absent = await store.put_if("other", b"x", expected_mod_revision=rev)
    assert not absent.succeeded and absent.current is None


async def test_delete_if(store: MemoryStore) -> None:
    rev = await store.put("k", b"a")
    assert not await store.delete_if("k", rev + 5)
    assert await store.get("k") is not None
    assert (await store.delete_if("k", rev)).succeeded
    assert await store.get("k") is None
    assert not (await store.delete_if("k", rev)).succeeded


# ---- transactions ----


async def test_transaction_swaps_two_keys_atomically(store: MemoryStore) -> None:
    ra = await store.put("vm/active", b"m1")
    rt = await store.put("vm/target", b"m2")
    watch = store.watch("vm/")
    result = await store.transaction(
        [Compare.unchanged("vm/active", ra), Compare.equals("vm/target", b"m2")],
        [Put("vm/active", b"m2"), Put("vm/target", b"m1"), Get("vm/active")],
        [Get("vm/active")],
    )
    assert result.succeeded
    assert result.revision == rt + 1
    assert result.responses[:2] == (rt + 1, rt + 1)
    got = result.responses[2]
    assert got is not None and not isinstance(got, (bool, int)) and got.value == b"m2"
    events = await take(watch, 2)
    assert [(e.kv.key, e.kv.value, e.revision) for e in events] == [
        ("vm/active", b"m2", rt + 1),
        ("vm/target", b"m1", rt + 1),
    ]
    await watch.aclose()


async def test_transaction_failure_branch_runs_and_writes_nothing_else(store: MemoryStore) -> None:
    await store.put("a", b"1")
    before = await store.revision()
    result = await store.transaction(
        [Compare.absent("a")], [Put("a", b"2"), Delete("b")], [Get("a"), Get("missing")]
    )
    assert not result.succeeded
    kv, missing = result.responses
    assert kv is not None and not isinstance(kv, (bool, int)) and kv.value == b"1"
    assert missing is None
    assert result.revision == before == await store.revision()


async def test_transaction_delete_and_duplicate_keys(store: MemoryStore) -> None:
    await store.put("a", b"1")
    result = await store.transaction([], [Delete("a"), Delete("nope")])
    assert result.succeeded and result.responses == (True, False)
    assert await store.get("a") is None
    with pytest.raises(InvalidArgument, match="at most once"):
        await store.transaction([], [Put("x", b"1"), Delete("x")])


async def test_compare_needs_exactly_one_target() -> None:
    with pytest.raises(InvalidArgument, match="exactly one"):
        Compare("k")


# ---- ranges ----


async def test_range_sorted_with_prefix_boundaries_and_limit(store: MemoryStore) -> None:
    for key in ["r/b", "r/a", "r/c/x", "r0", "r", "q/z", "r/a/deeper"]:
        await store.put(key, key.encode())
    got = await store.range("r/")
    assert [kv.key for kv in got] == ["r/a", "r/a/deeper", "r/b", "r/c/x"]
    assert got.revision == await store.revision() and not got.more
    limited = await store.range("r/", limit=2)
    assert [kv.key for kv in limited] == ["r/a", "r/a/deeper"] and limited.more
    exact = await store.range("r/", limit=4)
    assert len(exact) == 4 and not exact.more
    assert [kv.key for kv in await store.range("")][0] == "q/z"
    assert list(await store.range("nothing/")) == []
    await store.delete("r/a")
    assert [kv.key for kv in await store.range("r/a")] == ["r/a/deeper"]
    with pytest.raises(InvalidArgument, match="limit"):
        await store.range("r/", limit=0)


async def test_handles_100k_keys(store: MemoryStore) -> None:
    for i in range(100_000):
        await store.put(f"m/{(i * 7919) % 100_000:06d}", b"x")
    assert len(await store.range("m/")) == 100_000
    page = await store.range("m/0999", limit=5)
    assert [kv.key for kv in page] == [f"m/0999{d}{e}" for d, e in ["00", "01", "02", "03", "04"]]


# ---- watches ----


async def test_watch_sees_puts_and_deletes_in_order(store: MemoryStore) -> None:
    watch = store.watch("w/")
    await store.put("w/a", b"1")
    await store.put("other", b"ignored")
    await store.put("w/a", b"2")
    await store.delete("w/a")
    events = await take(watch, 3)
    assert [(e.type, e.kv.value) for e in events] == [
        (EventType.PUT, b"1"),
        (EventType.PUT, b"2"),
        (EventType.DELETE, b""),
    ]
    assert [e.revision for e in events] == [1, 3, 4]
    assert events[1].prev_kv is not None and events[1].prev_kv.value == b"1"
    assert events[2].prev_kv is not None and events[2].prev_kv.value == b"2"
    await watch.aclose()


async def test_watch_from_start_revision_replays_then_follows(store: MemoryStore) -> None:
    await store.put("w/a", b"1")
    r2 = await store.put("w/b", b"2")
    await store.delete("w/a")
    async with store.watch("w/", start_revision=r2) as watch:
        await store.put("w/c", b"3")
        events = await take(watch, 3)
    assert [(e.type, e.kv.key) for e in events] == [
        (EventType.PUT, "w/b"),
        (EventType.DELETE, "w/a"),
        (EventType.PUT, "w/c"),
    ]


async def test_range_then_watch_from_its_revision_misses_nothing(store: MemoryStore) -> None:
    await store.put("w/a", b"1")
    snapshot = await store.range("w/")
    await store.put("w/b", b"2")  # happens between the range and the watch
    async with store.watch("w/", start_revision=snapshot.revision + 1) as watch:
        event = await next_event(watch)
    assert event.kv.key == "w/b"


async def test_watch_close_ends_iteration_and_wakes_a_waiting_reader(store: MemoryStore) -> None:
    watch = store.watch("w/")

    async def consume() -> list[WatchEvent]:
        return [e async for e in watch]

    reader = asyncio.create_task(consume())
    await store.put("w/a", b"1")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    await watch.aclose()
    assert [e.kv.key for e in await asyncio.wait_for(reader, WAIT_S)] == ["w/a"]
    await store.put("w/b", b"2")  # a closed watch is no longer fed
    with pytest.raises(StopAsyncIteration):
        await next_event(watch)


async def test_slow_watch_resyncs_from_history_without_losing_events(clock: FakeClock) -> None:
    async with MemoryStore(clock=clock, watch_buffer=4, history_size=100) as store:
        watch = store.watch("s/")
        for i in range(30):
            await store.put(f"s/{i:02d}", b"x")
        events = await take(watch, 30)
        assert [e.kv.key for e in events] == [f"s/{i:02d}" for i in range(30)]
        await watch.aclose()


async def test_watch_that_falls_behind_history_fails_with_compacted(clock: FakeClock) -> None:
    async with MemoryStore(clock=clock, watch_buffer=2, history_size=5) as store:
        watch = store.watch("s/")
        for i in range(20):
            await store.put(f"s/{i:02d}", b"x")
        assert [e.kv.key for e in await take(watch, 2)] == ["s/00", "s/01"]
        with pytest.raises(Compacted):
            await next_event(watch)
        with pytest.raises(Compacted, match="compacted"):
            store.watch("s/", start_revision=1)
        await watch.aclose()


async def test_store_close_fails_watches_and_calls(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    watch = store.watch("")
    waiting = asyncio.create_task(next_event(watch))
    await asyncio.sleep(0)
    await store.close()
    with pytest.raises(Unavailable, match="closed"):
        await waiting
    with pytest.raises(Unavailable):
        await store.get("k")
    with pytest.raises(Unavailable):
        store.watch("")
    await store.close()  # idempotent


# ---- leases ----


async def test_lease_expiry_in_virtual_time_deletes_keys_and_notifies(
    store: MemoryStore, clock: FakeClock
) -> None:
    lease = await store.grant_lease(10)
    await store.put("i/one", b"1", lease=lease)
    await store.put("i/two", b"2", lease=lease)
    await store.put("i/free", b"3")
    watch = store.watch("i/")
    clock.advance(6)
    assert await store.keepalive(lease) == 10
    clock.advance(6)  # 12 s after grant, 6 s after keepalive: still alive
    assert await store.get("i/one") is not None
    clock.advance(5)
    # The background reaper deletes them without any other call.
    events = await take(watch, 2)
    assert {(e.type, e.kv.key) for e in events} == {
        (EventType.DELETE, "i/one"),
        (EventType.DELETE, "i/two"),
    }
    assert events[0].revision == events[1].revision  # one revision, like etcd's revoke
    assert [kv.key for kv in await store.range("i/")] == ["i/free"]
    with pytest.raises(LeaseNotFound, match="not found"):
        await store.keepalive(lease)
    with pytest.raises(LeaseNotFound):
        await store.put("i/late", b"x", lease=lease)
    await watch.aclose()


async def test_lease_expiry_is_checked_lazily_without_the_reaper(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)  # not started: no background task
    lease = await store.grant_lease(1)
    await store.put("k", b"v", lease=lease)
    clock.advance(1.5)
    assert await store.get("k") is None
    await store.close()


async def test_revoke_deletes_attached_keys_only(store: MemoryStore) -> None:
    lease = await store.grant_lease(30)
    other = await store.grant_lease(30)
    await store.put("a", b"1", lease=lease)
    await store.put("b", b"2", lease=lease)
    await store.put("b", b"3")  # re-put without lease detaches it
    await store.put("c", b"4", lease=other)
    watch = store.watch("")
    assert await store.revoke(lease) is True
    assert await store.revoke(lease) is False
    event = await next_event(watch)
    assert (event.type, event.kv.key) == (EventType.DELETE, "a")
    assert [kv.key for kv in await store.range("")] == ["b", "c"]
    await watch.aclose()


async def test_lease_bound_create_only_for_leader_election(
    store: MemoryStore, clock: FakeClock
) -> None:
    first = await store.grant_lease(5)
    second = await store.grant_lease(5)
    assert await store.put_if("leader", b"i1", expected_mod_revision=0, lease=first)
    assert not await store.put_if("leader", b"i2", expected_mod_revision=0, lease=second)
    clock.advance(3)
    await store.keepalive(second)
    clock.advance(3)  # first expires, second is still alive
    assert await store.put_if("leader", b"i2", expected_mod_revision=0, lease=second)
    with pytest.raises(InvalidArgument, match="positive"):
        await store.grant_lease(0)


async def test_transaction_with_a_dead_lease_writes_nothing(store: MemoryStore) -> None:
    lease = await store.grant_lease(5)
    await store.revoke(lease)
    before = await store.revision()
    with pytest.raises(LeaseNotFound):
        await store.transaction([], [Put("a", b"1"), Put("b", b"2", lease=lease)])
    assert await store.get("a") is None
    assert await store.revision() == before


async def test_watch_from_a_future_revision_skips_earlier_changes(store: MemoryStore) -> None:
    await store.put("w/a", b"1")
    async with store.watch("w/", start_revision=3) as watch:
        await store.put("w/b", b"2")  # revision 2: before the start
        await store.put("w/c", b"3")  # revision 3
        event = await next_event(watch)
    assert (event.kv.key, event.revision) == ("w/c", 3)
    with pytest.raises(InvalidArgument, match="start_revision"):
        store.watch("w/", start_revision=0)
