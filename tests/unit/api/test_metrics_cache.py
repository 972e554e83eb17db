"""The cache manager's events as the metrics see them, with a real ``CacheManager`` and
``Telemetry`` and a fake runtime: a cache miss, the loading queue delay of a load queued behind
another, the sizing of a model whose load did not report its size, an eviction's age, a failed
load, unload attempts that fail (retried, then given up) and a runtime that no longer has the
model (an unload, not a failure)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prom_text import sample

from kserve_mesh.api.telemetry import Telemetry
from kserve_mesh.core.clock import SystemClock
from kserve_mesh.core.errors import ModelLoadFailed, ModelNotFound, Unavailable
from kserve_mesh.core.ids import ModelId
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.mesh import cache_manager
from kserve_mesh.mesh.cache_manager import CacheConfig, CacheManager
from kserve_mesh.protocol import v2
from kserve_mesh.runtime.spi import LoadResult, RuntimeState, RuntimeStatus

MiB = 1 << 20
INFO = ModelInfo("string", "/models/m")


class FakeRuntime:
    """Loads report 2 MiB, except ``unsized*`` (0: the mesh asks ``model_size``); ``broken*`` fail
    to load; ``slow`` waits for ``release``; unloads of ``flaky*`` fail once, of ``stuck*`` always;
    ``gone*`` is not in the runtime any more when unloaded."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.unload_calls: dict[str, int] = {}

    async def runtime_status(self) -> RuntimeStatus:
        return RuntimeStatus(RuntimeState.READY, 64 * MiB, 1, 30_000, MiB)

    async def load_model(self, model_id: str, info: ModelInfo) -> LoadResult:
        if model_id == "slow":
            await self.release.wait()
        if model_id.startswith("broken"):
            raise ModelLoadFailed(f"cannot load model '{model_id}': bad file")
        return LoadResult(size_bytes=0 if model_id.startswith("unsized") else 2 * MiB)

    async def unload_model(self, model_id: str) -> None:
        calls = self.unload_calls[model_id] = self.unload_calls.get(model_id, 0) + 1
        if model_id.startswith("stuck") or (model_id.startswith("flaky") and calls == 1):
            raise Unavailable("the runtime did not answer")
        if model_id.startswith("gone"):
            raise ModelNotFound(model_id)

    async def predict_model_size(self, model_id: str, info: ModelInfo) -> int:
        return 2 * MiB

    async def model_size(self, model_id: str) -> int:
        await asyncio.sleep(0.01)
        return 3 * MiB

    async def infer(self, request: v2.ModelInferRequest, *, timeout: float | None = None) -> v2.ModelInferResponse:
        return v2.ModelInferResponse(model_name=request.model_name)

    async def model_metadata(self, model_id: str) -> v2.ModelMetadataResponse:
        return v2.ModelMetadataResponse(name=model_id)

    async def close(self) -> None:
        pass


@pytest.fixture()
async def cache(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[CacheManager, FakeRuntime, Telemetry]]:
    monkeypatch.setattr(cache_manager, "UNLOAD_RETRY_BACKOFF_S", 0.01)
    runtime = FakeRuntime()
    telemetry = Telemetry(SystemClock())
    manager = CacheManager(runtime, CacheConfig(7 * MiB, 1, 5.0, MiB), SystemClock(), observer=telemetry)
    manager.start()
    try:
        yield manager, runtime, telemetry
    finally:
        await manager.close()


def scrape(telemetry: Telemetry) -> str:
    return telemetry.scrape()[0].decode()


async def _serve(manager: CacheManager, model_id: str) -> None:
    copy = manager.try_enter(ModelId(model_id)) or await manager.enter(ModelId(model_id), INFO, 0, 5.0)
    copy.leave()


async def _unload(manager: CacheManager, model_id: str) -> None:
    gone = manager.unload(ModelId(model_id))
    assert gone is not None
    await asyncio.wait_for(gone.wait(), 5.0)


async def test_a_miss_a_queued_load_and_a_hit(cache) -> None:  # type: ignore[no-untyped-def]
    manager, runtime, telemetry = cache
    slow = asyncio.create_task(_serve(manager, "slow"))
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(_serve(manager, "a"))  # the one load slot is taken: "a" queues
    await asyncio.sleep(0.1)
    runtime.release.set()
    await asyncio.gather(slow, queued)
    await _serve(manager, "a")  # a hit: no miss, no load
    text = scrape(telemetry)
    assert sample(text, "modelmesh_cache_miss_milliseconds_count") == 2
    assert sample(text, "modelmesh_cache_miss_milliseconds_sum") >= 2 * 100  # both waited for the slow load
    assert sample(text, "modelmesh_loading_queue_delay_milliseconds_count") == 2
    assert sample(text, "modelmesh_loading_queue_delay_milliseconds_sum") >= 100  # "a" waited for the slot
    assert sample(text, "modelmesh_loadmodel_milliseconds_count") == 2
    assert sample(text, "modelmesh_loaded_model_size_bytes_sum") == 4 * MiB
    assert sample(text, "modelmesh_model_sizing_milliseconds_count") == 0  # both loads reported a size


async def test_sizing_eviction_and_failed_load(cache) -> None:  # type: ignore[no-untyped-def]
    manager, _, telemetry = cache
    await _serve(manager, "unsized")  # 3 MiB, sized after its load
    await _serve(manager, "b")  # 2 MiB
    await _serve(manager, "c")  # 2 MiB: the 7 MiB are full
    with pytest.raises(ModelLoadFailed):  # makes room (the LRU copy is evicted), then fails to load
        await _serve(manager, "broken")
    text = scrape(telemetry)
    assert sample(text, "modelmesh_model_sizing_milliseconds_count") == 1
    assert sample(text, "modelmesh_model_sizing_milliseconds_sum") >= 10
    assert sample(text, "modelmesh_loaded_model_size_bytes_sum") == 7 * MiB
    assert sample(text, "modelmesh_age_at_eviction_milliseconds_count") == 1
    assert sample(text, "modelmesh_unloadmodel_milliseconds_count") == 1
    assert sample(text, "modelmesh_loadmodel_failure") == 1
    assert sample(text, "modelmesh_loadmodel_milliseconds_count") == 3


async def test_unload_attempts_and_failures(cache) -> None:  # type: ignore[no-untyped-def]
    manager, runtime, telemetry = cache
    for model_id in ("flaky", "stuck", "gone"):
        await _serve(manager, model_id)
    await _unload(manager, "flaky")  # fails once, then works
    await _unload(manager, "gone")  # the runtime does not have it: unloaded, no failure
    text = scrape(telemetry)
    assert sample(text, "modelmesh_unloadmodel_attempt_failure") == 1
    assert sample(text, "modelmesh_unloadmodel_failure") == 0
    assert sample(text, "modelmesh_unloadmodel_milliseconds_count") == 2
    await _unload(manager, "stuck")  # every attempt fails: the copy leaves the cache, one failure
    text = scrape(telemetry)
    assert runtime.unload_calls == {"flaky": 2, "gone": 1, "stuck": cache_manager.UNLOAD_ATTEMPTS}
    assert sample(text, "modelmesh_unloadmodel_attempt_failure") == 1 + cache_manager.UNLOAD_ATTEMPTS
    assert sample(text, "modelmesh_unloadmodel_failure") == 1
    assert sample(text, "modelmesh_unloadmodel_milliseconds_count") == 2
    assert ModelId("stuck") not in manager.copies and manager.ledger.used_bytes == 0
    assert sample(text, "modelmesh_age_at_eviction_milliseconds_count") == 0  # unloads asked for, not evictions
