"""One mesh instance: its registry, cache manager and runtime, and the rules that join them.

The instance owns its parts and their life: start/stop, joining a mesh (``attach``), the runtime's
supervision hooks (``runtime_lost`` / ``runtime_back``), readiness. It answers the ModelMesh
management API for models (register, unregister, ensureLoaded, status).

The work is done by its parts, each in a module of its own: serving a request
(``dispatch.Dispatcher``, which routes through ``router.py`` and moves requests as ``hops.py``
hops), the records' bookkeeping of every load and unload here (``bookkeeping.Bookkeeping``:
copies, failures, vmodels moved on), status views (``status.StatusViews``) and vmodels
(``vmodels.VModels``). Front doors call the data plane (``dataplane.py``) and the management face
(``management.py``), never this class; the background duties, the drain, telemetry and the
composition root call the narrow methods at the end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

from kserve_mesh.core import vmodel as vrules
from kserve_mesh.core.cache import CacheEntry
from kserve_mesh.core.clock import Clock
from kserve_mesh.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    MeshError,
    ModelNotFound,
    NotFound,
)
from kserve_mesh.core.failures import FailurePolicy
from kserve_mesh.core.ids import InstanceId, ModelId, check_ids
from kserve_mesh.core.records import (
    NEW_MODEL_AGE_LAZY_MS,
    NEW_MODEL_AGE_LOAD_NOW_MS,
    InstanceRecord,
    ModelInfo,
    ModelRecord,
)
from kserve_mesh.mesh.bookkeeping import Bookkeeping, Stats
from kserve_mesh.mesh.cache_manager import CacheConfig, CacheManager
from kserve_mesh.mesh.cluster import Cluster
from kserve_mesh.mesh.copies import Phase
from kserve_mesh.mesh.dispatch import DEFAULT_TIMEOUT_S, Dispatcher
from kserve_mesh.mesh.hops import Hop, Hops
from kserve_mesh.mesh.memory import MemoryWatch
from kserve_mesh.mesh.peers import PeerPool
from kserve_mesh.mesh.registry import Registry
from kserve_mesh.mesh.status import CopyView, ModelStatus, StatusViews, VModelStatus
from kserve_mesh.mesh.vmodels import VModels
from kserve_mesh.protocol import v2
from kserve_mesh.runtime.spi import ModelRuntime

__all__ = ["CacheSummary", "CopyView", "Instance", "ModelStatus", "Stats", "VModelStatus"]  # re-exported for old imports

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CacheSummary:
    """This instance's cache in numbers (published in its record, shown in status and metrics)."""

    capacity_bytes: int
    used_bytes: int
    copies: int
    lru_time_ms: int
    loading_threads: int
    loads_in_progress: int
    loads_queued: int


class Instance:
    def __init__(
        self,
        instance_id: InstanceId,
        registry: Registry,
        runtime: ModelRuntime,
        cache: CacheConfig,
        clock: Clock,
        *,
        failure_policy: FailurePolicy | None = None,
        metrics=None,  # type: ignore[no-untyped-def]
        check_model: Callable[[ModelInfo], None] | None = None,
    ) -> None:
        """``check_model`` vets a new registration's info before it is stored (the storage policy:
        which paths a model may name); it raises ``InvalidArgument`` to refuse it."""
        self.instance_id = instance_id
        self.check_model = check_model
        self.registry = registry
        self.runtime = runtime
        self.clock = clock
        self.failures = failure_policy or FailurePolicy()
        self.bookkeeping = Bookkeeping(instance_id, registry, lambda: self.cache, self.failures, clock,
                                       advance=lambda mid: self.vmodels.advance(mid),
                                       is_leader=lambda: self.is_leader)
        self.stats = self.bookkeeping.stats
        self.cache = CacheManager(runtime, cache, clock, on_load=self.bookkeeping.loaded,
                                  on_unload=self.bookkeeping.unloaded, observer=metrics)
        self.memory: MemoryWatch | None = None  # set by the server: the runtime's memory against the ledger
        self.cluster: Cluster | None = None
        self.peers: PeerPool | None = None
        self.ready = False
        self.shutting_down = False
        self._was_ready = False
        self.hops = Hops(runtime, lambda: self.peers, observer=metrics)
        self.dispatcher = Dispatcher(instance_id, registry, self.cache, clock, self.failures, observer=metrics)
        self.views = StatusViews(instance_id, registry, self.cache, self.failures, clock, self.live_instances)
        self.vmodels = VModels(registry, self.views, clock, register=self.register, request_load=self._request_load,
                               unregister=self.unregister, load_timeout_s=cache.load_timeout_s)

    @property
    def serving_ready(self) -> bool:
        """Readiness as probes see it. Not ready while the runtime is lost (dead, hung, restarting).
        A new instance is not ready while another instance is shutting down (staggers rolling
        updates, as ModelMesh does); once ready, it stays ready."""
        if not self.ready or not self.cache.runtime_available:
            return False
        if not self._was_ready and self.cluster is not None and any(
                r.shutting_down for i, r in self.cluster.instances.items() if i != self.instance_id):
            return False
        self._was_ready = True
        return True

    # -- the runtime's life (told by its supervisor) -------------------------------------------------
    def runtime_lost(self, reason: str) -> None:
        """The runtime died or hangs: every local copy is lost (waiters fail with ``Unavailable``,
        the model records stop listing this instance, so other instances take over) and this
        instance is not ready until ``runtime_back``. Not a load failure of any model."""
        dropped = self.cache.runtime_lost(reason)
        log.warning("runtime lost (%s): %d local copies dropped; not ready until it serves again", reason, dropped)

    async def runtime_back(self, fresh: bool) -> None:
        """The runtime serves again (``fresh``: a new process holding no models): ready again,
        models load on demand."""
        await self.cache.runtime_back(fresh=fresh)
        log.warning("runtime serving again (%s): ready; models load again on demand",
                    "a new process" if fresh else "the same process")

    def attach(self, cluster: Cluster, peers: PeerPool) -> None:
        """Join a mesh of several instances: route misses through the cluster, follow the store."""
        self.cluster = cluster
        self.peers = peers
        self.dispatcher.attach(cluster, peers)
        self.registry.listeners.append(self.bookkeeping.registry_changed)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.registry.load()
        self.cache.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.bookkeeping.stop()
        await self.cache.close()

    # -- the request path (the data plane's) -----------------------------------------------------
    def resolve(self, name: str = "", *, model_id: str = "", vmodel_id: str = "") -> ModelId:
        """The concrete model a request is for (``Registry.resolve``)."""
        return self.registry.resolve(name, model_id=model_id, vmodel_id=vmodel_id)

    async def lookup(self, name: str = "", *, model_id: str = "", vmodel_id: str = "",
                     forwarded: bool = False) -> ModelId:
        """``resolve``, but in a mesh of several instances a miss is checked against the store."""
        if forwarded and model_id:
            return ModelId(model_id)  # the sending instance resolved it already
        try:
            return self.registry.resolve(name, model_id=model_id, vmodel_id=vmodel_id)
        except NotFound:
            if self.cluster is None:
                raise
        try:
            await self.registry.fetch(vmodel_id or model_id or name)
        except MeshError as exc:
            log.info("store lookup failed: %s", exc)
        return self.registry.resolve(name, model_id=model_id, vmodel_id=vmodel_id)

    def dispatch(self, model_id: ModelId, hop: Hop[T], timeout_s: float = DEFAULT_TIMEOUT_S, *,
                 forwarded: bool = False, balanced: bool = False) -> Awaitable[T]:
        """Serve one request here or elsewhere (``Dispatcher.dispatch``; awaited by the caller, so
        the request path has no extra coroutine for it)."""
        return self.dispatcher.dispatch(model_id, hop, timeout_s, forwarded=forwarded, balanced=balanced)

    def infer(self, model_id: ModelId, request: v2.ModelInferRequest, timeout_s: float = DEFAULT_TIMEOUT_S, *,
              forwarded: bool = False, balanced: bool = False) -> Awaitable[v2.ModelInferResponse]:
        """A V2 inference of a resolved model (in-process callers; front doors use the data plane)."""
        return self.dispatcher.dispatch(model_id, self.hops.grpc(model_id, request), timeout_s,
                                        forwarded=forwarded, balanced=balanced)

    async def model_metadata(self, model_id: ModelId, timeout_s: float = DEFAULT_TIMEOUT_S) -> v2.ModelMetadataResponse:
        copy = await self.dispatcher.with_loaded(model_id, timeout_s)
        try:
            return await self.runtime.model_metadata(model_id)
        finally:
            copy.leave()

    def is_loaded(self, model_id: ModelId) -> bool:
        copy = self.cache.copies.get(model_id)
        return copy is not None and copy.phase is Phase.LOADED

    # -- management: models ----------------------------------------------------------------------
    async def register(self, model_id: str, info: ModelInfo, *, load_now: bool = False, sync: bool = False,
                       last_used_ms: int = 0, auto_delete: bool = False, min_copies: int = 0,
                       max_copies: int = 0) -> ModelStatus:
        check_ids(model_id=model_id, info=info)  # ids and modelInfo bounds, before any policy check
        if not model_id:
            raise InvalidArgument("modelId must not be empty")
        if not info.type:
            raise InvalidArgument(f"model '{model_id}': modelInfo.type must not be empty")
        mid = ModelId(model_id)
        existing = self.registry.models.get(mid)
        if existing is not None:
            if existing.info != info:
                raise AlreadyExists(f"model '{model_id}' is already registered with different type/path/key")
        else:
            if self.check_model is not None:
                self.check_model(info)
            now = self.clock.now_ms()
            age = NEW_MODEL_AGE_LOAD_NOW_MS if load_now else NEW_MODEL_AGE_LAZY_MS
            rec = ModelRecord(mid, info, last_used_ms or now - age, auto_delete=auto_delete,
                              min_copies=min_copies, max_copies=max_copies,
                              registered_ms=0 if last_used_ms else now)
            stored = await self.registry.create_model(rec)
            if stored.info != info:  # another instance registered the same id at the same moment
                raise AlreadyExists(f"model '{model_id}' is already registered with different type/path/key")
        if load_now:
            await self._request_load(mid, sync)
        return self.model_status(mid)

    async def unregister(self, model_id: str) -> None:
        mid = ModelId(model_id)
        if mid not in self.registry.models:
            return
        users = [vm.vmodel_id for vm in self.registry.vmodels.values() if mid in (vm.active, vm.target)]
        if users:
            raise FailedPrecondition(f"model '{model_id}' is referenced by vmodel(s) {', '.join(sorted(users))}")
        await self.registry.delete_model(mid)
        await self._wait_gone(mid, 5.0)

    async def unload_copy(self, model_id: str) -> None:
        """Unload this instance's copy (the V2 repository unload); the model stays registered."""
        mid = ModelId(model_id)
        if mid not in self.registry.models:
            raise ModelNotFound(model_id)
        await self._wait_gone(mid, 30.0)

    async def _wait_gone(self, model_id: ModelId, timeout_s: float) -> None:
        """Unload the copy here and wait up to ``timeout_s`` for it to go (it goes on after)."""
        gone = self.cache.unload(model_id)
        if gone is not None:
            try:
                await asyncio.wait_for(gone.wait(), timeout_s)
            except TimeoutError:
                pass  # the unload goes on in the background

    async def ensure_loaded(self, model_id: str, *, last_used_ms: int = 0, sync: bool = False) -> ModelStatus:
        mid = ModelId(model_id)
        rec = self.registry.models.get(mid)
        if rec is None:
            raise ModelNotFound(model_id)
        touch = last_used_ms or self.clock.now_ms()
        if touch > rec.last_used_ms:
            # compare-and-set: a plain put of this view's record would undo what another instance
            # wrote a moment ago and this view has not seen yet (its copy in ``instances``)
            def newer(r: ModelRecord) -> ModelRecord:
                return replace(r, last_used_ms=touch) if touch > r.last_used_ms else r

            if await self.registry.mutate_model(mid, newer) is None:
                raise ModelNotFound(model_id)
        self.cache.ledger.touch(mid, touch)
        await self._request_load(mid, sync)
        return self.model_status(mid)

    async def _request_load(self, mid: ModelId, sync: bool) -> None:
        """Queue a load here; with ``sync``, wait for it (its failure shows in the status)."""
        rec = self.registry.models[mid]
        copy = self.cache.request_load(mid, rec.info, rec.last_used_ms, request_waiting=sync)
        if sync:
            try:
                await asyncio.wait_for(asyncio.shield(copy.ready), self.cache.config.load_timeout_s + 5)
            except (MeshError, TimeoutError):
                pass  # the status returned carries the failure

    def model_status(self, model_id: str) -> ModelStatus:
        return self.views.model(model_id)

    def list_models(self) -> list[ModelStatus]:
        return self.views.models()

    # -- management: vmodels (vmodels.py) --------------------------------------------------------
    async def set_vmodel(self, req: vrules.SetVModel, *, model_info: ModelInfo | None = None,
                         auto_delete: bool = False, load_now: bool = False, sync: bool = False) -> VModelStatus:
        return await self.vmodels.set(req, model_info=model_info, auto_delete=auto_delete, load_now=load_now,
                                      sync=sync)

    async def delete_vmodel(self, vmodel_id: str, owner: str = "") -> None:
        await self.vmodels.delete(vmodel_id, owner)

    def vmodel_status(self, vmodel_id: str, owner: str = "") -> VModelStatus:
        return self.views.vmodel(vmodel_id, owner)

    def list_vmodels(self) -> list[VModelStatus]:
        return self.views.vmodels()

    # -- what the duties, the drain, telemetry and the server read -------------------------------
    def live_instances(self) -> Mapping[InstanceId, InstanceRecord] | None:
        """The live instances of the mesh by id; None for an instance on its own."""
        return None if self.cluster is None else self.cluster.instances

    @property
    def is_leader(self) -> bool:
        return self.cluster is not None and self.cluster.is_leader

    @property
    def registry_synced(self) -> bool:
        return self.registry.synced.is_set()

    def model_record(self, model_id: ModelId) -> ModelRecord | None:
        return self.registry.models.get(model_id)

    def model_records(self) -> list[ModelRecord]:
        return list(self.registry.models.values())

    def load_blocked(self, rec: ModelRecord) -> bool:
        """Recent load failures keep new loads of ``rec``'s model off for now."""
        return self.failures.blocked(rec.failures, self.clock.now_ms())

    def size_hint(self, model_id: ModelId) -> int:
        """Bytes a new copy is expected to take, for placement (the runtime predicts at load)."""
        return self.cache.config.default_model_size_bytes

    def local_copies(self) -> list[CacheEntry]:
        """This instance's copies (queued, loading, loaded, unloading), as the cache accounts them."""
        return self.cache.ledger.entries()

    def cache_summary(self, lru_default_ms: int) -> CacheSummary:
        ledger = self.cache.ledger
        return CacheSummary(ledger.capacity_bytes, ledger.used_bytes, ledger.count(), ledger.lru_time_ms(lru_default_ms),
                            self.cache.config.max_loading_concurrency, self.cache.loads_in_progress,
                            self.cache.queued_loads)

    def registry_counts(self) -> tuple[int, int]:
        """(models registered, vmodels)."""
        return len(self.registry.models), len(self.registry.vmodels)

    def evict(self, model_id: ModelId) -> None:
        """Unload the copy here (in the background)."""
        self.cache.unload(model_id)

    async def load_on(self, target: InstanceRecord, model_id: ModelId, timeout_s: float, *,
                      last_used_ms: int = 0) -> None:
        """Load a copy of ``model_id`` on ``target`` (here, or a peer through its management API);
        ``last_used_ms``: the model's last use as the caller knows it (0: now)."""
        if target.instance_id == self.instance_id:
            await self.ensure_loaded(model_id, last_used_ms=last_used_ms)
            return
        assert self.peers is not None
        await self.peers.ensure_loaded(target.endpoint, model_id, timeout_s, last_used_ms=last_used_ms)

    async def forget_holders(self, model_id: ModelId, keep: Callable[[InstanceId], bool]) -> None:
        """Drop the copy entries of ``model_id``'s record for which ``keep`` is false."""
        await self.registry.mutate_model(
            model_id, lambda r: replace(r, instances={i: t for i, t in r.instances.items() if keep(i)}))

    def model_rpm(self, model_id: ModelId) -> int:
        return self.dispatcher.rates.per_minute(model_id, self.clock.monotonic())

    def model_rpm_at_most(self, model_id: ModelId) -> int:
        """An upper bound of ``model_rpm`` in O(1), to skip quiet models in scans of every copy."""
        return self.dispatcher.rates.upper_bound(model_id, self.clock.monotonic())

    def is_recurring(self, model_id: ModelId) -> bool:
        return self.dispatcher.rates.is_recurring(model_id)
