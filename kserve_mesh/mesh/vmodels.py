"""vmodels: stable names that move from one model to another without downtime.

``setVModel`` to a new target keeps traffic on the active model until the target is loaded, then
switches in one compare-and-set step (``advance``, run when a load finishes here or, on the leader,
when another instance's load shows in the store). The rules themselves are pure
(``core.vmodel``); this module applies them to the registry: ownership checks, creating the target
model when ``modelInfo`` comes along, loading it, and deleting ``autoDelete`` models once no vmodel
refers to them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from kserve_mesh.core import vmodel as vrules
from kserve_mesh.core.clock import Clock
from kserve_mesh.core.errors import InvalidArgument, MeshError, VModelNotFound
from kserve_mesh.core.ids import ModelId, VModelId, check_ids
from kserve_mesh.core.records import ModelInfo, ModelState
from kserve_mesh.mesh.registry import Registry
from kserve_mesh.mesh.status import StatusViews, VModelStatus

log = logging.getLogger(__name__)

POLL_S = 0.02


class VModels:
    """The vmodels of one instance. ``register``, ``request_load(model_id, sync)`` and
    ``unregister`` are the instance's model management, which a vmodel change may need."""

    def __init__(self, registry: Registry, views: StatusViews, clock: Clock, *,
                 register: Callable[..., Awaitable[object]],
                 request_load: Callable[[ModelId, bool], Awaitable[None]],
                 unregister: Callable[[ModelId], Awaitable[None]],
                 load_timeout_s: float) -> None:
        self.registry = registry
        self.views = views
        self.clock = clock
        self._register = register
        self._request_load = request_load
        self._unregister = unregister
        self.load_timeout_s = load_timeout_s

    async def set(self, req: vrules.SetVModel, *, model_info: ModelInfo | None = None,
                  auto_delete: bool = False, load_now: bool = False, sync: bool = False) -> VModelStatus:
        check_ids(vmodel_id=req.vmodel_id, model_id=req.target)
        if not req.vmodel_id:
            raise InvalidArgument("vModelId must not be empty")
        existing = self.registry.vmodels.get(req.vmodel_id)
        vrules.check_owner(existing, req.vmodel_id, req.owner)
        active_view = self.views.rule_view(existing.active) if existing is not None else None
        target_view = self.views.rule_view(req.target)
        if model_info is not None and target_view.state is ModelState.NOT_FOUND:
            # Check the whole request before creating the target, so a refused call leaves nothing.
            vrules.decide_set(existing, req, active_view, vrules.ModelView(ModelState.NOT_LOADED))
        if model_info is not None:
            await self._register(req.target, model_info, auto_delete=auto_delete, load_now=load_now)
            target_view = self.views.rule_view(req.target)
        new = vrules.decide_set(existing, req, active_view, target_view)
        if new != existing:
            await self.registry.put_vmodel(new)
        if existing is not None and existing.active != new.active:
            await self.maybe_auto_delete(existing.active)
        if new.transitioning or load_now:
            # The target loads (a transition needs it loaded; a new vmodel loads if asked).
            await self._request_load(new.target, False)
        if sync and new.transitioning:
            await self._wait_transition(new.vmodel_id)
        elif sync and load_now:
            await self._request_load(new.target, True)
        return self.views.vmodel(req.vmodel_id)

    async def _wait_transition(self, vmodel_id: VModelId) -> None:
        deadline = self.clock.monotonic() + self.load_timeout_s + 5
        while self.clock.monotonic() < deadline:
            vm = self.registry.vmodels.get(vmodel_id)
            if vm is None or not vm.transitioning or vm.failed:
                return
            await asyncio.sleep(POLL_S)

    async def delete(self, vmodel_id: str, owner: str = "") -> None:
        vm = self.registry.vmodels.get(vmodel_id)  # type: ignore[call-overload]
        if vm is None:
            return
        if owner and vm.owner != owner:
            raise VModelNotFound(vmodel_id, f"vmodel '{vmodel_id}' with owner '{owner}' not found")
        await self.registry.delete_vmodel(vm.vmodel_id)
        for mid in vrules.referenced_models(vm):
            await self.maybe_auto_delete(mid)

    async def maybe_auto_delete(self, model_id: ModelId) -> None:
        rec = self.registry.models.get(model_id)
        if rec is not None and rec.auto_delete and self.registry.refcount(model_id) == 0:
            await self._unregister(model_id)

    async def advance(self, model_id: ModelId) -> None:
        """A load of ``model_id`` finished (here, or elsewhere as the store shows): move every vmodel
        waiting for it as its target on, each in one compare-and-set step."""
        for vm in list(self.registry.vmodels.values()):
            if vm.transitioning and vm.target == model_id:
                new = vrules.advance(vm, self.views.rule_view(model_id))
                if new != vm and self.registry.vmodels.get(vm.vmodel_id) == vm:
                    try:
                        swapped = await self.registry.cas_vmodel(vm, new)  # one atomic step
                    except MeshError as exc:
                        log.warning("could not advance vmodel %s: %s", vm.vmodel_id, exc)
                        continue
                    if swapped and new.active != vm.active:
                        log.info("vmodel %s now routes to %s (was %s)", vm.vmodel_id, new.active, vm.active)
                        await self.maybe_auto_delete(vm.active)
