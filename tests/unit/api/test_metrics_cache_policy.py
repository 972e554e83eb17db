"""The eviction policy's metrics (issue 12), with a real ``CacheManager`` and ``Telemetry`` and a fake
runtime: ``kserve_mesh_cache_*`` (policy, requests, hits, hit ratio, evictions, admissions refused,
evicted value, next victim's value, window share) next to ``modelmesh_instance_lru_*``, which keep
their meaning under every policy; the measured load time reaches the policy."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from prom_text import metric_names, sample

from kserve_mesh.api.telemetry import Telemetry
from kserve_mesh.core.clock import SystemClock
from kserve_mesh.core.ids import ModelId
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.mesh.cache_manager import CacheConfig, CacheManager
from kserve_mesh.runtime.spi import LoadResult

MiB = 1 << 20
INFO = ModelInfo("string", "/models/m")


class Runtime:
    """Every load takes 20 ms and reports 2 MiB."""

    async def load_model(self, model_id: str, info: ModelInfo) -> LoadResult:
        await asyncio.sleep(0.02)
        return LoadResult(size_bytes=2 * MiB)

    async def unload_model(self, model_id: str) -> None:
        pass

    async def predict_model_size(self, model_id: str, info: ModelInfo) -> int:
        return 2 * MiB


class Instance:
    """What ``Telemetry.refresh`` reads of an instance."""

    def __init__(self, cache: CacheManager) -> None:
        self.cache = cache

    def cache_summary(self, now_ms: int) -> SimpleNamespace:
        ledger = self.cache.ledger
        return SimpleNamespace(capacity_bytes=ledger.capacity_bytes, used_bytes=ledger.used_bytes,
                               copies=ledger.count(), lru_time_ms=ledger.lru_time_ms(now_ms))

    def model_records(self) -> list:
        return []


async def _serve(manager: CacheManager, model_id: str) -> None:
    copy = manager.try_enter(ModelId(model_id)) or await manager.enter(ModelId(model_id), INFO, 0, 5.0)
    copy.leave()


async def _run(policy: str) -> tuple[CacheManager, str]:
    telemetry = Telemetry(SystemClock())
    manager = CacheManager(Runtime(), CacheConfig(7 * MiB, 1, 5.0, MiB, eviction_policy=policy), SystemClock(),
                           observer=telemetry)
    telemetry.instance = Instance(manager)
    manager.start()
    try:
        for name in ["a", "a", "a", "b", "c", "d", "a"]:  # 3 copies fit: "d" evicts one
            await _serve(manager, name)
            await asyncio.sleep(0.01)
        for _ in range(100):  # the eviction's unload ends in the background
            if manager.ledger.count() <= 3 and manager.ledger.unloading_bytes() == 0:
                break
            await asyncio.sleep(0.01)
        return manager, telemetry.scrape()[0].decode()
    finally:
        await manager.close()


@pytest.mark.parametrize("policy", ["lru", "adaptive"])
async def test_policy_metrics(policy: str) -> None:
    manager, text = await _run(policy)
    assert sample(text, "kserve_mesh_cache_policy_info", policy=policy) == 1
    requests = sample(text, "kserve_mesh_cache_requests_total")
    hits = sample(text, "kserve_mesh_cache_hits_total")
    assert requests == 7 and hits == manager.ledger.hits >= 2
    assert sample(text, "kserve_mesh_cache_hit_ratio") == pytest.approx(hits / requests)
    assert sample(text, "kserve_mesh_cache_evictions_total") >= 1
    assert sample(text, "kserve_mesh_cache_admissions_refused_total") >= 1  # "b" or "c": never hit
    assert sample(text, "kserve_mesh_cache_evicted_value_total") >= 0
    assert {"modelmesh_instance_lru_seconds", "modelmesh_instance_lru_age_seconds"} <= metric_names(text)
    names = metric_names(text)
    if policy == "lru":
        assert "kserve_mesh_cache_victim_value" not in names
        assert "kserve_mesh_cache_window_fraction" not in names
        assert "kserve_mesh_cache_lru_shadow_hits_total" not in names
    else:
        # plain LRU with room for 3: a a a hit, b c d miss (d evicts a), a misses
        assert sample(text, "kserve_mesh_cache_lru_shadow_hits_total") == 2
        assert sample(text, "kserve_mesh_cache_lru_shadow_wins_total") == 0
        assert sample(text, "kserve_mesh_cache_victim_value") >= 0
        assert 0 <= sample(text, "kserve_mesh_cache_window_fraction") <= 1
        assert sample(text, "kserve_mesh_cache_evicted_value_total") > 0


async def test_the_measured_load_time_reaches_the_ledger() -> None:
    manager, _ = await _run("adaptive")
    entry = manager.ledger.get(ModelId("a"))
    assert entry is not None and entry.load_ms >= 20  # the runtime took 20 ms


def test_an_unknown_policy_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown eviction policy 'mru'"):
        CacheManager(Runtime(), CacheConfig(7 * MiB, 1, 5.0, MiB, eviction_policy="mru"), SystemClock())  # type: ignore[arg-type]
