"""Property test: random operation sequences on MemoryStore agree with a plain-dict model.

The model keeps {key: (value, create_rev, mod_rev, version, lease)}, one revision counter and
lease deadlines; it applies lease expiry before every operation, as the store does lazily. A watch
opened from revision 1 must see exactly the model's change log at the end.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from kserve_mesh.store import Compare, EventType, LeaseNotFound, MemoryStore, Put

KEYS = ["a", "a/b", "ab", "b"]
PREFIXES = ["", "a", "a/", "b", "zz"]
VALUES = [b"", b"x", b"y", b"zz"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@dataclass
class Model:
    data: dict[str, tuple[bytes, int, int, int, int | None]] = field(default_factory=dict)
    revision: int = 0
    leases: dict[int, tuple[float, float]] = field(default_factory=dict)  # id -> (ttl, deadline)
    log: list[tuple[EventType, str, bytes, int]] = field(default_factory=list)

    def expire(self, now: float) -> None:
        for lease in sorted((d, lid) for lid, (_, d) in self.leases.items() if d <= now):
            self.revoke(lease[1])

    def revoke(self, lease: int) -> bool:
        if self.leases.pop(lease, None) is None:
            return False
        keys = sorted(k for k, v in self.data.items() if v[4] == lease)
        if keys:
            self.revision += 1
            for k in keys:
                self._delete(k)
        return True

    def _put(self, key: str, value: bytes, lease: int | None) -> None:
        old = self.data.get(key)
        create, version = (self.revision, 1) if old is None else (old[1], old[3] + 1)
        self.data[key] = (value, create, self.revision, version, lease)
        self.log.append((EventType.PUT, key, value, self.revision))

    def _delete(self, key: str) -> None:
        del self.data[key]
        self.log.append((EventType.DELETE, key, b"", self.revision))

    def put(self, key: str, value: bytes, lease: int | None) -> int:
        self.revision += 1
        self._put(key, value, lease)
        return self.revision

    def delete(self, key: str) -> bool:
        if key not in self.data:
            return False
        self.revision += 1
        self._delete(key)
        return True

    def mod(self, key: str) -> int:
        return self.data[key][2] if key in self.data else 0


ops = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.sampled_from(VALUES), st.integers(-2, 3)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS)),
    st.tuples(st.just("put_if"), st.sampled_from(KEYS), st.sampled_from(VALUES), st.integers(0, 3)),
    st.tuples(st.just("delete_if"), st.sampled_from(KEYS), st.integers(0, 2)),
    st.tuples(st.just("swap"), st.sampled_from(KEYS), st.sampled_from(KEYS)),
    st.tuples(st.just("grant"), st.sampled_from([1.0, 2.5, 5.0])),
    st.tuples(st.just("keepalive"), st.integers(0, 3)),
    st.tuples(st.just("revoke"), st.integers(0, 3)),
    st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 3.0])),
    st.tuples(st.just("range"), st.sampled_from(PREFIXES), st.sampled_from([None, 1, 2])),
)


async def check_range(store: MemoryStore, model: Model, prefix: str, limit: int | None) -> None:
    got = await store.range(prefix, limit=limit)
    want = sorted(k for k in model.data if k.startswith(prefix))
    assert [kv.key for kv in got] == want[:limit]
    assert got.more == (limit is not None and len(want) > limit)
    for kv in got:
        assert (kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) == model.data[
            kv.key
        ]


async def run_sequence(sequence: list[tuple]) -> None:  # type: ignore[type-arg]
    clock = Clock()
    store = MemoryStore(clock=clock, history_size=10_000, watch_buffer=3)
    watch = store.watch("", start_revision=1)
    model = Model()
    granted: list[int] = []
    for ttl in (2.5, 5.0):  # two live leases from the start make lease paths common
        lease = await store.grant_lease(ttl)
        granted.append(lease)
        model.leases[lease] = (ttl, clock.now + ttl)

    def lease_at(index: int) -> int | None:
        return granted[index % len(granted)] if granted and index >= 0 else None

    for op in sequence:
        model.expire(clock.now)
        name = op[0]
        if name == "put":
            _, key, value, idx = op
            lease = lease_at(idx)
            if lease is not None and lease not in model.leases:
                try:
                    await store.put(key, value, lease=lease)  # type: ignore[arg-type]
                except LeaseNotFound:
                    continue
                raise AssertionError("put with a dead lease succeeded")
            assert await store.put(key, value, lease=lease) == model.put(key, value, lease)  # type: ignore[arg-type]
        elif name == "delete":
            assert await store.delete(op[1]) == model.delete(op[1])
        elif name == "put_if":
            _, key, value, how = op
            expected = [0, model.mod(key), model.mod(key) + 1, model.revision][how]
            ok = (key not in model.data) if expected == 0 else model.mod(key) == expected
            result = await store.put_if(key, value, expected_mod_revision=expected)
            assert result.succeeded == ok
            if ok:
                model.put(key, value, None)
            assert result.revision == model.revision
        elif name == "delete_if":
            _, key, how = op
            expected = [model.mod(key), model.mod(key) + 1, 0][how]
            ok = key in model.data and model.mod(key) == expected
            assert (await store.delete_if(key, expected)).succeeded == ok
            if ok:
                model.delete(key)
        elif name == "swap":
            _, k1, k2 = op
            if k1 == k2 or k1 not in model.data or k2 not in model.data:
                continue
            v1, v2 = model.data[k1][0], model.data[k2][0]
            compares = [Compare.unchanged(k1, model.mod(k1)), Compare.unchanged(k2, model.mod(k2))]
            result = await store.transaction(compares, [Put(k1, v2), Put(k2, v1)])
            assert result.succeeded
            model.revision += 1
            model._put(k1, v2, None)
            model._put(k2, v1, None)
        elif name == "grant":
            lease = await store.grant_lease(op[1])
            granted.append(lease)
            model.leases[lease] = (op[1], clock.now + op[1])
        elif name == "keepalive":
            lease = lease_at(op[1])
            if lease is None:
                continue
            if lease in model.leases:
                ttl = model.leases[lease][0]
                assert await store.keepalive(lease) == ttl  # type: ignore[arg-type]
                model.leases[lease] = (ttl, clock.now + ttl)
            else:
                try:
                    await store.keepalive(lease)  # type: ignore[arg-type]
                except LeaseNotFound:
                    continue
                raise AssertionError("keepalive of a dead lease succeeded")
        elif name == "revoke":
            lease = lease_at(op[1])
            if lease is not None:
                assert await store.revoke(lease) == model.revoke(lease)  # type: ignore[arg-type]
        elif name == "advance":
            clock.now += op[1]
        elif name == "range":
            _, prefix, limit = op
            await check_range(store, model, prefix, limit)
    model.expire(clock.now)
    assert await store.revision() == model.revision
    await check_range(store, model, "", None)
    seen = []
    for _ in model.log:
        event = await asyncio.wait_for(watch.__anext__(), 0.5)
        seen.append((event.type, event.kv.key, event.kv.value, event.revision))
    assert seen == model.log
    await watch.aclose()
    await store.close()


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=60))
def test_random_operations_agree_with_dict_model(sequence: list[tuple]) -> None:  # type: ignore[type-arg]
    asyncio.run(run_sequence(sequence))
