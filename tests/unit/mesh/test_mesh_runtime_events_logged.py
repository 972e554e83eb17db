"""The runtime's life is logged at WARNING: lost (with the cause and the copies dropped) and back
(whether a new process), so an operator reading the log sees both ends of an outage."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from test_mesh_runtime_lost import REASON, FakeRuntime, MiB

from kserve_mesh.core.clock import SystemClock
from kserve_mesh.core.ids import InstanceId
from kserve_mesh.mesh.cache_manager import CacheConfig
from kserve_mesh.mesh.instance import Instance
from kserve_mesh.mesh.registry import Registry
from kserve_mesh.store.keys import Keys
from kserve_mesh.store.memory import MemoryStore


@pytest.fixture()
async def instance() -> AsyncIterator[Instance]:
    store = MemoryStore()
    store.start()
    inst = Instance(InstanceId("i1"), Registry(store, Keys.for_namespace("t")), FakeRuntime(),
                    CacheConfig(8 * MiB, 1, 5.0, MiB), SystemClock())
    await inst.start()
    try:
        yield inst
    finally:
        await inst.stop()
        await store.close()


async def test_runtime_lost_and_back_are_warnings(instance: Instance, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kserve_mesh.mesh.instance"):
        instance.runtime_lost(REASON)
        await instance.runtime_back(True)
    lost, back = [r for r in caplog.records if r.name == "kserve_mesh.mesh.instance"]
    assert lost.levelno == back.levelno == logging.WARNING
    assert "runtime lost" in lost.getMessage() and "pid 42" in lost.getMessage()
    assert "runtime serving again (a new process)" in back.getMessage()
