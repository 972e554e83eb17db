"""A registry listener that raises is logged and skipped: the watch that keeps every instance's view
current goes on, and the other listeners still hear each change (the drain's listener, the
bookkeeping's, the TLS reloader's share it)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from kserve_mesh.core.ids import ModelId
from kserve_mesh.core.records import ModelInfo, ModelRecord
from kserve_mesh.mesh.registry import Registry
from kserve_mesh.store.keys import Keys
from kserve_mesh.store.memory import MemoryStore


async def _heard(heard: list[tuple[str, str]], item: tuple[str, str]) -> None:
    for _ in range(200):
        if item in heard:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{item} never reached the listener: {heard}")


async def test_a_failing_listener_neither_ends_the_watch_nor_silences_the_others(
        caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry(MemoryStore(), Keys.for_namespace("t"))
    await registry.load()
    heard: list[tuple[str, str]] = []

    def broken(kind: str, ident: str) -> None:
        raise KeyError(ident)

    registry.listeners += [broken, lambda kind, ident: heard.append((kind, ident))]
    stop = asyncio.Event()
    follow = asyncio.create_task(registry.follow(stop))
    try:
        with caplog.at_level(logging.ERROR, logger="kserve_mesh.mesh.registry"):
            await registry.create_model(ModelRecord(ModelId("a"), ModelInfo("string"), 0))
            await _heard(heard, ("model", "a"))
            await registry.create_model(ModelRecord(ModelId("b"), ModelInfo("string"), 0))
            await _heard(heard, ("model", "b"))  # the watch is still there
        assert not follow.done()
        assert registry.model(ModelId("b")) is not None
        assert [r.getMessage() for r in caplog.records].count(
            f"registry listener {broken!r} failed on model 'a'") == 1
    finally:
        stop.set()
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
