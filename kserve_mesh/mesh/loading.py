"""One load of one copy, step by step: the loading half of the cache manager (``cache_manager.py``).

A ``LoadJob`` runs when the dispatcher takes its copy from the load queue:

1. predict the size (``predictModelSize``, bounded; the default size when the runtime cannot say);
2. reserve it in the ledger, evicting least recently used copies and waiting for their unloads;
3. call the runtime's load with what is left of the load timeout;
4. take the size the load reported, or ask the runtime (``modelSize``: the sizing step);
5. correct the reservation to that size (evicting again if it grew), mark the copy LOADED.

With a GPU (``core/gpu.py``) the GPU memory the model took last time is made room for before step 3,
and what it took this time is held after it (evicting copies that hold GPU memory until it fits).

Any failure becomes one ``MeshError`` on the copy's ``ready`` future and one ``LoadOutcome``; a
copy dropped meanwhile with its runtime (``runtime_lost``) is left alone, since ``runtime_lost``
released it and failed its waiters. Every step re-checks that the copy is still the cache's after
each ``await``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from kserve_mesh.core.errors import Cancelled, CapacityExceeded, MeshError, ModelLoadFailed, Unavailable
from kserve_mesh.core.records import CopyState, ModelInfo
from kserve_mesh.mesh.cache_events import LoadOutcome
from kserve_mesh.mesh.copies import LocalCopy, Phase
from kserve_mesh.runtime.spi import LoadResult

if TYPE_CHECKING:
    from kserve_mesh.mesh.cache_manager import CacheManager

log = logging.getLogger(__name__)

PREDICT_SIZE_TIMEOUT_S = 0.5
SIZING_TIMEOUT_S = 30.0
RESIZE_GRACE_S = 30.0  # room for a model that measured bigger than predicted, past the load timeout


class CopyLost(Exception):
    """Inside a load: the copy was dropped with its runtime (``runtime_lost``) meanwhile."""


class LoadJob:
    def __init__(self, cache: CacheManager, copy: LocalCopy, info: ModelInfo, last_used_ms: int) -> None:
        self.cache = cache
        self.copy = copy
        self.model_id = copy.model_id
        self.info = info
        self.last_used_ms = last_used_ms
        self.reserved = False

    async def run(self) -> None:
        cache, copy = self.cache, self.copy
        copy.phase = Phase.LOADING
        copy.load_started_at = cache.clock.monotonic()
        cache.observer.load_started(self.model_id, copy.load_started_at - copy.queued_at)
        try:
            measured = await self._load()
        except CopyLost:
            return  # runtime_lost released it and failed its waiters
        except asyncio.CancelledError:
            self._cancelled()
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reported MeshError (_failed logs it)
            if cache.owns(copy):  # else dropped with its runtime meanwhile: runtime_lost did the rest
                self._failed(exc)
            return
        cache.ledger.mark_loaded(self.model_id, cache.clock.now_ms())
        copy.size_bytes = measured
        copy.phase = Phase.LOADED
        copy.ready.set_result(None)
        cache.report(LoadOutcome(self.model_id, True, size_bytes=measured, duration_s=self._elapsed()))

    async def _load(self) -> int:
        """Steps 1-5; returns the loaded size, reserved in the ledger."""
        cache, model_id = self.cache, self.model_id
        size = await self._predict_size()
        self._check_owned()
        deadline = self.copy.load_started_at + cache.config.load_timeout_s
        await self._make_room(size, deadline, lambda: cache.ledger.try_reserve(model_id, size, self.last_used_ms,
                                                                                   prefetch=not self.copy.requested))
        self._check_owned()
        self.reserved = True
        await self._fit_gpu(cache.gpu.expected(model_id), deadline)  # room for what it took last time
        self._check_owned()
        result = await self._call_runtime(deadline)
        if result.gpu_bytes and cache.gpu.enabled:
            await self._hold_gpu(result.gpu_bytes, deadline + RESIZE_GRACE_S)
        reported = result.size_bytes or await self._measure(size)
        # Sizes that hold: a size below the runtime's own measure of its RSS growth is raised to it.
        measured = max(reported, result.resident_delta_bytes)
        self._check_owned()
        if cache.on_sized is not None:
            cache.on_sized(model_id, size, reported, result.resident_delta_bytes)
        if measured > cache.config.capacity_bytes:
            await cache.unload_quietly(model_id)
            raise CapacityExceeded(
                f"model '{model_id}' measured {measured} bytes after loading, more than the "
                f"instance capacity of {cache.config.capacity_bytes} bytes"
            )
        await self._make_room(measured - size, deadline + RESIZE_GRACE_S,
                              lambda: cache.ledger.resize(model_id, measured))
        self._check_owned()
        return measured

    async def _hold_gpu(self, gpu_bytes: int, deadline: float) -> None:
        """The GPU memory the load took: held in the GPU ledger, other copies evicted until it fits."""
        cache, model_id = self.cache, self.model_id
        if gpu_bytes > cache.gpu.capacity_bytes:
            await cache.unload_quietly(model_id)
            raise CapacityExceeded(f"model '{model_id}' took {gpu_bytes} bytes of GPU memory, more than the "
                                   f"GPU capacity of {cache.gpu.capacity_bytes} bytes")
        cache.gpu.hold(model_id, gpu_bytes)
        await self._fit_gpu(0, deadline)
        self._check_owned()

    async def _fit_gpu(self, extra: int, deadline: float) -> None:
        """Evict copies holding GPU memory (least recently used first, never one loading or in use)
        until ``extra`` more GPU bytes are free (core/gpu.py); no GPU: nothing to do."""
        cache, model_id, gpu = self.cache, self.model_id, self.cache.gpu
        if not gpu.enabled:
            return
        while (short := extra - gpu.free_bytes(cache.copies)) > 0:
            protect = {model_id} | {m for m, c in cache.copies.items()
                                    if c.waiters or c.inflight or c.phase is not Phase.LOADED}
            candidates = [(e.model_id, e.last_used_ms) for e in cache.ledger.entries()
                          if e.state is CopyState.LOADED and e.model_id not in protect]
            victims = gpu.victims(short, candidates)
            for victim in victims:
                cache.begin_unload(victim, evicted=True)
            unloading = any(gpu.held(m) for m, c in cache.copies.items() if c.phase is Phase.UNLOADING)
            remaining = deadline - cache.clock.monotonic()
            if (not victims and not unloading) or remaining <= 0:
                raise ModelLoadFailed(
                    f"no GPU memory for model '{model_id}' ({extra or short} bytes): the GPU is held by models "
                    "that are loading or in use")
            await cache.wait_for_space(min(remaining, 0.5))
            self._check_owned()

    async def _call_runtime(self, deadline: float) -> LoadResult:
        cache, model_id = self.cache, self.model_id
        remaining = max(0.001, deadline - cache.clock.monotonic())
        try:
            result = await asyncio.wait_for(cache.runtime.load_model(model_id, self.info), remaining)
        except TimeoutError:
            self._check_owned()
            await cache.unload_quietly(model_id)
            raise ModelLoadFailed(
                f"loading model '{model_id}' timed out after {cache.config.load_timeout_s:g} s"
            ) from None
        self._check_owned()
        return result

    async def _predict_size(self) -> int:
        cache, model_id = self.cache, self.model_id
        try:
            size = await asyncio.wait_for(cache.runtime.predict_model_size(model_id, self.info),
                                          PREDICT_SIZE_TIMEOUT_S)
        except (TimeoutError, MeshError) as exc:
            log.debug("predictModelSize for %s unavailable (%s); using default size", model_id, exc)
            size = 0
        size = size or cache.config.default_model_size_bytes
        cache.ledger.check_fits_at_all(model_id, size)
        return size

    async def _measure(self, fallback: int) -> int:
        """The sizing step: the runtime's ``modelSize`` of a model whose load reported none."""
        cache = self.cache
        started = cache.clock.monotonic()
        try:
            size = await asyncio.wait_for(cache.runtime.model_size(self.model_id), SIZING_TIMEOUT_S)
        except (TimeoutError, MeshError):
            return fallback
        if cache.owns(self.copy):
            cache.observer.model_sized(self.model_id, cache.clock.monotonic() - started)
        return size or fallback

    async def _make_room(self, needed: int, deadline: float, attempt: Callable[[], bool]) -> None:
        """Evict the policy's victims and wait for their unloads until ``attempt()`` succeeds or time
        runs out. Copies in use (loading, awaited, or serving requests or streams) are never victims."""
        cache, model_id = self.cache, self.model_id
        while not attempt():
            # never a copy that is loading, awaited or serving (a request or a whole stream in flight)
            protect = {model_id} | {m for m, c in cache.copies.items()
                                    if c.waiters or c.inflight or c.phase is not Phase.LOADED}
            victims = cache.ledger.plan_eviction(needed, protect=protect)
            for victim in victims:
                cache.begin_unload(victim, evicted=True)
            ledger = cache.ledger
            if not victims and ledger.unaccounted_bytes and not ledger.unloading_bytes():
                # Nothing left to evict but memory counted as used that no copy accounts for (mesh/
                # memory.py): it yields to the load (the allocator reuses it); else no load could ever
                # start until a recycle.
                ledger.count_unaccounted(max(0, ledger.unaccounted_bytes - needed))
                continue
            remaining = deadline - cache.clock.monotonic()
            if remaining <= 0:
                raise ModelLoadFailed(
                    f"no room for model '{model_id}' ({needed} bytes) in time: the cache is held by "
                    "models that are loading or in use"
                )
            await cache.wait_for_space(min(remaining, 1.0))

    def _check_owned(self) -> None:
        if not self.cache.owns(self.copy):
            raise CopyLost

    def _elapsed(self) -> float:
        return self.cache.clock.monotonic() - self.copy.load_started_at

    def _cancelled(self) -> None:
        cache, copy = self.cache, self.copy
        if cache.owns(copy):
            cache.forget(copy, release=self.reserved)
        if not copy.ready.done():
            copy.ready.set_exception(Unavailable(f"loading model '{self.model_id}' was cancelled"))

    def _failed(self, exc: Exception) -> None:
        model_id = self.model_id
        runtime_fault = isinstance(exc, Unavailable | Cancelled)
        if runtime_fault:
            error: MeshError = Unavailable(f"model '{model_id}' could not be loaded: the runtime is "
                                           f"unavailable ({exc})")
        elif isinstance(exc, MeshError):
            error = exc
        else:
            log.error("unexpected error loading %s", model_id, exc_info=exc)
            error = ModelLoadFailed(f"loading model '{model_id}' failed: {exc}")
        log.warning("loading model %s failed%s: %s", model_id,
                    " (the runtime's fault, not counted against the model)" if runtime_fault else "", error)
        self.cache.forget(self.copy, release=self.reserved)
        self.copy.ready.set_exception(error)
        self.cache.report(LoadOutcome(model_id, False, error=error, runtime_fault=runtime_fault,
                                      duration_s=self._elapsed()))
