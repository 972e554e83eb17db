"""Membership of a mesh of several instances: publish our record, watch everyone else's, elect a
leader.

Each instance writes an ``InstanceRecord`` under ``instances/<id>`` bound to a lease, refreshes the
lease and republishes the record periodically (and at once when asked, e.g. when it starts shutting
down). When an instance dies its lease expires, its record disappears, and it drops out of
placement and routing everywhere. The leader key is taken with a create-only compare-and-set bound
to the same lease, so it frees itself when the leader dies.

While the store is unreachable the instance keeps the last view it had (and keeps serving); when the
store returns, the lease is re-granted, the record republished and the view re-listed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kserve_mesh.core.clock import Clock
from kserve_mesh.core.errors import MeshError
from kserve_mesh.core.ids import InstanceId
from kserve_mesh.core.records import InstanceRecord
from kserve_mesh.store import codec
from kserve_mesh.store.base import EventType, LeaseId, LeaseNotFound, Store
from kserve_mesh.store.keys import Keys

log = logging.getLogger(__name__)


class Cluster:
    def __init__(self, store: Store, keys: Keys, self_id: InstanceId, clock: Clock,
                 record: Callable[[], InstanceRecord], *, publish_interval_s: float = 2.0,
                 lease_ttl_s: int = 6, on_leave: Callable[[InstanceRecord], None] | None = None) -> None:
        self.store = store
        self.keys = keys
        self.self_id = self_id
        self.clock = clock
        self.record = record
        self.publish_interval_s = publish_interval_s
        self.lease_ttl_s = lease_ttl_s
        self.instances: dict[InstanceId, InstanceRecord] = {}
        self.lease: LeaseId | None = None
        self.is_leader = False
        self.store_ok = True
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self.changed = asyncio.Event()  # set whenever the membership view changes
        self.on_leave = on_leave  # called with the last record of an instance that left

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._publish()
        await self._relist()
        self._tasks = [asyncio.create_task(self._publish_loop(), name="cluster-publish"),
                       asyncio.create_task(self._watch_loop(), name="cluster-watch")]

    async def stop(self, *, leave: bool = True) -> None:
        self._stop.set()
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if leave and self.lease is not None:
            try:
                await asyncio.wait_for(self.store.revoke(self.lease), 3.0)
            except (MeshError, TimeoutError) as exc:
                log.info("could not revoke the lease on the way out: %s", exc)

    def publish_soon(self) -> None:
        self._wake.set()

    def live(self) -> list[InstanceRecord]:
        return list(self.instances.values())

    def peer(self, instance_id: str) -> InstanceRecord | None:
        return self.instances.get(instance_id)  # type: ignore[call-overload]

    # -- publishing ------------------------------------------------------------------------------
    async def _publish(self) -> None:
        if self.lease is None:
            self.lease = await self.store.grant_lease(self.lease_ttl_s)
        rec = self.record()
        await self.store.put(self.keys.instance(self.self_id), codec.encode_instance(rec), lease=self.lease)
        self.instances[self.self_id] = rec
        await self._try_lead()

    async def _try_lead(self) -> None:
        assert self.lease is not None
        res = await self.store.put_if(self.keys.leader(), self.self_id.encode(), expected_mod_revision=0,
                                      lease=self.lease)
        leader = res.succeeded or (res.current is not None and res.current.value == self.self_id.encode())
        if leader != self.is_leader:
            log.info("instance %s is %s the leader", self.self_id, "now" if leader else "no longer")
        self.is_leader = leader

    async def _publish_loop(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), self.publish_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self.lease is not None:
                    await self.store.keepalive(self.lease)
                await self._publish()
                if not self.store_ok:
                    log.info("store reachable again: republished and re-listing instances")
                    await self._relist()
                self.store_ok = True
            except LeaseNotFound:
                log.warning("lease of %s expired; re-granting and republishing", self.self_id)
                self.lease = None
                self.is_leader = False
            except (MeshError, OSError) as exc:
                if self.store_ok:
                    log.warning("store unreachable (%s); serving with the last known view", exc)
                self.store_ok = False
                self.is_leader = False

    # -- watching --------------------------------------------------------------------------------
    async def _relist(self) -> int:
        kvs = await self.store.range(self.keys.instances_prefix())
        seen: dict[InstanceId, InstanceRecord] = {}
        for kv in kvs:
            rec = codec.decode_instance(kv.value)
            seen[rec.instance_id] = rec
        self.instances = seen
        self.changed.set()
        return kvs.revision

    async def _watch_loop(self) -> None:
        revision = 0
        while not self._stop.is_set():
            try:
                revision = await self._relist()
                async with self.store.watch(self.keys.instances_prefix(), start_revision=revision + 1) as watch:
                    async for event in watch:
                        iid = self.keys.instance_id_of(event.kv.key)
                        if event.type is EventType.DELETE:
                            if iid != self.self_id:
                                gone = self.instances.pop(iid, None)
                                log.info("instance %s left the mesh", iid)
                                if gone is not None and self.on_leave is not None:
                                    self.on_leave(gone)
                        else:
                            self.instances[iid] = codec.decode_instance(event.kv.value)
                        self.changed.set()
            except asyncio.CancelledError:
                raise
            except (MeshError, OSError) as exc:
                log.info("instance watch interrupted (%s); retrying", exc)
                try:
                    await asyncio.wait_for(self._stop.wait(), 1.0)
                except TimeoutError:
                    pass
