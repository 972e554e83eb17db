"""Memory truth (issue 16), the pure parts: the watch's arithmetic (reconcile beyond the margin,
recycle past the threshold, once per interval), size mispredictions, the allocator's environment,
and the built-in runtime's memory report and release."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kserve_mesh.core.cache import CacheLedger
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.mesh.memory import MemorySettings, MemoryWatch, excess_to_count, mispredicted
from kserve_mesh.mesh.runtime_process import JEMALLOC_CONF, allocator_env
from kserve_mesh.runtime.builtin import BuiltinRuntime
from kserve_mesh.runtime.builtin.fetch import LocalFetcher
from kserve_mesh.runtime.builtin.sizing import can_release_free_memory, release_free_memory

MiB = 1 << 20


class LedgerCache:
    """What the watch uses of the cache manager, over a real ledger."""

    def __init__(self, capacity: int) -> None:
        self.ledger = CacheLedger(capacity)

    def accounted_bytes(self) -> int:
        return self.ledger.accounted_bytes

    def count_unaccounted(self, wanted_bytes: int) -> int:
        return self.ledger.count_unaccounted(wanted_bytes)


def test_excess_and_mispredictions() -> None:
    assert excess_to_count(100 * MiB, 128 * MiB) == 0
    assert excess_to_count(200 * MiB, 128 * MiB) == 72 * MiB
    assert not mispredicted(100, 150, 2.0) and mispredicted(100, 201, 2.0) and mispredicted(300, 100, 2.0)
    assert not mispredicted(0, 100, 2.0)


async def test_the_watch_counts_what_exceeds_the_margin_and_never_overfills() -> None:
    cache = LedgerCache(100 * MiB)
    assert cache.ledger.try_reserve("m", 30 * MiB, 0)
    watch = MemoryWatch(None, cache, MemorySettings(margin_bytes=10 * MiB))  # type: ignore[arg-type]
    snap = watch.observe(resident=200 * MiB + 30 * MiB + 25 * MiB, baseline=200 * MiB)
    assert snap.unaccounted_bytes == 25 * MiB and snap.counted_bytes == 15 * MiB
    assert cache.ledger.used_bytes == 45 * MiB
    # far more than fits: only the free space is counted, used never exceeds capacity
    snap = watch.observe(resident=200 * MiB + 30 * MiB + 500 * MiB, baseline=200 * MiB)
    assert snap.counted_bytes == 70 * MiB and cache.ledger.used_bytes == 100 * MiB
    # back within the margin: nothing counted
    watch.observe(resident=200 * MiB + 30 * MiB, baseline=200 * MiB)
    assert cache.ledger.used_bytes == 30 * MiB
    # reconciliation off: never counted
    off = MemoryWatch(None, cache, MemorySettings(reconcile=False, margin_bytes=0))  # type: ignore[arg-type]
    assert off.observe(resident=900 * MiB, baseline=200 * MiB).counted_bytes == 0
    assert cache.ledger.used_bytes == 30 * MiB


async def test_the_watch_recycles_past_the_threshold_once_per_interval() -> None:
    cache = LedgerCache(100 * MiB)
    asked: list[str] = []
    now = [0.0]

    async def recycle(reason: str) -> None:
        asked.append(reason)

    told: list[bool] = []
    watch = MemoryWatch(None, cache, MemorySettings(margin_bytes=0, recycle_bytes=50 * MiB,  # type: ignore[arg-type]
                                                    recycle_min_interval_s=60), recycle=recycle,
                        monotonic=lambda: now[0], on_recycling=told.append)
    watch.observe(resident=200 * MiB, baseline=200 * MiB)  # the first reading of an empty cache
    watch.observe(resident=240 * MiB, baseline=200 * MiB)  # 40 MiB: below the threshold
    await asyncio.sleep(0)
    assert asked == []
    watch.observe(resident=260 * MiB, baseline=200 * MiB)
    await asyncio.sleep(0)
    assert len(asked) == 1 and "60 MiB" in asked[0] and watch.recycles == 1
    await asyncio.sleep(0)
    assert told == [True, False] and not watch.recycling  # the mesh heard it start and end (its record)
    assert cache.ledger.unaccounted_bytes == 0  # the fresh process holds none of it
    now[0] = 30.0
    watch.observe(resident=260 * MiB, baseline=200 * MiB)
    await asyncio.sleep(0)
    assert len(asked) == 1  # not again within the interval
    now[0] = 61.0
    watch.observe(resident=260 * MiB, baseline=200 * MiB)
    await asyncio.sleep(0)
    assert len(asked) == 2
    await watch.stop()


def test_the_first_reading_of_an_empty_cache_sets_the_baseline() -> None:
    cache = LedgerCache(100 * MiB)
    watch = MemoryWatch(None, cache, MemorySettings(margin_bytes=0))  # type: ignore[arg-type]
    first = watch.observe(resident=230 * MiB, baseline=200 * MiB)  # servers started after the runtime's baseline
    assert first.baseline_bytes == 230 * MiB and first.unaccounted_bytes == 0
    assert cache.ledger.try_reserve("m", 10 * MiB, 0)
    later = watch.observe(resident=250 * MiB, baseline=200 * MiB)
    assert later.unaccounted_bytes == 10 * MiB and cache.ledger.unaccounted_bytes == 10 * MiB


def test_unknown_memory_counts_nothing() -> None:
    cache = LedgerCache(100 * MiB)
    cache.ledger.count_unaccounted(10 * MiB)
    watch = MemoryWatch(None, cache, MemorySettings(margin_bytes=0))  # type: ignore[arg-type]
    assert not watch.observe(resident=0, baseline=0).known
    assert cache.ledger.used_bytes == 0


def test_size_mispredictions_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    watch = MemoryWatch(None, LedgerCache(MiB), MemorySettings())  # type: ignore[arg-type]
    watch.load_sized("ok", 10 * MiB, 12 * MiB, 11 * MiB)
    assert watch.mispredictions == 0
    watch.load_sized("far", 1 * MiB, 12 * MiB, 0)
    watch.load_sized("grew", 10 * MiB, 10 * MiB, 30 * MiB)
    assert watch.mispredictions == 2
    assert "model far: size far off" in caplog.text and "resident memory grew" in caplog.text


def test_allocator_environment() -> None:
    assert allocator_env("glibc") == {}
    with pytest.raises(ValueError):
        allocator_env("tcmalloc")
    env = allocator_env("jemalloc")  # libjemalloc2 comes from scripts/test-deps.sh
    assert env["LD_PRELOAD"].endswith("libjemalloc.so.2") and env["MALLOC_CONF"] == JEMALLOC_CONF


async def test_the_builtin_runtime_reports_its_memory_and_releases_it(tmp_path: Path) -> None:
    (tmp_path / "m.string").write_text("hello")
    runtime = BuiltinRuntime(fetcher=LocalFetcher([tmp_path]))
    try:
        status = await runtime.runtime_status()
        assert status.resident_bytes > 0 and status.baseline_bytes > 0
        await runtime.unload_model("absent")  # an unload of nothing trims nothing
        assert runtime.trims == 0
        await runtime.load_model("m", ModelInfo("string", str(tmp_path / "m.string")))
        await runtime.unload_model("m")
        assert runtime.trims == 1
    finally:
        await runtime.close()
    assert can_release_free_memory() == release_free_memory()
