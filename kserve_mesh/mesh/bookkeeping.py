"""The registry's record of each model kept true to what happens to its copies here.

A load here that worked adds this instance to the model's copies and clears its failures here; a
load that failed records the failure (``core.failures``: after 3 in 7.5 minutes no new load is
tried until they expire) unless the runtime itself could not be reached, which is not the model's
fault; an unload or eviction removes this instance and keeps the latest use time. Status reads see
a change at once (the local map is updated first); the store gets it by compare-and-set after, in
a background task owned here. Each load also moves on the vmodels waiting for the model.

Changes other instances make arrive through the store watch (``registry_changed``): a model
unregistered elsewhere loses its copy here, and the leader advances vmodels on others' loads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from kserve_mesh.core.clock import Clock
from kserve_mesh.core.errors import MeshError
from kserve_mesh.core.failures import FailurePolicy
from kserve_mesh.core.ids import InstanceId, ModelId
from kserve_mesh.core.records import ModelRecord
from kserve_mesh.mesh.cache_manager import CacheManager, LoadOutcome
from kserve_mesh.mesh.registry import Registry

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Stats:
    requests: int = 0
    loads: int = 0
    load_failures: int = 0
    evictions: int = 0
    recent: list[float] = field(default_factory=list)


class Bookkeeping:
    """``loaded`` / ``unloaded`` are the cache manager's listeners, ``registry_changed`` the
    registry's; ``advance(model_id)`` moves vmodels on. (The cache's ``CacheObserver`` times them.)"""

    def __init__(self, instance_id: InstanceId, registry: Registry, cache: Callable[[], CacheManager],
                 failures: FailurePolicy, clock: Clock, *, advance: Callable[[ModelId], Awaitable[None]],
                 is_leader: Callable[[], bool]) -> None:
        self.instance_id = instance_id
        self.registry = registry
        self._cache = cache
        self.failures = failures
        self.clock = clock
        self.advance = advance
        self.is_leader = is_leader
        self.stats = Stats()
        self._background: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def loaded(self, outcome: LoadOutcome) -> None:
        mid = outcome.model_id
        rec = self.registry.models.get(mid)
        now = self.clock.now_ms()
        me = self.instance_id
        if outcome.ok:
            self.stats.loads += 1
            if rec is None:  # unregistered while loading
                self._cache().unload(mid)
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
        self._change(mid, rec, change)
        self._spawn(self.advance(mid), f"vmodels:{mid}")

    def unloaded(self, model_id: ModelId, last_used_ms: int, duration_s: float) -> None:
        self.stats.evictions += 1
        rec = self.registry.models.get(model_id)
        if rec is None:
            return
        me = self.instance_id

        def change(r: ModelRecord) -> ModelRecord:
            return replace(r, instances={i: t for i, t in r.instances.items() if i != me},
                           last_used_ms=max(r.last_used_ms, last_used_ms))

        self._change(model_id, rec, change)

    def registry_changed(self, kind: str, ident: str) -> None:
        """A change another instance made (seen through the store watch)."""
        if kind == "model":
            mid = ModelId(ident)
            cache = self._cache()
            if mid not in self.registry.models and mid in cache.copies:
                cache.unload(mid)  # unregistered elsewhere: drop our copy
            elif self.is_leader():
                self._spawn(self.advance(mid), f"vmodels:{mid}")

    def _change(self, model_id: ModelId, rec: ModelRecord, change: Callable[[ModelRecord], ModelRecord]) -> None:
        # Status reads see the change at once; the store gets it by compare-and-set after.
        self.registry.models[model_id] = change(rec)
        self._spawn(self._mutate(model_id, change), f"record:{model_id}")

    async def _mutate(self, model_id: ModelId, change: Callable[[ModelRecord], ModelRecord]) -> None:
        try:
            await self.registry.mutate_model(model_id, change)
        except MeshError as exc:
            log.warning("could not update the record of %s: %s", model_id, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
