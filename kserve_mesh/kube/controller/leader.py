"""Leader election of the controller's replicas through a ``coordination.k8s.io/v1`` Lease.

Two replicas run; one reconciles. ``main.run`` waits in :meth:`LeaderElector.acquire` before it
starts kopf's operator, so a follower watches nothing, patches nothing and posts no Event. The
leader renews the Lease in :meth:`LeaderElector.keep`; when a renewal has not succeeded within the
renew deadline, or another replica holds the Lease, ``keep`` returns, the operator is stopped and
the process exits with status 1 (as controller-runtime does: the Deployment restarts it as a
follower, with nothing stale in memory). A leader that stops on purpose (SIGTERM) hands the Lease
back, so a follower takes over at once instead of after the lease duration.

Why a Lease and not kopf's peering: kopf's peering needs CRDs of its own (``KopfPeering`` /
``ClusterKopfPeering``) installed next to ours and RBAC on them, and it is a priority scheme
("pause while a peer of higher priority is alive") rather than an election: replicas of equal
priority all pause or all run. A Lease is a built-in kind every cluster has, it is what upstream
(ModelMesh Serving through controller-runtime, and Kubernetes' own controllers) uses, so operators
recognise it (``kubectl get lease -n kserve-mesh``), and its rules fit in one small pure module
(``kube/core/lease.py``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kserve_mesh.core.errors import MeshError
from kserve_mesh.kube.controller.kube_api import KubeApiError, lease_path
from kserve_mesh.kube.core.lease import Election, LeaseRecord, lease_object

log = logging.getLogger(__name__)


class LeaseApi(Protocol):
    async def get(self, path: str) -> dict[str, Any] | None: ...

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def json_patch(self, path: str, ops: list[Mapping[str, Any]]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LeaseTiming:
    """client-go's defaults: a claim lasts 15 s, the leader steps down when it could not renew for
    10 s, and everyone retries every 2 s."""

    duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_s: float = 2.0


# A write that lost a race: the resourceVersion test failed (422 from a JSON patch test, 409 Conflict).
_LOST_RACE = (409, 422)


class LeaderElector:
    def __init__(self, kube: LeaseApi, namespace: str, name: str, identity: str,
                 timing: LeaseTiming = LeaseTiming(), *, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing
        self.election = Election(identity, max(1, round(timing.duration_s)))
        self._mono = monotonic
        self._wall = wall
        self.is_leader = False
        self.holder = ""
        """The holder this candidate last read ("" when none)."""
        self._renewed_at = float("-inf")

    async def _try(self) -> bool:
        """One attempt to take or renew the Lease; True when this candidate holds it now."""
        now = self._mono()
        lease = await self.kube.get(lease_path(self.namespace, self.name))
        if lease is None:
            record = self.election.claim(None, self._wall())
            try:
                await self.kube.create(lease_path(self.namespace),
                                       lease_object(self.name, self.namespace, record))
            except KubeApiError as exc:
                if exc.status in _LOST_RACE:
                    return False
                raise
            self.election.written(record, now)
            self.holder = self.identity
            return True
        record = LeaseRecord.of(lease)
        self.holder = record.holder
        if self.election.held_by_other(record, now):
            return False
        claim = self.election.claim(record, self._wall())
        version = (lease.get("metadata") or {}).get("resourceVersion")
        ops: list[Mapping[str, Any]] = [{"op": "add", "path": "/spec", "value": claim.spec()}]
        if version is not None:
            ops.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": version})
        try:
            await self.kube.json_patch(lease_path(self.namespace, self.name), ops)
        except KubeApiError as exc:
            if exc.status in _LOST_RACE:
                return False
            raise
        self.election.written(claim, now)
        if record.holder and record.holder != self.identity:
            log.info("lease %s/%s taken over from %s (it was not renewed for %.0f s)", self.namespace,
                     self.name, record.holder, self.timing.duration_s)
        self.holder = self.identity
        return True

    async def acquire(self) -> None:
        """Return once this candidate is the leader (tries every ``retry_s``; never gives up)."""
        waiting_for = None
        while True:
            try:
                if await asyncio.wait_for(self._try(), timeout=max(self.timing.retry_s, 5.0)):
                    self.is_leader = True
                    self._renewed_at = self._mono()
                    log.info("leader election: %s is the leader (lease %s/%s)", self.identity,
                             self.namespace, self.name)
                    return
            except (MeshError, TimeoutError) as exc:
                log.warning("leader election: lease %s/%s not read or written: %s", self.namespace, self.name,
                            exc or type(exc).__name__)
            if self.holder and self.holder != waiting_for:
                waiting_for = self.holder
                log.info("leader election: %s waits; %s holds lease %s/%s", self.identity, self.holder,
                         self.namespace, self.name)
            await asyncio.sleep(self.timing.retry_s)

    async def keep(self) -> None:
        """Renew the Lease every ``retry_s``; return when leadership is lost: another replica
        holds the Lease, or no renewal succeeded for ``renew_deadline_s``."""
        while True:
            await asyncio.sleep(self.timing.retry_s)
            left = self._renewed_at + self.timing.renew_deadline_s - self._mono()
            try:
                renewed = await asyncio.wait_for(self._try(), timeout=max(0.1, left))
            except (MeshError, TimeoutError) as exc:
                renewed = False
                log.warning("leader election: lease %s/%s not renewed: %s", self.namespace, self.name,
                            exc or type(exc).__name__)
            if renewed:
                self._renewed_at = self._mono()
                continue
            if self.holder and self.holder != self.identity:
                log.error("leader election: %s lost lease %s/%s to %s", self.identity, self.namespace,
                          self.name, self.holder)
                break
            if self._mono() - self._renewed_at >= self.timing.renew_deadline_s:
                log.error("leader election: %s could not renew lease %s/%s for %.0f s: stepping down",
                          self.identity, self.namespace, self.name, self.timing.renew_deadline_s)
                break
        self.is_leader = False

    async def release(self) -> None:
        """Hand the Lease back (best effort) so that a follower need not wait for it to expire."""
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            lease = await asyncio.wait_for(self.kube.get(lease_path(self.namespace, self.name)), timeout=5)
            if lease is None or LeaseRecord.of(lease).holder != self.identity:
                return
            record = self.election.release(LeaseRecord.of(lease), self._wall())
            version = (lease.get("metadata") or {}).get("resourceVersion")
            ops: list[Mapping[str, Any]] = [{"op": "add", "path": "/spec", "value": record.spec()}]
            if version is not None:
                ops.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": version})
            await asyncio.wait_for(self.kube.json_patch(lease_path(self.namespace, self.name), ops), timeout=5)
            log.info("leader election: %s released lease %s/%s", self.identity, self.namespace, self.name)
        except (MeshError, TimeoutError) as exc:
            log.warning("leader election: lease %s/%s not released: %s", self.namespace, self.name,
                        exc or type(exc).__name__)
