"""GPU memory accounting in the cache (core/gpu.py through mesh/loading.py), with a fake runtime
that reports a GPU and the GPU memory each load took; and the NVML probe (runtime/gpu.py) with and
without a GPU (a fake ``pynvml``: no GPU exists on the build machines)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from test_mesh_runtime_lost import INFO, FakeRuntime, MiB

from kserve_mesh.core.clock import SystemClock
from kserve_mesh.core.errors import CapacityExceeded, ModelLoadFailed
from kserve_mesh.core.ids import ModelId
from kserve_mesh.mesh.cache_manager import CacheConfig, CacheManager
from kserve_mesh.runtime.gpu import GpuProbe
from kserve_mesh.runtime.spi import LoadResult

GPU = 10 * MiB


class GpuRuntime(FakeRuntime):
    def __init__(self, sizes: dict[str, int]) -> None:
        super().__init__()
        self.sizes = sizes

    async def load_model(self, model_id: str, info):  # type: ignore[no-untyped-def,override]
        result = await super().load_model(model_id, info)
        return LoadResult(result.size_bytes, gpu_bytes=self.sizes.get(model_id, 0))


@pytest.fixture()
async def cache() -> AsyncIterator[tuple[CacheManager, GpuRuntime]]:
    runtime = GpuRuntime({"a": 4 * MiB, "b": 4 * MiB, "c": 4 * MiB, "cpu": 0, "huge": 11 * MiB})
    manager = CacheManager(runtime, CacheConfig(64 * MiB, 1, 5.0, MiB, gpu_capacity_bytes=GPU,
                                                gpu_status="nvml: 1 device (fake)"), SystemClock())
    manager.start()
    try:
        yield manager, runtime
    finally:
        await manager.close()


async def _load(manager: CacheManager, model_id: str, last_used_ms: int = 0) -> None:
    copy = await manager.enter(ModelId(model_id), INFO, last_used_ms, 5.0)
    copy.leave()


def _gpu_used(manager: CacheManager) -> int:
    return manager.gpu.used_bytes(manager.copies)


async def test_the_gpu_ledger_is_enforced_besides_the_host_one(cache) -> None:  # type: ignore[no-untyped-def]
    manager, runtime = cache
    await _load(manager, "a")
    await _load(manager, "cpu")
    await _load(manager, "b")
    assert _gpu_used(manager) == 8 * MiB
    await _load(manager, "c")  # 12 MiB on a 10 MiB GPU: the least recently used GPU holder goes
    async with asyncio.timeout(5):
        while "a" in runtime.loaded:
            await asyncio.sleep(0.005)
    assert _gpu_used(manager) == 8 * MiB <= GPU and "cpu" in runtime.loaded  # host-only copies stay
    assert manager.ledger.used_bytes <= 64 * MiB
    # a comes back: room for what it took last time is made before its load (b goes first)
    await _load(manager, "a")
    assert "b" not in runtime.loaded and _gpu_used(manager) == 8 * MiB
    assert manager.gpu.summary(manager.copies)["status"] == "nvml: 1 device (fake)"


async def test_copies_in_use_are_never_gpu_victims(cache) -> None:  # type: ignore[no-untyped-def]
    manager, runtime = cache
    held = [await manager.enter(ModelId(m), INFO, 0, 5.0) for m in ("a", "b")]  # both serving a request
    with pytest.raises(ModelLoadFailed, match="no GPU memory for model 'c'.*in use"):
        await manager.enter(ModelId("c"), INFO, 0, 5.0)
    assert {"a", "b"} <= runtime.loaded and _gpu_used(manager) <= GPU
    for copy in held:
        copy.leave()
    await _load(manager, "c")  # now a victim can go
    assert _gpu_used(manager) == 8 * MiB


async def test_a_model_bigger_than_the_gpu_fails_clearly(cache) -> None:  # type: ignore[no-untyped-def]
    manager, runtime = cache
    with pytest.raises(CapacityExceeded, match="'huge' took 11534336 bytes of GPU memory, more than the GPU capacity"):
        await manager.enter(ModelId("huge"), INFO, 0, 5.0)
    assert "huge" not in runtime.loaded and _gpu_used(manager) == 0


async def test_without_a_gpu_gpu_bytes_are_not_enforced() -> None:
    runtime = GpuRuntime({"a": 40 * MiB})
    manager = CacheManager(runtime, CacheConfig(64 * MiB, 1, 5.0, MiB), SystemClock())
    manager.start()
    try:
        await _load(manager, "a")
        assert "a" in runtime.loaded and not manager.gpu.enabled and _gpu_used(manager) == 0
    finally:
        await manager.close()


class FakeNvml:
    """The parts of pynvml the probe uses: two devices of 8 GiB, processes on each."""

    class NVMLError(Exception):
        pass

    def __init__(self, procs: dict[int, list[tuple[int, int]]], fail: bool = False) -> None:
        self.procs, self.fail = procs, fail

    def nvmlInit(self) -> None:
        if self.fail:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(total=8 << 30)

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"Fake GPU"

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.procs.get(h, [])]


def test_the_probe_reads_capacity_and_this_process_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nvml = FakeNvml({0: [(7, 100 * MiB), (8, 5 * MiB)], 1: [(7, 20 * MiB)]})
    probe = GpuProbe.open(pid=7, nvml=nvml)
    assert probe.enabled and probe.capacity_bytes == 16 << 30 and probe.status == "nvml: 2 devices (Fake GPU)"
    assert probe.used_bytes() == 120 * MiB  # its own processes only, on every visible device
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    one = GpuProbe.open(pid=7, nvml=nvml)
    assert one.capacity_bytes == 8 << 30 and one.used_bytes() == 20 * MiB
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "none visible" in GpuProbe.open(pid=7, nvml=nvml).status


def test_without_a_gpu_the_probe_says_why() -> None:
    failed = GpuProbe.open(pid=7, nvml=FakeNvml({}, fail=True))
    assert not failed.enabled and failed.capacity_bytes == 0 and failed.used_bytes() == 0
    assert failed.status == "no GPU: NVML is not usable (Driver Not Loaded)"
    here = GpuProbe.open()  # this machine: no nvidia-ml-py or no driver
    assert not here.enabled and here.status.startswith("no GPU: ")
