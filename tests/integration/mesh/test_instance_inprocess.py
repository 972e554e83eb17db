"""The instance and its cache manager in one process, with the real built-in runtime and
MemoryStore: one load for many concurrent requests, request loads before background loads,
unregister unloads, and the failure rules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from slow_http import serve_dir

from kserve_mesh.core.clock import SystemClock
from kserve_mesh.core.errors import ModelLoadFailed, ModelNotFound
from kserve_mesh.core.ids import InstanceId, ModelId
from kserve_mesh.core.records import ModelInfo, ModelState
from kserve_mesh.mesh.cache_manager import CacheConfig
from kserve_mesh.mesh.instance import Instance
from kserve_mesh.mesh.registry import Registry
from kserve_mesh.protocol import v2
from kserve_mesh.runtime.builtin.runtime import BuiltinRuntime, RuntimeConfig
from kserve_mesh.storage import StoragePolicy, make_fetcher, model_check
from kserve_mesh.store.keys import Keys
from kserve_mesh.store.memory import MemoryStore

pytestmark = pytest.mark.integration


def _string_models(root: Path, count: int, prefix: str = "s") -> list[str]:
    ids = []
    for i in range(count):
        model_id = f"{prefix}{i}"
        (root / model_id).mkdir(parents=True)
        (root / model_id / "model.string").write_text(f"{model_id}:")
        ids.append(model_id)
    return ids


def _request(model_id: str) -> v2.ModelInferRequest:
    req = v2.ModelInferRequest(model_name=model_id)
    t = req.inputs.add(name="input-0", datatype="BYTES", shape=[1])
    t.contents.bytes_contents.append(b"x")
    return req


@pytest.fixture()
async def instance(tmp_path: Path) -> AsyncIterator[Instance]:
    store = MemoryStore()
    store.start()
    policy = StoragePolicy.of(allow_local_paths=[tmp_path])  # the models of these tests, nothing else
    runtime = BuiltinRuntime(RuntimeConfig(capacity_bytes=64 << 20, max_loading_concurrency=1),
                             make_fetcher(None, tmp_path / ".cache", policy))
    inst = Instance(InstanceId("test"), Registry(store, Keys.for_namespace("t")), runtime,
                    CacheConfig(64 << 20, 1, 30.0, 1 << 20), SystemClock(), check_model=model_check(None, policy))
    await inst.start()
    try:
        yield inst
    finally:
        await inst.stop()
        await runtime.close()
        await store.close()


async def test_concurrent_requests_share_one_load(instance: Instance, tmp_path: Path) -> None:
    (model_id,) = _string_models(tmp_path, 1)
    await instance.register(model_id, ModelInfo("string", str(tmp_path / model_id)))
    results = await asyncio.gather(*(instance.infer(ModelId(model_id), _request(model_id)) for _ in range(25)))
    assert all(r.model_name == model_id for r in results)
    assert instance.stats.loads == 1
    assert instance.model_status(model_id).state is ModelState.LOADED


async def test_a_waiting_request_jumps_background_loads(instance: Instance, tmp_path: Path) -> None:
    background = _string_models(tmp_path / "bg", 4)
    order: list[str] = []
    original = instance.cache._on_load
    assert original is not None

    def record(outcome) -> None:  # type: ignore[no-untyped-def]
        order.append(outcome.model_id)
        original(outcome)

    instance.cache._on_load = record
    # Background models come over a slow HTTP server, so the queue is still full when the request
    # arrives (one load at a time).
    with serve_dir(tmp_path / "bg", delay_s=0.3) as base:
        for model_id in background:
            await instance.register(model_id, ModelInfo("string", f"{base}/{model_id}/model.string"), load_now=True)
        (urgent,) = _string_models(tmp_path / "fg", 1, prefix="urgent")
        await instance.register(urgent, ModelInfo("string", str(tmp_path / "fg" / urgent)))
        resp = await instance.infer(ModelId(urgent), _request(urgent))
        assert resp.model_name == urgent
        # At most the one background load already running finished before the request's load.
        assert order.index(urgent) <= 1, order
        for model_id in background:
            copy = instance.cache.copies.get(ModelId(model_id))
            if copy is not None:
                await asyncio.wait_for(asyncio.shield(copy.ready), 30)
    assert set(order) == {urgent, *background}


async def test_unregister_unloads_and_unknown_is_not_found(instance: Instance, tmp_path: Path) -> None:
    (model_id,) = _string_models(tmp_path, 1)
    await instance.register(model_id, ModelInfo("string", str(tmp_path / model_id)), load_now=True, sync=True)
    assert instance.cache.ledger.used_bytes > 0
    await instance.unregister(model_id)
    assert instance.cache.ledger.used_bytes == 0
    assert not instance.runtime.is_loaded(model_id)  # type: ignore[attr-defined]
    with pytest.raises(ModelNotFound):
        await instance.infer(ModelId(model_id), _request(model_id))


async def test_three_failures_block_new_loads(instance: Instance, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    missing.write_text("x")  # there when registered (a missing path is refused at once), gone when loaded
    await instance.register("broken", ModelInfo("string", str(missing)))
    missing.unlink()
    for attempt in range(3):
        with pytest.raises(ModelLoadFailed) as err:
            await instance.infer(ModelId("broken"), _request("broken"))
        assert "nowhere" in str(err.value)
    loads_before = instance.stats.load_failures
    with pytest.raises(ModelLoadFailed) as err:
        await instance.infer(ModelId("broken"), _request("broken"))
    assert instance.stats.load_failures == loads_before  # blocked: no fourth attempt
    status = instance.model_status("broken")
    assert status.state is ModelState.LOADING_FAILED and "nowhere" in status.errors[0]
