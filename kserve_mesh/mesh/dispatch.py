"""Serving one request on this instance: with a local copy, forwarded, or after loading here.

``Dispatcher.dispatch`` is the hit/miss decision every inference and metadata call goes through:

- a LOADED local copy serves (the hit path: no await before the runtime call, no allocation);
  with unbalanced traffic (no ``mm-balanced``) in a mesh, a busy local copy hands the request to a
  less busy holder elsewhere, as ModelMesh does;
- no local copy: in a mesh (unless the request was forwarded here) the router decides where it
  goes (``router.py``); alone, or for a forwarded request, the model loads here first, and the
  runtime gets what the load left of the request's time.

Each request served here tells the observer how long it waited before its runtime call
(``req_queue_delay_milliseconds``: 0 on the hit path); the wait for a load itself is the cache
miss the cache manager reports.

The dispatcher is the router's ``RouterContext`` for this instance, and counts each model's
request rate (``core.rates.ModelRates``) for copy scaling.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from kserve_mesh.core.clock import Clock
from kserve_mesh.core.errors import ModelLoadFailed, ModelNotFound
from kserve_mesh.core.failures import FailurePolicy
from kserve_mesh.core.ids import InstanceId, ModelId
from kserve_mesh.core.placement import churn_age_ms
from kserve_mesh.core.rates import ModelRates
from kserve_mesh.core.records import InstanceRecord, ModelRecord
from kserve_mesh.mesh.cache_events import CacheObserver, SilentObserver
from kserve_mesh.mesh.cache_manager import CacheManager
from kserve_mesh.mesh.cluster import Cluster
from kserve_mesh.mesh.copies import LocalCopy, Phase
from kserve_mesh.mesh.hops import Hop
from kserve_mesh.mesh.peers import PeerPool
from kserve_mesh.mesh.registry import Registry
from kserve_mesh.mesh.router import route

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 120.0
"""The time a request may take when neither its transport (a gRPC deadline) nor ``mm-timeout-ms``
says: the same on every front door, longer than the default load timeout (90 s)."""


class Dispatcher:
    def __init__(self, instance_id: InstanceId, registry: Registry, cache: CacheManager, clock: Clock,
                 failures: FailurePolicy, *, observer: CacheObserver | None = None) -> None:
        self.instance_id = instance_id
        self.registry = registry
        self.cache = cache
        self.clock = clock
        self.failures = failures
        self.observer: CacheObserver = observer if observer is not None else SilentObserver()
        self.rates = ModelRates()
        self.cluster: Cluster | None = None
        self.peers: PeerPool | None = None

    def attach(self, cluster: Cluster, peers: PeerPool) -> None:
        self.cluster, self.peers = cluster, peers

    # -- serving ---------------------------------------------------------------------------------
    async def dispatch(self, model_id: ModelId, hop: Hop[T], timeout_s: float, *,
                       forwarded: bool = False, balanced: bool = False) -> T:
        """Serve one request: with a local copy, or (in a mesh, unless it was forwarded here) routed
        to an instance that has one or should load one."""
        copy = self.cache.try_enter(model_id)
        in_mesh = self.cluster is not None
        if copy is not None and copy.inflight > 1 and in_mesh and not (forwarded or balanced):
            peer = self._less_busy_holder(model_id, copy.inflight - 1)
            if peer is not None:
                copy.leave()
                return await route(self, model_id, hop, timeout_s, prefer=peer)
        if copy is None:
            if in_mesh and not forwarded:
                return await route(self, model_id, hop, timeout_s)
            hop.prepare()  # a bad request fails before it causes a load
            started = self.clock.monotonic()
            copy = await self._enter_slow(model_id, timeout_s)
            waited = self.clock.monotonic() - started
            timeout_s = max(0.001, timeout_s - waited)  # what the load left
            self.observer.request_queued(model_id, waited)
        else:
            self.observer.request_queued(model_id, 0.0)  # a loaded copy: no wait before the call
        if in_mesh:
            self.rates.hit(model_id, self.clock.monotonic())
        try:
            return await hop.run(timeout_s)
        finally:
            copy.leave()

    async def with_loaded(self, model_id: ModelId, timeout_s: float) -> LocalCopy:
        """Load the model here if needed and return its copy, entered; the caller must ``leave()``."""
        return self.cache.try_enter(model_id) or await self._enter_slow(model_id, timeout_s)

    async def _enter_slow(self, model_id: ModelId, timeout_s: float) -> LocalCopy:
        rec = self.registry.models.get(model_id)
        if rec is None and self.cluster is not None:
            await self.registry.fetch(model_id)
            rec = self.registry.models.get(model_id)
        if rec is None:
            raise ModelNotFound(model_id)
        now = self.clock.now_ms()
        if self.failures.blocked(rec.failures, now) and model_id not in self.cache.copies:
            raise ModelLoadFailed(
                f"model '{model_id}' failed to load: {self.failures.last_error(rec.failures, now)}"
            )
        return await self.cache.enter(model_id, rec.info, max(rec.last_used_ms, now), timeout_s)

    def _less_busy_holder(self, model_id: ModelId, local_inflight: int) -> InstanceId | None:
        assert self.cluster is not None and self.peers is not None
        rec = self.registry.models.get(model_id)
        if rec is None:
            return None
        best: InstanceId | None = None
        best_load = local_inflight
        for iid in rec.instances:
            peer = self.cluster.instances.get(iid)
            if iid == self.instance_id or peer is None:
                continue
            load = self.peers.inflight[peer.endpoint]
            if load < best_load:
                best, best_load = iid, load
        return best

    # -- RouterContext ---------------------------------------------------------------------------
    @property
    def churn_age_ms(self) -> int:
        return churn_age_ms(int(self.cache.config.load_timeout_s * 1000))

    @property
    def runtime_available(self) -> bool:
        return self.cache.runtime_available

    def model(self, model_id: ModelId) -> ModelRecord | None:
        return self.registry.models.get(model_id)

    def has_local_copy(self, model_id: ModelId) -> bool:
        copy = self.cache.copies.get(model_id)
        return copy is not None and copy.phase is not Phase.UNLOADING

    def live(self) -> Mapping[InstanceId, InstanceRecord]:
        assert self.cluster is not None
        return self.cluster.instances

    def own_record(self) -> InstanceRecord:
        assert self.cluster is not None
        return self.cluster.record()

    def inflight(self, peer: InstanceRecord) -> int:
        assert self.peers is not None
        return self.peers.inflight[peer.endpoint]

    def size_hint(self, model_id: ModelId) -> int:
        return self.cache.config.default_model_size_bytes

    async def serve_local(self, model_id: ModelId, hop: Hop[T], timeout_s: float) -> T:
        return await self.dispatch(model_id, hop, timeout_s, forwarded=True)
