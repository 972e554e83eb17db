"""The Store contract, run against both adapters: ``MemoryStore`` and ``EtcdStore`` on a real etcd.

Every check is phrased relative to revisions the store reported (etcd's revision is shared by every
test on the same server, and starts at 1, not 0), and waits for watch events with a deadline
(etcd delivers them over the network). Lease expiry runs in real time with a 1 s TTL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from etcd_fixture import unique_root

from kserve_mesh.core.errors import InvalidArgument, Unavailable
from kserve_mesh.store import (
    Compare,
    Delete,
    EventType,
    Get,
    KeyValue,
    LeaseNotFound,
    MemoryStore,
    Put,
    Store,
    Watch,
    WatchEvent,
)
from kserve_mesh.store.etcd import EtcdStore
from kserve_mesh.store.etcd_server import EtcdServer

pytestmark = pytest.mark.integration

WAIT_S = 5.0
LEASE_EXPIRY_WAIT_S = 8.0  # 1 s TTL + etcd's 0.5 s expiry sweep + slack on a busy machine


@pytest.fixture(params=["memory", "etcd"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        async with MemoryStore(reap_interval_s=0.05) as memory:
            yield memory
    else:
        server: EtcdServer = request.getfixturevalue("etcd_server")
        async with EtcdStore([server.endpoint], root=unique_root("contract")) as etcd:
            yield etcd


async def next_event(watch: Watch, wait_s: float = WAIT_S) -> WatchEvent:
    return await asyncio.wait_for(watch.__anext__(), wait_s)


async def take(watch: Watch, n: int) -> list[WatchEvent]:
    return [await next_event(watch) for _ in range(n)]


def as_kv(response: object) -> KeyValue:
    assert isinstance(response, KeyValue), response
    return response


# ---- basic reads and writes ----


async def test_put_get_delete_and_revisions(store: Store) -> None:
    assert await store.get("k") is None
    r1 = await store.put("k", b"v1")
    r2 = await store.put("k", b"v2")
    assert r2 == r1 + 1
    kv = await store.get("k")
    assert kv is not None
    assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) == (
        "k", b"v2", r1, r2, 2,
    )  # fmt: skip
    assert kv.lease is None
    assert await store.delete("k") is True
    after_delete = await store.revision()
    assert after_delete == r2 + 1
    assert await store.delete("k") is False
    assert await store.get("k") is None
    assert await store.revision() == after_delete  # deleting an absent key writes nothing
    r4 = await store.put("k", b"again")
    kv = await store.get("k")
    assert kv is not None and (kv.create_revision, kv.version) == (r4, 1)


async def test_rejects_bad_keys_and_values_without_writing(store: Store) -> None:
    before = await store.revision()
    with pytest.raises(InvalidArgument, match="bytes"):
        await store.put("k", "text")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="non-empty str"):
        await store.put("", b"x")
    assert await store.revision() == before


async def test_values_are_bytes_and_keys_unicode(store: Store) -> None:
    blob = bytes(range(256)) * 40
    await store.put("m/ünïcode id/%2F", blob)
    kv = await store.get("m/ünïcode id/%2F")
    assert kv is not None and kv.value == blob and kv.key == "m/ünïcode id/%2F"
    assert [k.key for k in await store.range("m/ü")] == ["m/ünïcode id/%2F"]


# ---- compare-and-set ----


async def test_create_only_succeeds_once(store: Store) -> None:
    first = await store.put_if("k", b"a", expected_mod_revision=0)
    assert first.succeeded and first.current is not None and first.current.value == b"a"
    assert first.current.mod_revision == first.revision
    second = await store.put_if("k", b"b", expected_mod_revision=None)
    assert not second
    assert second.current is not None and second.current.value == b"a"
    assert second.revision == first.revision  # a failed CAS writes nothing
    kv = await store.get("k")
    assert kv is not None and kv.value == b"a"


async def test_update_only_if_unchanged(store: Store) -> None:
    rev = await store.put("k", b"a")
    ok = await store.put_if("k", b"b", expected_mod_revision=rev)
    assert ok.succeeded and ok.current is not None and ok.current.mod_revision == rev + 1
    stale = await store.put_if("k", b"c", expected_mod_revision=rev)
    assert not stale.succeeded
    assert stale.current is not None and stale.current.value == b"b"
    absent = await store.put_if("other", b"x", expected_mod_revision=rev)
    assert not absent.succeeded and absent.current is None


async def test_delete_if(store: Store) -> None:
    rev = await store.put("k", b"a")
    miss = await store.delete_if("k", rev + 5)
    assert not miss and miss.current is not None and miss.current.value == b"a"
    assert await store.get("k") is not None
    done = await store.delete_if("k", rev)
    assert done.succeeded and done.current is None and done.revision == rev + 1
    assert await store.get("k") is None
    assert not (await store.delete_if("k", rev)).succeeded
    assert not (await store.delete_if("never", 0)).succeeded  # absent is not "at revision 0"
    assert await store.revision() == rev + 1


async def test_concurrent_create_only_has_exactly_one_winner(store: Store) -> None:
    results = await asyncio.gather(
        *(store.put_if("leader", f"i{n}".encode(), expected_mod_revision=0) for n in range(8))
    )
    winners = [r for r in results if r.succeeded]
    assert len(winners) == 1
    assert winners[0].current is not None
    assert all(r.current is not None and r.current.value == winners[0].current.value
               for r in results)  # fmt: skip


# ---- transactions ----


async def test_transaction_swaps_two_keys_atomically(store: Store) -> None:
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
    assert as_kv(result.responses[2]).value == b"m2"
    events = await take(watch, 2)
    assert [(e.kv.key, e.kv.value, e.revision) for e in events] == [
        ("vm/active", b"m2", rt + 1),
        ("vm/target", b"m1", rt + 1),
    ]
    await watch.aclose()


async def test_transaction_failure_branch_runs_and_writes_nothing_else(
    store: Store,
) -> None:
    await store.put("a", b"1")
    before = await store.revision()
    result = await store.transaction(
        [Compare.absent("a")], [Put("a", b"2"), Delete("b")], [Get("a"), Get("missing")]
    )
    assert not result.succeeded
    kv, missing = result.responses
    assert as_kv(kv).value == b"1"
    assert missing is None
    assert result.revision == before == await store.revision()


async def test_transaction_value_compare_on_absent_key_fails(store: Store) -> None:
    result = await store.transaction([Compare.equals("nope", b"")], [Put("x", b"1")], [])
    assert not result.succeeded and result.responses == ()
    assert await store.get("x") is None


async def test_transaction_delete_and_duplicate_keys(store: Store) -> None:
    await store.put("a", b"1")
    result = await store.transaction([], [Delete("a"), Delete("nope")])
    assert result.succeeded and result.responses == (True, False)
    assert await store.get("a") is None
    with pytest.raises(InvalidArgument, match="at most once"):
        await store.transaction([], [Put("x", b"1"), Delete("x")])


async def test_transaction_with_a_dead_lease_writes_nothing(store: Store) -> None:
    lease = await store.grant_lease(5)
    await store.revoke(lease)
    before = await store.revision()
    with pytest.raises(LeaseNotFound):
        await store.transaction([], [Put("a", b"1"), Put("b", b"2", lease=lease)])
    assert await store.get("a") is None
    assert await store.revision() == before


# ---- ranges ----


async def test_range_sorted_with_prefix_boundaries_and_limit(store: Store) -> None:
    for key in ["r/b", "r/a", "r/c/x", "r0", "r", "q/z", "r/a/deeper"]:
        await store.put(key, key.encode())
    got = await store.range("r/")
    assert [kv.key for kv in got] == ["r/a", "r/a/deeper", "r/b", "r/c/x"]
    assert [kv.value for kv in got] == [b"r/a", b"r/a/deeper", b"r/b", b"r/c/x"]
    assert got.revision == await store.revision() and not got.more
    limited = await store.range("r/", limit=2)
    assert [kv.key for kv in limited] == ["r/a", "r/a/deeper"] and limited.more
    exact = await store.range("r/", limit=4)
    assert len(exact) == 4 and not exact.more
    everything = await store.range("")
    assert [kv.key for kv in everything] == sorted(
        ["r/b", "r/a", "r/c/x", "r0", "r", "q/z", "r/a/deeper"]
    )
    assert list(await store.range("nothing/")) == []
    await store.delete("r/a")
    assert [kv.key for kv in await store.range("r/a")] == ["r/a/deeper"]
    with pytest.raises(InvalidArgument, match="limit"):
        await store.range("r/", limit=0)


async def test_range_over_many_keys_with_a_limit(store: Store) -> None:
    await asyncio.gather(*(store.put(f"m/{(i * 7919) % 1_500:05d}", b"x") for i in range(1_500)))
    page = await store.range("m/", limit=400)
    assert [kv.key for kv in page] == [f"m/{i:05d}" for i in range(400)] and page.more
    assert [kv.key for kv in await store.range("m/")] == [f"m/{i:05d}" for i in range(1_500)]


# ---- watches ----


async def test_watch_sees_puts_and_deletes_in_order(store: Store) -> None:
    watch = store.watch("w/")
    r1 = await store.put("w/a", b"1")
    await store.put("other", b"ignored")
    r3 = await store.put("w/a", b"2")
    assert await store.delete("w/a")
    r4 = await store.revision()
    events = await take(watch, 3)
    assert [(e.type, e.kv.key, e.kv.value) for e in events] == [
        (EventType.PUT, "w/a", b"1"),
        (EventType.PUT, "w/a", b"2"),
        (EventType.DELETE, "w/a", b""),
    ]
    assert [e.revision for e in events] == [r1, r3, r4]
    assert events[0].prev_kv is None
    assert events[1].prev_kv is not None and events[1].prev_kv.value == b"1"
    assert events[2].prev_kv is not None and events[2].prev_kv.value == b"2"
    await watch.aclose()


async def test_watch_from_start_revision_replays_then_follows(store: Store) -> None:
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


async def test_range_then_watch_from_its_revision_misses_nothing(store: Store) -> None:
    await store.put("w/a", b"1")
    snapshot = await store.range("w/")
    await store.put("w/b", b"2")  # happens between the range and the watch
    async with store.watch("w/", start_revision=snapshot.revision + 1) as watch:
        event = await next_event(watch)
    assert event.kv.key == "w/b"


async def test_watch_close_ends_iteration_and_wakes_a_waiting_reader(
    store: Store,
) -> None:
    watch = store.watch("w/")
    received: list[str] = []
    first = asyncio.Event()

    async def consume() -> None:
        async for event in watch:
            received.append(event.kv.key)
            first.set()

    reader = asyncio.create_task(consume())
    await store.put("w/a", b"1")
    await asyncio.wait_for(first.wait(), WAIT_S)
    await watch.aclose()  # the reader is waiting for the next event: it must end
    await asyncio.wait_for(reader, WAIT_S)
    assert received == ["w/a"]
    await store.put("w/b", b"2")  # a closed watch is no longer fed
    with pytest.raises(StopAsyncIteration):
        await next_event(watch)


async def test_watch_from_a_future_revision_skips_earlier_changes(store: Store) -> None:
    now = await store.revision()
    async with store.watch("w/", start_revision=now + 2) as watch:
        await store.put("w/b", b"2")  # now + 1: before the start
        r = await store.put("w/c", b"3")  # now + 2
        event = await next_event(watch)
    assert (event.kv.key, event.revision) == ("w/c", r)
    with pytest.raises(InvalidArgument, match="start_revision"):
        store.watch("w/", start_revision=0)


async def test_many_watchers_each_see_every_event(store: Store) -> None:
    watches = [store.watch("f/") for _ in range(5)]
    revs = [await store.put(f"f/{i}", b"x") for i in range(20)]
    for watch in watches:
        assert [e.revision for e in await take(watch, 20)] == revs
        await watch.aclose()


async def test_store_close_fails_watches_and_calls(store: Store) -> None:
    watch = store.watch("")
    waiting = asyncio.create_task(next_event(watch))
    await asyncio.sleep(0.05)
    await store.close()
    with pytest.raises(Unavailable, match="closed"):
        await waiting
    with pytest.raises(Unavailable, match="closed"):
        await store.get("k")
    with pytest.raises(Unavailable):
        store.watch("")
    await store.close()  # idempotent


# ---- leases ----


async def test_lease_expiry_deletes_keys_and_notifies(store: Store) -> None:
    lease = await store.grant_lease(1)
    await store.put("i/one", b"1", lease=lease)
    await store.put("i/two", b"2", lease=lease)
    await store.put("i/free", b"3")
    kv = await store.get("i/one")
    assert kv is not None and kv.lease == lease
    watch = store.watch("i/")
    events = [await next_event(watch, LEASE_EXPIRY_WAIT_S) for _ in range(2)]
    assert {(e.type, e.kv.key) for e in events} == {
        (EventType.DELETE, "i/one"),
        (EventType.DELETE, "i/two"),
    }
    assert events[0].revision == events[1].revision  # one revision for the whole lease
    assert [kv.key for kv in await store.range("i/")] == ["i/free"]
    with pytest.raises(LeaseNotFound, match="not found"):
        await store.keepalive(lease)
    with pytest.raises(LeaseNotFound):
        await store.put("i/late", b"x", lease=lease)
    await watch.aclose()


async def test_keepalive_keeps_a_lease_alive(store: Store) -> None:
    lease = await store.grant_lease(1)
    await store.put("i/kept", b"1", lease=lease)
    for _ in range(6):  # 1.8 s in all: well past the TTL
        await asyncio.sleep(0.3)
        assert await store.keepalive(lease) >= 1
    assert await store.get("i/kept") is not None
    assert await store.revoke(lease) is True


async def test_revoke_deletes_attached_keys_only(store: Store) -> None:
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
    await store.revoke(other)


async def test_lease_bound_create_only_for_leader_election(store: Store) -> None:
    first = await store.grant_lease(1)
    second = await store.grant_lease(30)
    assert await store.put_if("leader", b"i1", expected_mod_revision=0, lease=first)
    assert not await store.put_if("leader", b"i2", expected_mod_revision=0, lease=second)
    async with asyncio.timeout(LEASE_EXPIRY_WAIT_S):
        while not await store.put_if("leader", b"i2", expected_mod_revision=0, lease=second):
            await asyncio.sleep(0.1)  # the first leader's lease runs out
    kv = await store.get("leader")
    assert kv is not None and (kv.value, kv.lease) == (b"i2", second)
    with pytest.raises(InvalidArgument, match="positive"):
        await store.grant_lease(0)
    await store.revoke(second)
