"""Which loads the eviction policy sees as prefetches: a load no request waits for (an explicit
load, a copy re-homed from a leaving instance, an extra copy) is one; a request's miss is not, and
neither is a queued prefetch that a request came to wait for before it was reserved."""

from __future__ import annotations

import asyncio

from kserve_mesh.core.cache import CacheEntry, LruPolicy
from kserve_mesh.core.clock import SystemClock
from kserve_mesh.core.ids import ModelId
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.mesh.cache_manager import CacheConfig, CacheManager
from kserve_mesh.runtime.spi import LoadResult

MiB = 1 << 20
INFO = ModelInfo("string", "/models/m")


class Runtime:
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()

    async def load_model(self, model_id: str, info: ModelInfo) -> LoadResult:
        return LoadResult(size_bytes=MiB)

    async def unload_model(self, model_id: str) -> None:
        pass

    async def predict_model_size(self, model_id: str, info: ModelInfo) -> int:
        await self.gate.wait()
        return MiB


class Spy(LruPolicy):
    def __init__(self) -> None:
        super().__init__()
        self.reserved: dict[str, bool] = {}

    def on_reserve(self, entry: CacheEntry, now_ms: int, prefetch: bool = False) -> None:
        super().on_reserve(entry, now_ms, prefetch)
        self.reserved[entry.model_id] = prefetch


async def test_the_policy_is_told_which_loads_no_request_waits_for() -> None:
    runtime = Runtime()
    manager = CacheManager(runtime, CacheConfig(8 * MiB, 2, 5.0, MiB), SystemClock())
    spy = Spy()
    manager.ledger.policy = spy
    manager.start()
    try:
        placed = manager.request_load(ModelId("placed"), INFO, 0, request_waiting=False)
        await asyncio.wait_for(asyncio.shield(placed.ready), 5)
        copy = await manager.enter(ModelId("asked"), INFO, 0, 5.0)
        copy.leave()
        runtime.gate.clear()  # the next load stops before its reservation ...
        manager.request_load(ModelId("joined"), INFO, 0, request_waiting=False)
        waiting = asyncio.create_task(manager.enter(ModelId("joined"), INFO, 0, 5.0))
        await asyncio.sleep(0.05)  # ... while a request comes to wait for it
        runtime.gate.set()
        (await asyncio.wait_for(waiting, 5)).leave()
        assert spy.reserved == {"placed": True, "asked": False, "joined": False}
    finally:
        await manager.close()
