"""The cache manager and the instance when their runtime dies or hangs, with a fake runtime whose
loads and unloads the test holds and releases: every copy is dropped at once (bytes released,
waiters failed with ``Unavailable`` naming the model, loaded copies reported unloaded so the
registry stops listing the instance), no load starts until the runtime is back, a crash never
counts as the model's load failure, readiness follows the runtime, and a request waiting for a
load that hangs gets ``DeadlineExceeded`` naming the model."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from kserve_mesh.core.clock import SystemClock
from kserve_mesh.core.errors import DeadlineExceeded, MeshError, ModelNotFound, Unavailable
from kserve_mesh.core.ids import InstanceId, ModelId
from kserve_mesh.core.records import ModelInfo, ModelState
from kserve_mesh.mesh.cache_manager import CacheConfig, CacheManager, LoadOutcome
from kserve_mesh.mesh.copies import Phase
from kserve_mesh.mesh.instance import Instance
from kserve_mesh.mesh.registry import Registry
from kserve_mesh.protocol import v2
from kserve_mesh.runtime.spi import LoadResult, RuntimeState, RuntimeStatus
from kserve_mesh.store.keys import Keys
from kserve_mesh.store.memory import MemoryStore

MiB = 1 << 20
INFO = ModelInfo("string", "/models/m")
REASON = "runtime restarting: the runtime process (pid 42) exited (killed by signal SIGKILL)"


class FakeRuntime:
    """A ModelRuntime whose loads/unloads of ids in ``hold_loads``/``hold_unloads`` wait until the
    test releases them (or are cancelled); ``fail_loads`` makes loads raise that error."""

    def __init__(self) -> None:
        self.loaded: set[str] = set()
        self.hold_loads: set[str] = set()
        self.hold_unloads: set[str] = set()
        self.release = asyncio.Event()
        self.fail_loads: MeshError | None = None
        self.load_calls: list[str] = []
        self.unload_calls: list[str] = []
        self.cancelled: list[str] = []

    async def runtime_status(self) -> RuntimeStatus:
        return RuntimeStatus(RuntimeState.READY, 64 * MiB, 1, 30_000, MiB)

    async def load_model(self, model_id: str, info: ModelInfo) -> LoadResult:
        self.load_calls.append(model_id)
        if model_id in self.hold_loads:
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.append(model_id)
                raise
        if self.fail_loads is not None:
            raise self.fail_loads
        self.loaded.add(model_id)
        return LoadResult(size_bytes=2 * MiB)

    async def unload_model(self, model_id: str) -> None:
        self.unload_calls.append(model_id)
        if model_id in self.hold_unloads:
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.append(model_id)
                raise
        if model_id not in self.loaded:
            raise ModelNotFound(model_id)
        self.loaded.discard(model_id)

    async def predict_model_size(self, model_id: str, info: ModelInfo) -> int:
        return 2 * MiB

    async def model_size(self, model_id: str) -> int:
        return 2 * MiB

    async def infer(self, request: v2.ModelInferRequest, *, timeout: float | None = None) -> v2.ModelInferResponse:
        if request.model_name not in self.loaded:
            raise ModelNotFound(request.model_name)
        return v2.ModelInferResponse(model_name=request.model_name)

    async def model_metadata(self, model_id: str) -> v2.ModelMetadataResponse:
        return v2.ModelMetadataResponse(name=model_id)

    async def close(self) -> None:
        pass


class Recorder:
    def __init__(self) -> None:
        self.loads: list[LoadOutcome] = []
        self.unloads: list[ModelId] = []

    def on_load(self, outcome: LoadOutcome) -> None:
        self.loads.append(outcome)

    def on_unload(self, model_id: ModelId, last_used_ms: int, duration_s: float) -> None:
        self.unloads.append(model_id)


@pytest.fixture()
async def cache() -> AsyncIterator[tuple[CacheManager, FakeRuntime, Recorder]]:
    runtime = FakeRuntime()
    rec = Recorder()
    manager = CacheManager(runtime, CacheConfig(8 * MiB, 1, 5.0, MiB), SystemClock(),
                           on_load=rec.on_load, on_unload=rec.on_unload)
    manager.start()
    try:
        yield manager, runtime, rec
    finally:
        await manager.close()


async def _load(manager: CacheManager, model_id: str) -> None:
    copy = await manager.enter(ModelId(model_id), INFO, 0, 5.0)
    copy.leave()


async def _until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_lost_runtime_drops_every_copy_and_fails_its_waiters(cache) -> None:  # type: ignore[no-untyped-def]
    manager, runtime, rec = cache
    await _load(manager, "a")
    await _load(manager, "b")
    assert manager.ledger.used_bytes == 4 * MiB
    runtime.hold_loads = {"c"}
    loading = asyncio.create_task(manager.enter(ModelId("c"), INFO, 0, 5.0))   # LOADING (held)
    await _until(lambda: "c" in runtime.load_calls)  # c holds the one slot before d asks for it
    queued = asyncio.create_task(manager.enter(ModelId("d"), INFO, 0, 5.0))    # QUEUED (1 slot)
    await _until(lambda: ModelId("d") in manager.copies)
    assert manager.copies[ModelId("c")].phase is Phase.LOADING
    assert manager.copies[ModelId("d")].phase is Phase.QUEUED

    assert manager.runtime_lost(REASON) == 4

    assert not manager.runtime_available
    assert manager.copies == {} and manager.ledger.used_bytes == 0 and manager.ledger.count() == 0
    assert manager.queued_loads == 0
    for task, model_id in ((loading, "c"), (queued, "d")):
        with pytest.raises(Unavailable) as err:
            await asyncio.wait_for(task, 2)
        assert f"'{model_id}'" in str(err.value) and "runtime restarting" in str(err.value)
    await _until(lambda: manager.loads_in_progress == 0)
    assert runtime.cancelled == ["c"]  # the load talking to the lost runtime was cancelled
    assert sorted(rec.unloads) == ["a", "b"]  # loaded copies reported gone (the registry forgets them)
    assert not [o for o in rec.loads if not o.ok]  # no load failure reported for anyone


async def test_no_load_starts_until_the_runtime_is_back(cache) -> None:  # type: ignore[no-untyped-def]
    manager, runtime, _rec = cache
    await _load(manager, "a")
    manager.runtime_lost(REASON)
    with pytest.raises(Unavailable) as err:
        await manager.enter(ModelId("a"), INFO, 0, 5.0)
    assert "'a'" in str(err.value) and "runtime restarting" in str(err.value)
    assert runtime.load_calls == ["a"]

    runtime.loaded.clear()  # a fresh process holds nothing
    await manager.runtime_back(fresh=True)
    assert manager.runtime_available
    await _load(manager, "a")  # loads again on demand
    assert runtime.load_calls == ["a", "a"] and manager.ledger.used_bytes == 2 * MiB
    assert runtime.unload_calls == []  # nothing to clean in a fresh process


async def test_an_unload_in_progress_is_reported_once(cache) -> None:  # type: ignore[no-untyped-def]
    manager, runtime, rec = cache
    await _load(manager, "a")
    runtime.hold_unloads = {"a"}
    gone = manager.unload(ModelId("a"))
    assert gone is not None
    await _until(lambda: runtime.unload_calls == ["a"])
    manager.runtime_lost(REASON)
    await asyncio.wait_for(gone.wait(), 2)
    await asyncio.sleep(0.05)  # let the cancelled unload task finish its clean-up
    assert rec.unloads == ["a"] and manager.ledger.used_bytes == 0 and manager.copies == {}


async def test_a_remote_runtime_that_returns_forgets_the_dropped_copies(cache) -> None:  # type: ignore[no-untyped-def]
    manager, runtime, _rec = cache
    await _load(manager, "a")
    await _load(manager, "b")
    manager.runtime_lost("runtime unavailable: no answer to runtimeStatus within 1 s")
    assert runtime.loaded == {"a", "b"}  # the same runtime, still holding them
    await manager.runtime_back(fresh=False)
    assert runtime.loaded == set() and sorted(runtime.unload_calls) == ["a", "b"]
    assert manager.runtime_available


async def test_a_load_that_cannot_reach_the_runtime_is_the_runtimes_fault(cache, caplog) -> None:  # type: ignore[no-untyped-def]
    manager, runtime, rec = cache
    runtime.fail_loads = Unavailable("runtime at unix:/x: loadModel of model 'a' failed (UNAVAILABLE): socket closed")
    with caplog.at_level(logging.WARNING, logger="kserve_mesh.mesh.cache_manager"), pytest.raises(Unavailable) as err:
        await manager.enter(ModelId("a"), INFO, 0, 5.0)
    assert "'a'" in str(err.value) and "runtime is unavailable" in str(err.value)
    (outcome,) = rec.loads
    assert not outcome.ok and outcome.runtime_fault
    assert any("a" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert manager.ledger.used_bytes == 0 and manager.copies == {}


async def test_a_failed_load_is_logged_with_the_model_and_cause(cache, caplog) -> None:  # type: ignore[no-untyped-def]
    manager, runtime, rec = cache
    from kserve_mesh.core.errors import StorageNotFound

    runtime.fail_loads = StorageNotFound("model file /models/zz not found")
    with caplog.at_level(logging.WARNING, logger="kserve_mesh.mesh.cache_manager"), pytest.raises(StorageNotFound):
        await manager.enter(ModelId("zz"), INFO, 0, 5.0)
    (outcome,) = rec.loads
    assert not outcome.ok and not outcome.runtime_fault
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "zz" in record.getMessage() and "/models/zz not found" in record.getMessage()


async def test_a_request_waiting_for_a_hung_load_gets_a_deadline_error(cache) -> None:  # type: ignore[no-untyped-def]
    manager, runtime, _rec = cache
    runtime.hold_loads = {"slow"}
    started = asyncio.get_running_loop().time()
    with pytest.raises(DeadlineExceeded) as err:
        await manager.enter(ModelId("slow"), INFO, 0, 0.3)
    assert asyncio.get_running_loop().time() - started < 2.0
    assert "'slow'" in str(err.value)
    assert ModelId("slow") in manager.copies  # the load goes on for others (bounded by the load timeout)


# -- through the instance ------------------------------------------------------------------------
@pytest.fixture()
async def instance() -> AsyncIterator[tuple[Instance, FakeRuntime]]:
    store = MemoryStore()
    store.start()
    runtime = FakeRuntime()
    inst = Instance(InstanceId("i1"), Registry(store, Keys.for_namespace("t")), runtime,
                    CacheConfig(8 * MiB, 1, 5.0, MiB), SystemClock())
    await inst.start()
    try:
        yield inst, runtime
    finally:
        await inst.stop()
        await store.close()


def _request(model_id: str) -> v2.ModelInferRequest:
    req = v2.ModelInferRequest(model_name=model_id)
    req.inputs.add(name="input-0", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"x")
    return req


async def test_instance_readiness_and_records_follow_the_runtime(instance) -> None:  # type: ignore[no-untyped-def]
    inst, runtime = instance
    await inst.register("m", INFO)
    await inst.infer(ModelId("m"), _request("m"))
    assert inst.serving_ready
    await _until(lambda: "i1" in inst.registry.models[ModelId("m")].instances)

    inst.runtime_lost(REASON)
    assert not inst.serving_ready
    assert inst.model_status("m").state is ModelState.NOT_LOADED
    assert "i1" not in inst.registry.models[ModelId("m")].instances
    await _until(lambda: inst.registry.models[ModelId("m")].instances == {})
    with pytest.raises(Unavailable) as err:
        await inst.infer(ModelId("m"), _request("m"))
    assert "'m'" in str(err.value)

    runtime.loaded.clear()
    await inst.runtime_back(True)
    assert inst.serving_ready
    resp = await inst.infer(ModelId("m"), _request("m"))
    assert resp.model_name == "m"


async def test_a_crash_is_never_the_models_load_failure(instance) -> None:  # type: ignore[no-untyped-def]
    inst, runtime = instance
    await inst.register("m", INFO)
    runtime.fail_loads = Unavailable("runtime at unix:/x: loadModel failed (UNAVAILABLE): connection reset")
    for _ in range(4):  # more than the 3 failures that block a model
        with pytest.raises(Unavailable):
            await inst.infer(ModelId("m"), _request("m"))
    status = inst.model_status("m")
    assert status.state is ModelState.NOT_LOADED and status.errors == ()
    assert inst.registry.models[ModelId("m")].failures == ()

    runtime.fail_loads = None
    assert (await inst.infer(ModelId("m"), _request("m"))).model_name == "m"  # not blocked


async def test_a_crash_during_a_load_is_not_a_failure_either(instance) -> None:  # type: ignore[no-untyped-def]
    inst, runtime = instance
    await inst.register("m", INFO)
    runtime.hold_loads = {"m"}
    waiting = asyncio.create_task(inst.infer(ModelId("m"), _request("m"), 5.0))
    await _until(lambda: runtime.load_calls == ["m"])
    inst.runtime_lost(REASON)
    with pytest.raises(Unavailable) as err:
        await asyncio.wait_for(waiting, 2)
    assert "'m'" in str(err.value) and "runtime restarting" in str(err.value)
    assert inst.registry.models[ModelId("m")].failures == ()
    assert inst.model_status("m").state is ModelState.NOT_LOADED
