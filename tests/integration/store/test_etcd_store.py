"""EtcdStore beyond the shared contract: roots, endpoints, and etcd outages on a real etcd process.

Outage tests start their own etcd (``start_etcd``) and stop and start it from a worker thread, so
the event loop (watch readers, deadlines) keeps running through the outage, as in a real instance.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
from etcd_fixture import start_etcd, unique_root

from kserve_mesh.core.errors import InvalidArgument, Unavailable
from kserve_mesh.store import Compacted, Compare, EventType, LeaseNotFound, Put
from kserve_mesh.store.etcd import EtcdStore
from kserve_mesh.store.etcd_server import EtcdServer, etcd_binary, free_port

pytestmark = pytest.mark.integration

T = TypeVar("T")
WAIT_S = 12.0
DOWN_S = 3.0


@pytest.fixture
def own_etcd() -> Iterator[EtcdServer]:
    """An etcd of this test's own, free to be stopped and restarted."""
    server = start_etcd()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def outage_store(own_etcd: EtcdServer) -> AsyncIterator[EtcdStore]:
    async with EtcdStore(own_etcd.endpoint, root=unique_root("outage"), timeout_s=2.0) as store:
        yield store


async def eventually(call: Callable[[], Awaitable[T]], within_s: float = WAIT_S) -> T:
    """Retry ``call`` while it raises Unavailable (etcd coming back), at most ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return await call()
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def etcdctl(server: EtcdServer, *args: str) -> str:
    ctl = etcd_binary().with_name("etcdctl")
    done = subprocess.run(
        [str(ctl), f"--endpoints={server.endpoint}", "--command-timeout=5s", *args],
        capture_output=True, text=True, timeout=20, check=True,
    )  # fmt: skip
    return done.stdout


# ---- roots and endpoints ----


async def test_roots_isolate_stores_sharing_one_etcd(
    etcd_server: EtcdServer, etcd_store: EtcdStore
) -> None:
    async with EtcdStore(etcd_server.endpoint, root=unique_root("other")) as other:
        await etcd_store.put("registry/m1", b"mine")
        await other.put("registry/m1", b"theirs")
        watch = other.watch("")
        await etcd_store.put("registry/m2", b"mine too")
        r = await other.put("registry/m3", b"theirs too")
        event = await asyncio.wait_for(watch.__anext__(), WAIT_S)
        assert (event.kv.key, event.revision) == (
            "registry/m3",
            r,
        )  # m2 is not under its root
        await watch.aclose()
        assert [(kv.key, kv.value) for kv in await etcd_store.range("")] == [
            ("registry/m1", b"mine"),
            ("registry/m2", b"mine too"),
        ]
        assert [kv.key for kv in await other.range("registry/")] == [
            "registry/m1",
            "registry/m3",
        ]
        done = await other.transaction([Compare.equals("registry/m1", b"theirs")], [])
        assert done.succeeded


def test_endpoints_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="host:port"):
        EtcdStore("nonsense")
    with pytest.raises(InvalidArgument, match="TLS"):
        EtcdStore("https://127.0.0.1:2379")
    with pytest.raises(InvalidArgument, match="IP address"):
        EtcdStore(["etcd-0:2379", "etcd-1:2379"])
    with pytest.raises(InvalidArgument, match="at least one"):
        EtcdStore([])
    with pytest.raises(InvalidArgument, match="timeout"):
        EtcdStore("127.0.0.1:2379", timeout_s=0)
    assert EtcdStore("http://localhost:2379/").endpoints == ("http://localhost:2379/",)


async def test_several_endpoints_of_one_member(etcd_server: EtcdServer) -> None:
    endpoints = f"{etcd_server.endpoint},http://{etcd_server.endpoint}"
    async with EtcdStore(endpoints, root=unique_root("multi")) as store:
        assert await store.put("k", b"v") == await store.revision()


async def test_nothing_listening_is_unavailable_quickly() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(Unavailable, match=f"etcd at {endpoint} is unreachable"):
        async with EtcdStore(endpoint, timeout_s=3.0):
            pass
    assert time.monotonic() - started < 3.5


# ---- outages ----


async def test_calls_fail_with_unavailable_while_etcd_is_down_then_recover(
    own_etcd: EtcdServer, outage_store: EtcdStore
) -> None:
    store = outage_store
    lease = await store.grant_lease(30)
    await store.put("k", b"before", lease=lease)
    await asyncio.to_thread(own_etcd.stop)
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("get", lambda: store.get("k")),
        ("put", lambda: store.put("k", b"during")),
        ("put_if", lambda: store.put_if("n", b"x", expected_mod_revision=0)),
        ("transaction", lambda: store.transaction([], [Put("a", b"1")])),
        ("range", lambda: store.range("")),
        ("grant_lease", lambda: store.grant_lease(5)),
        ("keepalive", lambda: store.keepalive(lease)),
        ("revoke", lambda: store.revoke(lease)),
    ]
    for name, call in calls:
        started = time.monotonic()
        with pytest.raises(Unavailable, match=own_etcd.endpoint) as caught:
            await call()
        elapsed = time.monotonic() - started
        assert elapsed < 3.5, f"{name} took {elapsed:.1f} s to fail"  # timeout_s is 2
        assert "grpc" not in type(caught.value).__module__
    await asyncio.to_thread(own_etcd.start)
    kv = await eventually(lambda: store.get("k"))
    assert kv is not None and kv.value == b"before"  # data and lease survive the restart
    assert await store.keepalive(lease) >= 1
    assert await store.put("k", b"after") > kv.mod_revision


async def test_watch_resumes_after_an_etcd_restart_without_gaps_or_repeats(
    own_etcd: EtcdServer, outage_store: EtcdStore
) -> None:
    store = outage_store
    watch = store.watch("w/")
    first = await store.put("w/a", b"1")
    event = await asyncio.wait_for(watch.__anext__(), WAIT_S)
    assert event.revision == first
    pending = asyncio.ensure_future(watch.__anext__())  # waiting right through the outage
    await asyncio.to_thread(own_etcd.stop)
    await asyncio.sleep(DOWN_S)
    assert not pending.done()
    await asyncio.to_thread(own_etcd.start)
    second = await eventually(lambda: store.put("w/b", b"2"))
    third = await store.put("w/a", b"3")
    events = [await asyncio.wait_for(pending, WAIT_S)]
    events.append(await asyncio.wait_for(watch.__anext__(), WAIT_S))
    assert [(e.kv.key, e.revision) for e in events] == [("w/b", second), ("w/a", third)]
    assert events[1].prev_kv is not None and events[1].prev_kv.value == b"1"
    await watch.aclose()


async def test_watch_from_a_compacted_revision_raises_compacted(
    own_etcd: EtcdServer, outage_store: EtcdStore
) -> None:
    store = outage_store
    old = await store.put("c/a", b"1")
    await store.put("c/a", b"2")
    latest = await store.put("c/a", b"3")
    await asyncio.to_thread(etcdctl, own_etcd, "compact", str(latest))
    watch = store.watch("c/", start_revision=old)
    with pytest.raises(Compacted, match="compacted") as caught:
        await asyncio.wait_for(watch.__anext__(), WAIT_S)
    assert caught.value.requested == old and caught.value.oldest == latest
    await watch.aclose()
    # The owner re-lists and watches from the listing's revision: that works.
    listing = await store.range("c/")
    async with store.watch("c/", start_revision=listing.revision + 1) as again:
        r = await store.put("c/b", b"x")
        assert (await asyncio.wait_for(again.__anext__(), WAIT_S)).revision == r


async def test_watch_reports_compaction_that_happened_during_an_outage(
    own_etcd: EtcdServer,
) -> None:
    # The watch retries every 6 s, leaving time to restart etcd, write and compact in between.
    async with EtcdStore(
        own_etcd.endpoint,
        root=unique_root("gap"),
        timeout_s=2.0,
        watch_backoff_s=(6.0, 6.0),
    ) as store:
        watch = store.watch("g/")
        seen = await store.put("g/a", b"1")
        assert (await asyncio.wait_for(watch.__anext__(), WAIT_S)).revision == seen
        await asyncio.to_thread(own_etcd.stop)
        # The stream breaks; the reader sleeps 6 s before it retries.
        await asyncio.sleep(0.2)
        await asyncio.to_thread(own_etcd.start)
        for value in ("2", "3"):
            await asyncio.to_thread(etcdctl, own_etcd, "put", f"{store.root}g/a", value)
        latest = await eventually(store.revision)  # the channel reconnects within 1 s
        await asyncio.to_thread(etcdctl, own_etcd, "compact", str(latest))
        with pytest.raises(Compacted):
            await asyncio.wait_for(watch.__anext__(), WAIT_S)
        await watch.aclose()


async def test_lease_expiry_during_outage_is_seen_after_etcd_returns(
    own_etcd: EtcdServer, outage_store: EtcdStore
) -> None:
    store = outage_store
    lease = await store.grant_lease(2)
    watch = store.watch("i/")
    await store.put("i/me", b"1", lease=lease)
    assert (await asyncio.wait_for(watch.__anext__(), WAIT_S)).type is EventType.PUT
    await asyncio.to_thread(own_etcd.restart, DOWN_S)
    # etcd renews every lease when it regains a leader, then expires the unrefreshed ones.
    event = await asyncio.wait_for(watch.__anext__(), WAIT_S)
    assert (event.type, event.kv.key) == (EventType.DELETE, "i/me")
    with pytest.raises(LeaseNotFound):
        await store.keepalive(lease)
    await watch.aclose()


async def test_a_slow_watch_consumer_loses_nothing(etcd_store: EtcdStore) -> None:
    # 3,000 changes land while nobody reads: the bounded queue stops the reader, gRPC flow
    # control holds etcd back, and every event still arrives, in order, once the consumer reads.
    watch = etcd_store.watch("s/")
    revs = [await etcd_store.put(f"s/{i % 50:02d}", str(i).encode()) for i in range(3_000)]
    got = [await asyncio.wait_for(watch.__anext__(), WAIT_S) for _ in range(3_000)]
    assert [e.revision for e in got] == revs
    assert got[-1].kv.value == b"2999" and got[-1].prev_kv is not None
    await watch.aclose()


async def test_closing_the_store_during_an_outage_ends_its_watches(
    own_etcd: EtcdServer, outage_store: EtcdStore
) -> None:
    watch = outage_store.watch("x/")
    pending = asyncio.ensure_future(watch.__anext__())
    await asyncio.to_thread(own_etcd.stop)
    await asyncio.sleep(0.5)  # the watch is retrying now
    await outage_store.close()
    with pytest.raises(Unavailable, match="closed"):
        await asyncio.wait_for(pending, WAIT_S)
    await watch.aclose()
