"""A request's own time reaches the runtime call: a loaded model is asked with the caller's
deadline, and after a load only with what the load left of it (mesh/instance.py dispatch)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from test_mesh_runtime_lost import INFO, MiB, FakeRuntime, _request

from kserve_mesh.core.clock import SystemClock
from kserve_mesh.core.ids import InstanceId, ModelId
from kserve_mesh.mesh.cache_manager import CacheConfig
from kserve_mesh.mesh.instance import Instance
from kserve_mesh.mesh.registry import Registry
from kserve_mesh.protocol import v2
from kserve_mesh.runtime.spi import LoadResult
from kserve_mesh.store.keys import Keys
from kserve_mesh.store.memory import MemoryStore


class TimedRuntime(FakeRuntime):
    """Records the timeout of each inference; loads take ``load_s``."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []
        self.load_s = 0.0

    async def load_model(self, model_id: str, info):  # type: ignore[no-untyped-def, override]
        await asyncio.sleep(self.load_s)
        return await super().load_model(model_id, info) or LoadResult(size_bytes=2 * MiB)

    async def infer(self, request: v2.ModelInferRequest, *, timeout: float | None = None) -> v2.ModelInferResponse:
        self.timeouts.append(timeout)
        return await super().infer(request, timeout=timeout)


@pytest.fixture()
async def timed() -> AsyncIterator[tuple[Instance, TimedRuntime]]:
    store = MemoryStore()
    store.start()
    runtime = TimedRuntime()
    inst = Instance(InstanceId("i1"), Registry(store, Keys.for_namespace("t")), runtime,
                    CacheConfig(8 * MiB, 1, 5.0, MiB), SystemClock())
    await inst.start()
    try:
        yield inst, runtime
    finally:
        await inst.stop()
        await store.close()


async def test_the_runtime_is_asked_with_the_time_the_request_has_left(timed) -> None:  # type: ignore[no-untyped-def]
    inst, runtime = timed
    await inst.register("m", INFO)
    runtime.load_s = 0.3
    await inst.infer(ModelId("m"), _request("m"), 2.0)  # a miss: the load takes ~0.3 s of the 2 s
    await inst.infer(ModelId("m"), _request("m"), 2.0)  # a hit: the whole 2 s
    after_load, hit = runtime.timeouts
    assert after_load is not None and 1.0 < after_load <= 1.75
    assert hit == 2.0
