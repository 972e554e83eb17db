"""What a model or vmodel looks like to a caller: ModelMesh's ``ModelStatusInfo`` and
``VModelStatusInfo``, built from the registry record, this instance's copy and the live mesh.

A model's state, as ModelMesh reports it:

- LOADED when a copy is loaded here or on a live peer (copies listed: here first, then peers);
- LOADING while a copy here is queued or loading and no loaded copy exists anywhere;
- LOADING_FAILED when recent failures (``core.failures``) are all there is; their messages are
  the status's errors and each is listed as a LOADING_FAILED copy of the instance it failed on;
- NOT_LOADED otherwise; NOT_FOUND for an id nobody registered.

These are the views the front doors render (gRPC messages, REST JSON) and the vmodel rules
(``core.vmodel``) decide with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kserve_mesh.core import vmodel as vrules
from kserve_mesh.core.clock import Clock
from kserve_mesh.core.failures import FailurePolicy
from kserve_mesh.core.ids import InstanceId, ModelId
from kserve_mesh.core.records import CopyState, InstanceRecord, ModelInfo, ModelState, VModelState
from kserve_mesh.mesh.cache_manager import CacheManager
from kserve_mesh.mesh.copies import Phase
from kserve_mesh.mesh.registry import Registry


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


class StatusViews:
    """Builds statuses for one instance; ``live`` gives the mesh's live instances (None alone)."""

    def __init__(self, instance_id: InstanceId, registry: Registry, cache: CacheManager, failures: FailurePolicy,
                 clock: Clock, live: Callable[[], Mapping[InstanceId, InstanceRecord] | None]) -> None:
        self.instance_id = instance_id
        self.registry = registry
        self.cache = cache
        self.failures = failures
        self.clock = clock
        self.live = live

    def model(self, model_id: str) -> ModelStatus:
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
        live = self.live()
        remote = [] if live is None else [CopyView(i, ModelState.LOADED, t) for i, t in sorted(rec.instances.items())
                                          if i != self.instance_id and i in live]
        here = copy.phase if copy is not None else None
        if here is Phase.LOADED:
            state = ModelState.LOADED
            copies.append(CopyView(self.instance_id, ModelState.LOADED, entry.loaded_at_ms if entry else now))
            copies.extend(remote)
        elif remote:
            state = ModelState.LOADED
            copies.extend(remote)
            if here in (Phase.QUEUED, Phase.LOADING):
                copies.append(CopyView(self.instance_id, ModelState.LOADING, now))
        elif here in (Phase.QUEUED, Phase.LOADING):
            state = ModelState.LOADING
            copies.append(CopyView(self.instance_id, ModelState.LOADING, now))
        elif live_failures:
            state = ModelState.LOADING_FAILED
        else:
            state = ModelState.NOT_LOADED
        for f in reversed(live_failures):
            copies.append(CopyView(f.instance, ModelState.LOADING_FAILED, f.time_ms))
        last_used = max(rec.last_used_ms, entry.last_used_ms if entry else 0)
        if rec.registered_ms and last_used < rec.registered_ms:
            last_used = 0  # only the seed of its LRU place: never used
        size = entry.size_bytes if entry is not None and entry.state is CopyState.LOADED else 0
        return ModelStatus(model_id, state, errors if state is not ModelState.LOADED else (),
                           tuple(copies), size, last_used, rec.info)

    def models(self) -> list[ModelStatus]:
        return [self.model(m) for m in sorted(self.registry.models)]

    def rule_view(self, model_id: str) -> vrules.ModelView:
        """The model as the vmodel rules see it."""
        status = self.model(model_id)
        return vrules.ModelView(status.state, 1 if status.state is ModelState.LOADED else 0)

    def vmodel(self, vmodel_id: str, owner: str = "") -> VModelStatus:
        vm = self.registry.vmodels.get(vmodel_id)  # type: ignore[call-overload]
        if vm is None or (owner and vm.owner != owner):
            return VModelStatus(vmodel_id, VModelState.NOT_FOUND,
                                active_status=ModelStatus("", ModelState.NOT_FOUND))
        return VModelStatus(
            vmodel_id, vrules.status_of(vm), vm.active, vm.target, vm.owner,
            self.model(vm.active), self.model(vm.target) if vm.transitioning else None,
        )

    def vmodels(self) -> list[VModelStatus]:
        return [self.vmodel(v) for v in sorted(self.registry.vmodels)]
