"""Background duties of an instance in a mesh: copy scaling by request rate, and the leader's
janitor work. Each is one owned task with a bounded period; every remote call has a deadline.

Copy scaling (every ``rate_check_s``, for the models this instance holds): the instance with the
oldest copy of a model speaks for it, estimating the model's total rate as its own rate x copies
(routing spreads requests over the copies). Too few copies (above the rpm threshold per copy, a
recurring model with one copy, or fewer than ``min_copies``) -> load one more where placement says,
through that instance's management API. When free space is at most 5 % (checked every
``scale_down_s``), copies beyond what traffic and ``min_copies`` need are unloaded, never the last
one, and never the oldest copy of a model.

Leader janitor (every ``janitor_s``): loads registered models that have ``min_copies`` but fewer
live copies, and removes copy entries of instances that are gone. Leader preload (every
``preload_s``, 7 min as in ModelMesh): registered models with no copy are loaded into free space
(instances at most half full), the most recently used first, a bounded number per round.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import logging

from kserve_mesh.core.copies import CopyBounds, CopyUsage, desired_copies, scale_down_candidates
from kserve_mesh.core.errors import MeshError
from kserve_mesh.core.ids import ModelId
from kserve_mesh.core.placement import PlacementRequest, choose
from kserve_mesh.core.records import CopyState, ModelRecord
from kserve_mesh.mesh.instance import Instance

log = logging.getLogger(__name__)

YIELD_EVERY = 128


class Duties:
    def __init__(self, inst: Instance, *, threshold_rpm: int = 2000, rate_check_s: float = 10.0,
                 scale_down_s: float = 360.0, janitor_s: float = 60.0, preload_s: float = 420.0) -> None:
        self.inst = inst
        self.threshold_rpm = threshold_rpm
        self.rate_check_s = rate_check_s
        self.scale_down_s = scale_down_s
        self.janitor_s = janitor_s
        self.preload_s = preload_s
        self._frozen_at = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._every(self.rate_check_s, self.scale_up), name="copies-up"),
                       asyncio.create_task(self._every(self.scale_down_s, self.scale_down), name="copies-down"),
                       asyncio.create_task(self._every(self.janitor_s, self.janitor), name="janitor"),
                       asyncio.create_task(self._every(self.preload_s, self.preload), name="preload"),
                       asyncio.create_task(self._every(5.0, self.freeze_registry), name="gc-freeze")]

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _every(self, period: float, duty) -> None:  # type: ignore[no-untyped-def]
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), period)
                return
            except TimeoutError:
                pass
            try:
                await asyncio.wait_for(duty(), max(period, 5.0) * 3)
            except (MeshError, TimeoutError, OSError) as exc:
                log.info("%s skipped this round: %s", getattr(duty, "__name__", "duty"), exc)

    # -- helpers ---------------------------------------------------------------------------------
    def _live_holders(self, rec: ModelRecord) -> list[str]:
        live = self.inst.live_instances() or {}
        return sorted((i for i in rec.instances if i in live and not live[i].shutting_down),
                      key=lambda i: (rec.instances[i], i))

    async def _add_copy(self, model_id: ModelId, holders: list[str], size: int) -> bool:
        live = self.inst.live_instances() or {}
        target = choose(live.values(),
                        PlacementRequest(size, self.inst.clock.now_ms(), holders=set(holders), min_churn_age_ms=0))
        if target is None:
            return False
        await self.inst.load_on(target, model_id, 10.0)
        log.info("adding a copy of %s on %s (%d copies before)", model_id, target.instance_id, len(holders))
        return True

    # -- duties ----------------------------------------------------------------------------------
    async def scale_up(self) -> None:
        inst = self.inst
        live = inst.live_instances()
        if live is None or inst.shutting_down:
            return
        for n, entry in enumerate(inst.local_copies()):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a long scan must not stall requests
            if entry.state is not CopyState.LOADED:
                continue
            rec = inst.model_record(entry.model_id)
            if rec is None:
                continue
            # Only three rules add a copy: min_copies, a recurring model, and a rate per copy above
            # the threshold (this copy's own rate is the rate per copy). Every other copy is skipped
            # in O(1): with 10,000 copies a full check of each stalled requests for ~300 ms every
            # rate check (benchmarks/density.py).
            if (rec.min_copies < 2 and not inst.is_recurring(entry.model_id)
                    and inst.model_rpm_at_most(entry.model_id) <= self.threshold_rpm):
                continue
            holders = self._live_holders(rec)
            if not holders or holders[0] != inst.instance_id:
                continue  # the holder of the oldest copy speaks for the model
            copies = len(holders)
            rpm = inst.model_rpm(entry.model_id) * copies
            want = desired_copies(copies=copies, rpm=rpm, instances=len(live),
                                  bounds=CopyBounds(rec.min_copies, rec.max_copies), threshold_rpm=self.threshold_rpm,
                                  recurring=inst.is_recurring(entry.model_id))
            for _ in range(want - copies):
                if not await self._add_copy(entry.model_id, holders, entry.size_bytes):
                    break
                holders = holders + ["?"]  # placement skips real holders; count the new one

    async def scale_down(self) -> None:
        inst = self.inst
        if inst.live_instances() is None:
            return
        usage = []
        for n, entry in enumerate(inst.local_copies()):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            rec = inst.model_record(entry.model_id)
            if entry.state is not CopyState.LOADED or rec is None or len(rec.instances) < 2:
                continue
            holders = self._live_holders(rec)
            if len(holders) < 2 or holders[0] == inst.instance_id:
                continue  # never the last copy, never the oldest one
            usage.append(CopyUsage(entry.model_id, len(holders), inst.model_rpm(entry.model_id) * len(holders),
                                   CopyBounds(rec.min_copies, rec.max_copies)))
        cache = inst.cache_summary(lru_default_ms=0)
        free_fraction = (cache.capacity_bytes - cache.used_bytes) / cache.capacity_bytes
        for model_id in scale_down_candidates(usage, free_fraction=free_fraction, threshold_rpm=self.threshold_rpm):
            log.info("space is short: dropping the extra copy of %s here", model_id)
            inst.evict(ModelId(model_id))

    async def janitor(self) -> None:
        inst = self.inst
        live = inst.live_instances()
        if live is None or not inst.is_leader or not inst.registry_synced:
            return
        for n, rec in enumerate(inst.model_records()):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if not rec.instances and rec.min_copies == 0:
                continue
            if any(i not in live for i in rec.instances):
                await inst.forget_holders(rec.model_id, keep=lambda i: i in (inst.live_instances() or {}))
            holders = self._live_holders(rec)
            if rec.min_copies > len(holders) and not inst.load_blocked(rec):
                await self._add_copy(rec.model_id, holders, inst.size_hint(rec.model_id))

    async def preload(self, per_round: int = 20) -> None:
        inst = self.inst
        live = inst.live_instances()
        if live is None or not inst.is_leader or not inst.registry_synced:
            return
        roomy = [r for r in live.values() if r.accepts_loads and r.used_bytes * 2 <= r.capacity_bytes]
        if not roomy:
            return
        # The most recently used models without a copy, found in chunks (100,000 records in one go
        # would stall requests for ~50 ms).
        idle: list[tuple[int, str, ModelRecord]] = []
        for n, rec in enumerate(inst.model_records()):
            if n % (YIELD_EVERY * 8) == 0:
                await asyncio.sleep(0)
            if rec.instances or inst.load_blocked(rec):
                continue
            item = (rec.last_used_ms, rec.model_id, rec)
            if len(idle) < per_round:
                heapq.heappush(idle, item)
            elif item[:2] > idle[0][:2]:
                heapq.heapreplace(idle, item)
        for _, _, rec in sorted(idle, key=lambda it: it[:2], reverse=True):
            if not await self._add_copy(rec.model_id, [], inst.size_hint(rec.model_id)):
                return

    async def freeze_registry(self) -> None:
        """Move the registry's records (and the copies) out of the garbage collector's reach when they
        have grown.

        With 100,000 records, every full collection walked them all (55-280 ms pauses on the event
        loop, measured by benchmarks/density.py). Records are immutable and hold no reference
        cycles, so freezing them is safe; it is redone only when the registry grew by half, so the
        few cyclic objects alive at a freeze stay bounded.
        """
        # Long-lived objects: registry records, and the copies with their futures and events.
        (models, _), copies = self.inst.registry_counts(), len(self.inst.local_copies())
        size = models + 8 * copies
        if size >= 10_000 and size > self._frozen_at * 1.5:
            gc.freeze()
            self._frozen_at = size
            log.info("froze %d long-lived objects out of the collector (%d models, %d copies)",
                     gc.get_freeze_count(), models, copies)
