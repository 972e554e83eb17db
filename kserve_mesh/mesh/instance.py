"""One mesh instance: the registry, the cache manager and the rules that join them.

Front doors call this class and nothing below it. It answers the ModelMesh management API
(register, unregister, status, ensureLoaded, vmodels), resolves request targets (vmodel first, then
model, as ModelMesh does with ``model_name``), and runs inference on a local copy, loading the model
first on a miss. Status and failure bookkeeping use the pure rules in ``core``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from kserve_mesh.core import vmodel as vrules
from kserve_mesh.core.clock import Clock
from kserve_mesh.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    MeshError,
    ModelLoadFailed,
    ModelNotFound,
    NotFound,
    VModelNotFound,
)
from kserve_mesh.core.copies import wants_second_copy
from kserve_mesh.core.failures import FailurePolicy
from kserve_mesh.core.rates import RateCounter
from kserve_mesh.core.ids import InstanceId, ModelId, VModelId, check_ids
from kserve_mesh.core.records import (
    NEW_MODEL_AGE_LAZY_MS,
    NEW_MODEL_AGE_LOAD_NOW_MS,
    CopyState,
    ModelInfo,
    ModelRecord,
    ModelState,
    VModelState,
)
from kserve_mesh.mesh.cache_manager import CacheConfig, CacheManager, LoadOutcome
from kserve_mesh.mesh.cluster import Cluster
from kserve_mesh.mesh.copies import Phase
from kserve_mesh.mesh.peers import PeerPool
from kserve_mesh.mesh.registry import Registry
from kserve_mesh.mesh.router import GrpcHop, Hop, route
from kserve_mesh.protocol import v2
from kserve_mesh.runtime.spi import ModelRuntime

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CopyView:
    location: str
    state: ModelState
    time_ms: int


@dataclass(frozen=True, slots=True)
class ModelStatus:
    model_id: str
    state: ModelState
    errors: tuple[str, ...] = ()
    copies: tuple[CopyView, ...] = ()
    size_bytes: int = 0
    last_used_ms: int = 0
    info: ModelInfo | None = None


@dataclass(frozen=True, slots=True)
class VModelStatus:
    vmodel_id: str
    state: VModelState
    active: str = ""
    target: str = ""
    owner: str = ""
    active_status: ModelStatus | None = None
    target_status: ModelStatus | None = None


@dataclass(slots=True)
class Stats:
    requests: int = 0
    loads: int = 0
    load_failures: int = 0
    evictions: int = 0
    recent: list[float] = field(default_factory=list)


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
        self.metrics = metrics
        self.cache = CacheManager(runtime, cache, clock, on_load=self._loaded, on_unload=self._unloaded)
        self.stats = Stats()
        self._background: set[asyncio.Task[None]] = set()
        self.cluster: Cluster | None = None
        self.peers: PeerPool | None = None
        self.ready = False
        self.shutting_down = False
        self._was_ready = False
        self._rates: dict[ModelId, RateCounter] = {}
        self._recurring: set[ModelId] = set()

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
        log.info("runtime serving again: ready; models load again on demand")

    def attach(self, cluster: Cluster, peers: PeerPool) -> None:
        """Join a mesh of several instances: route misses through the cluster, follow the store."""
        self.cluster = cluster
        self.peers = peers
        self.registry.listeners.append(self._registry_changed)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.registry.load()
        self.cache.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.cache.close()

    def _spawn(self, coro, name: str) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the data plane --------------------------------------------------------------------------
    def resolve(self, name: str = "", *, model_id: str = "", vmodel_id: str = "") -> ModelId:
        """The concrete model a request is for: headers first, then ``model_name`` as a vmodel, then
        as a model."""
        if vmodel_id:
            vm = self.registry.vmodels.get(vmodel_id)  # type: ignore[call-overload]
            if vm is None:
                raise VModelNotFound(vmodel_id)
            return vm.active
        if model_id:
            if model_id not in self.registry.models:
                raise ModelNotFound(model_id)
            return ModelId(model_id)
        if not name:
            raise InvalidArgument("no model named: set model_name or the mm-model-id / mm-vmodel-id header")
        vm = self.registry.vmodels.get(name)  # type: ignore[call-overload]
        if vm is not None:
            return vm.active
        if name in self.registry.models:
            return ModelId(name)
        raise ModelNotFound(name)

    async def lookup(self, name: str = "", *, model_id: str = "", vmodel_id: str = "",
                     forwarded: bool = False) -> ModelId:
        """``resolve``, but in a mesh of several instances a miss is checked against the store."""
        if forwarded and model_id:
            return ModelId(model_id)  # the sending instance resolved it already
        try:
            return self.resolve(name, model_id=model_id, vmodel_id=vmodel_id)
        except NotFound:
            if self.cluster is None:
                raise
        try:
            await self.registry.fetch(vmodel_id or model_id or name)
        except MeshError as exc:
            log.info("store lookup failed: %s", exc)
        return self.resolve(name, model_id=model_id, vmodel_id=vmodel_id)

    async def infer(self, model_id: ModelId, request: v2.ModelInferRequest, timeout_s: float = 60.0, *,
                    forwarded: bool = False, balanced: bool = False) -> v2.ModelInferResponse:
        return await self.dispatch(model_id, GrpcHop(self, model_id, request), timeout_s, forwarded=forwarded,
                                   balanced=balanced)

    async def dispatch(self, model_id: ModelId, hop: Hop[T], timeout_s: float = 60.0, *,
                       forwarded: bool = False, balanced: bool = False) -> T:
        """Serve one request: with a local copy, or (in a mesh, unless it was forwarded here) routed
        to an instance that has one or should load one."""
        copy = self.cache.try_enter(model_id)
        if copy is not None and copy.inflight > 1 and self.cluster is not None and not (forwarded or balanced):
            # Unbalanced traffic (no mm-balanced): a busy local copy hands the request to a less busy
            # holder elsewhere, as ModelMesh does.
            peer = self._less_busy_holder(model_id, copy.inflight - 1)
            if peer is not None:
                copy.leave()
                return await route(self, model_id, hop, timeout_s, prefer=peer)
        if copy is None:
            if self.cluster is not None and not forwarded:
                return await route(self, model_id, hop, timeout_s)
            hop.prepare()  # a bad request fails before it causes a load
            started = self.clock.monotonic()
            copy = await self._enter_slow(model_id, timeout_s)
            timeout_s = max(0.001, timeout_s - (self.clock.monotonic() - started))  # what the load left
        if self.cluster is not None:
            self._count(model_id)
        try:
            return await hop.run(timeout_s)
        finally:
            copy.leave()

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

    def _count(self, model_id: ModelId) -> None:
        rate = self._rates.get(model_id)
        now = self.clock.monotonic()
        if rate is None:
            rate = self._rates[model_id] = RateCounter()
        elif wants_second_copy(int(rate.last * 1000), int(now * 1000), copies=1):
            self._recurring.add(model_id)
        rate.hit(now)

    def model_rpm(self, model_id: ModelId) -> int:
        rate = self._rates.get(model_id)
        return 0 if rate is None else rate.per_minute(self.clock.monotonic())

    def model_rpm_at_most(self, model_id: ModelId) -> int:
        """An upper bound of ``model_rpm`` in O(1), to skip quiet models in scans of every copy."""
        rate = self._rates.get(model_id)
        return 0 if rate is None else rate.upper_bound(self.clock.monotonic())

    def is_recurring(self, model_id: ModelId) -> bool:
        return model_id in self._recurring

    async def serve_local(self, model_id: ModelId, hop: Hop[T], timeout_s: float) -> T:
        """Serve from this instance's runtime, loading the model here first if needed."""
        return await self.dispatch(model_id, hop, timeout_s, forwarded=True)

    def size_hint(self, model_id: ModelId) -> int:
        """Bytes a new copy is expected to take, for placement (the runtime predicts at load)."""
        return self.cache.config.default_model_size_bytes

    async def with_loaded(self, model_id: ModelId, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
        """Load the model if needed and return its copy, entered; the caller must ``leave()``."""
        return self.cache.try_enter(model_id) or await self._enter_slow(model_id, timeout_s)

    async def _enter_slow(self, model_id: ModelId, timeout_s: float):  # type: ignore[no-untyped-def]
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

    async def model_metadata(self, model_id: ModelId, timeout_s: float = 60.0) -> v2.ModelMetadataResponse:
        copy = await self.with_loaded(model_id, timeout_s)
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
                              min_copies=min_copies, max_copies=max_copies)
            stored = await self.registry.create_model(rec)
            if stored.info != info:  # another instance registered the same id at the same moment
                raise AlreadyExists(f"model '{model_id}' is already registered with different type/path/key")
        if load_now:
            await self._ensure_loaded(mid, sync=sync)
        return self.model_status(mid)

    async def unregister(self, model_id: str) -> None:
        mid = ModelId(model_id)
        if mid not in self.registry.models:
            return
        users = [vm.vmodel_id for vm in self.registry.vmodels.values() if mid in (vm.active, vm.target)]
        if users:
            raise FailedPrecondition(f"model '{model_id}' is referenced by vmodel(s) {', '.join(sorted(users))}")
        await self.registry.delete_model(mid)
        gone = self.cache.unload(mid)
        if gone is not None:
            try:
                await asyncio.wait_for(gone.wait(), 5.0)
            except TimeoutError:
                pass  # the unload goes on in the background

    async def unload_copy(self, model_id: str) -> None:
        """Unload this instance's copy (the V2 repository unload); the model stays registered."""
        mid = ModelId(model_id)
        if mid not in self.registry.models:
            raise ModelNotFound(model_id)
        gone = self.cache.unload(mid)
        if gone is not None:
            try:
                await asyncio.wait_for(gone.wait(), 30.0)
            except TimeoutError:
                pass

    async def ensure_loaded(self, model_id: str, *, last_used_ms: int = 0, sync: bool = False) -> ModelStatus:
        mid = ModelId(model_id)
        rec = self.registry.models.get(mid)
        if rec is None:
            raise ModelNotFound(model_id)
        touch = last_used_ms or self.clock.now_ms()
        if touch > rec.last_used_ms:
            await self.registry.put_model(replace(rec, last_used_ms=touch))
        self.cache.ledger.touch(mid, touch)
        await self._ensure_loaded(mid, sync=sync)
        return self.model_status(mid)

    async def _ensure_loaded(self, mid: ModelId, *, sync: bool) -> None:
        rec = self.registry.models[mid]
        copy = self.cache.request_load(mid, rec.info, rec.last_used_ms, request_waiting=sync)
        if sync:
            try:
                await asyncio.wait_for(asyncio.shield(copy.ready), self.cache.config.load_timeout_s + 5)
            except (MeshError, TimeoutError):
                pass  # the status returned carries the failure

    def model_status(self, model_id: str) -> ModelStatus:
        mid = ModelId(model_id)
        rec = self.registry.models.get(mid)
        if rec is None:
            return ModelStatus(model_id, ModelState.NOT_FOUND)
        now = self.clock.now_ms()
        copy = self.cache.copies.get(mid)
        entry = self.cache.ledger.get(mid)
        live_failures = self.failures.live(rec.failures, now)
        errors = tuple(f.message for f in reversed(live_failures))
        copies: list[CopyView] = []
        remote = []
        if self.cluster is not None:
            remote = [CopyView(i, ModelState.LOADED, t) for i, t in sorted(rec.instances.items())
                      if i != self.instance_id and i in self.cluster.instances]
        if copy is not None and copy.phase is Phase.LOADED:
            state = ModelState.LOADED
            copies.append(CopyView(self.instance_id, ModelState.LOADED, entry.loaded_at_ms if entry else now))
            copies.extend(remote)
        elif remote:
            state = ModelState.LOADED
            copies.extend(remote)
            if copy is not None and copy.phase in (Phase.QUEUED, Phase.LOADING):
                copies.append(CopyView(self.instance_id, ModelState.LOADING, now))
        elif copy is not None and copy.phase in (Phase.QUEUED, Phase.LOADING):
            state = ModelState.LOADING
            copies.append(CopyView(self.instance_id, ModelState.LOADING, now))
        elif live_failures:
            state = ModelState.LOADING_FAILED
        else:
            state = ModelState.NOT_LOADED
        for f in reversed(live_failures):
            copies.append(CopyView(f.instance, ModelState.LOADING_FAILED, f.time_ms))
        last_used = max(rec.last_used_ms, entry.last_used_ms if entry else 0)
        size = entry.size_bytes if entry is not None and entry.state is CopyState.LOADED else 0
        return ModelStatus(model_id, state, errors if state is not ModelState.LOADED else (),
                           tuple(copies), size, last_used, rec.info)

    def list_models(self) -> list[ModelStatus]:
        return [self.model_status(m) for m in sorted(self.registry.models)]

    # -- management: vmodels ---------------------------------------------------------------------
    def _view(self, model_id: str) -> vrules.ModelView:
        status = self.model_status(model_id)
        return vrules.ModelView(status.state, 1 if status.state is ModelState.LOADED else 0)

    async def set_vmodel(self, req: vrules.SetVModel, *, model_info: ModelInfo | None = None,
                         auto_delete: bool = False, load_now: bool = False, sync: bool = False) -> VModelStatus:
        check_ids(vmodel_id=req.vmodel_id, model_id=req.target)
        if not req.vmodel_id:
            raise InvalidArgument("vModelId must not be empty")
        existing = self.registry.vmodels.get(req.vmodel_id)
        vrules.check_owner(existing, req.vmodel_id, req.owner)
        active_view = self._view(existing.active) if existing is not None else None
        target_view = self._view(req.target)
        if model_info is not None and target_view.state is ModelState.NOT_FOUND:
            # Check the whole request before creating the target, so a refused call leaves nothing.
            vrules.decide_set(existing, req, active_view, vrules.ModelView(ModelState.NOT_LOADED))
        if model_info is not None:
            await self.register(req.target, model_info, auto_delete=auto_delete, load_now=load_now)
            target_view = self._view(req.target)
        new = vrules.decide_set(existing, req, active_view, target_view)
        if new != existing:
            await self.registry.put_vmodel(new)
        if existing is not None and existing.active != new.active:
            await self._maybe_auto_delete(existing.active)
        if new.transitioning or load_now or existing is None:
            # The target loads (a transition needs it loaded; a new vmodel loads if asked).
            if new.transitioning or load_now:
                await self._ensure_loaded(new.target, sync=False)
        if sync and new.transitioning:
            await self._wait_transition(new.vmodel_id)
        elif sync and load_now:
            await self._ensure_loaded(new.target, sync=True)
        return self.vmodel_status(req.vmodel_id)

    async def _wait_transition(self, vmodel_id: VModelId) -> None:
        deadline = self.clock.monotonic() + self.cache.config.load_timeout_s + 5
        while self.clock.monotonic() < deadline:
            vm = self.registry.vmodels.get(vmodel_id)
            if vm is None or not vm.transitioning or vm.failed:
                return
            await asyncio.sleep(0.02)

    async def delete_vmodel(self, vmodel_id: str, owner: str = "") -> None:
        vm = self.registry.vmodels.get(vmodel_id)  # type: ignore[call-overload]
        if vm is None:
            return
        if owner and vm.owner != owner:
            raise VModelNotFound(vmodel_id, f"vmodel '{vmodel_id}' with owner '{owner}' not found")
        await self.registry.delete_vmodel(vm.vmodel_id)
        for mid in vrules.referenced_models(vm):
            await self._maybe_auto_delete(mid)

    def vmodel_status(self, vmodel_id: str, owner: str = "") -> VModelStatus:
        vm = self.registry.vmodels.get(vmodel_id)  # type: ignore[call-overload]
        if vm is None or (owner and vm.owner != owner):
            return VModelStatus(vmodel_id, VModelState.NOT_FOUND,
                                active_status=ModelStatus("", ModelState.NOT_FOUND))
        return VModelStatus(
            vmodel_id, vrules.status_of(vm), vm.active, vm.target, vm.owner,
            self.model_status(vm.active), self.model_status(vm.target) if vm.transitioning else None,
        )

    async def _maybe_auto_delete(self, model_id: ModelId) -> None:
        rec = self.registry.models.get(model_id)
        if rec is not None and rec.auto_delete and self.registry.refcount(model_id) == 0:
            await self.unregister(model_id)

    async def _advance_vmodels(self, model_id: ModelId) -> None:
        for vm in list(self.registry.vmodels.values()):
            if vm.transitioning and vm.target == model_id:
                new = vrules.advance(vm, self._view(model_id))
                if new != vm and self.registry.vmodels.get(vm.vmodel_id) == vm:
                    try:
                        swapped = await self.registry.cas_vmodel(vm, new)  # one atomic step
                    except MeshError as exc:
                        log.warning("could not advance vmodel %s: %s", vm.vmodel_id, exc)
                        continue
                    if swapped and new.active != vm.active:
                        log.info("vmodel %s now routes to %s (was %s)", vm.vmodel_id, new.active, vm.active)
                        await self._maybe_auto_delete(vm.active)

    # -- listeners -------------------------------------------------------------------------------
    def _loaded(self, outcome: LoadOutcome) -> None:
        if self.metrics is not None:
            self.metrics.on_load(outcome)
        mid = outcome.model_id
        rec = self.registry.models.get(mid)
        now = self.clock.now_ms()
        me = self.instance_id
        if outcome.ok:
            self.stats.loads += 1
            if rec is None:  # unregistered while loading
                self.cache.unload(mid)
                return

            def change(r: ModelRecord) -> ModelRecord:
                return replace(r, instances={**r.instances, me: now},
                               failures=tuple(f for f in r.failures if f.instance != me))
        else:
            self.stats.load_failures += 1
            if rec is None or outcome.runtime_fault:
                return  # the runtime could not be reached: not a failure of this model (no LOADING_FAILED)
            message = str(outcome.error)

            def change(r: ModelRecord) -> ModelRecord:
                instances = {i: t for i, t in r.instances.items() if i != me}
                return replace(r, instances=instances, failures=self.failures.record(r.failures, me, message, now))
        # Status reads see the change at once; the store gets it by compare-and-set after.
        self.registry.models[mid] = change(rec)
        self._spawn(self._mutate(mid, change), f"record:{mid}")
        self._spawn(self._advance_vmodels(mid), f"vmodels:{mid}")

    async def _mutate(self, model_id: ModelId, change) -> None:  # type: ignore[no-untyped-def]
        try:
            await self.registry.mutate_model(model_id, change)
        except MeshError as exc:
            log.warning("could not update the record of %s: %s", model_id, exc)

    def _unloaded(self, model_id: ModelId, last_used_ms: int, duration_s: float) -> None:
        self.stats.evictions += 1
        if self.metrics is not None:
            self.metrics.on_unload(model_id, last_used_ms, duration_s)
        rec = self.registry.models.get(model_id)
        if rec is None:
            return
        me = self.instance_id

        def change(r: ModelRecord) -> ModelRecord:
            return replace(r, instances={i: t for i, t in r.instances.items() if i != me},
                           last_used_ms=max(r.last_used_ms, last_used_ms))

        self.registry.models[model_id] = change(rec)
        self._spawn(self._mutate(model_id, change), f"record:{model_id}")

    def _registry_changed(self, kind: str, ident: str) -> None:
        """A change another instance made (seen through the store watch)."""
        if kind == "model":
            mid = ModelId(ident)
            if mid not in self.registry.models and mid in self.cache.copies:
                self.cache.unload(mid)  # unregistered elsewhere: drop our copy
            elif self.cluster is not None and self.cluster.is_leader:
                self._spawn(self._advance_vmodels(mid), f"vmodels:{mid}")
