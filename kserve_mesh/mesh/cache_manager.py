"""The cache manager: loads models into the runtime on demand, evicts the coldest, never overfills.

Flow of a cache miss: the request creates a ``LocalCopy`` (QUEUED) and pushes it into the load
queue with request priority; the dispatcher starts at most ``max_loading_concurrency`` loads at once,
highest priority first. A load (``loading.LoadJob``) reserves its predicted size in the
``CacheLedger`` (evicting the eviction policy's victims and waiting for their unloads if needed),
calls the runtime with the load timeout, then corrects the reservation to the measured size. Every
waiter of that copy wakes when the one load finishes, so concurrent requests for a loading model
cause exactly one load.

An unload drains the copy's requests, then asks the runtime up to ``UNLOAD_ATTEMPTS`` times (a
model the runtime does not have counts as unloaded); the copy leaves the cache either way. Each
event the metrics count (cache miss, queue delays, sizing, eviction age, unload attempts) is told
to the ``CacheObserver`` (``cache_events.py``); each load's outcome and each copy that leaves go
to the ``on_load`` / ``on_unload`` listeners (the records' bookkeeping).

When the runtime dies or hangs (``runtime_lost``, from the runtime's supervisor) every copy goes
with it at once: its bytes are released, requests waiting for a load fail with ``Unavailable``
naming the model, loaded copies are reported unloaded (so the registry stops listing this instance
and, in a mesh, other instances take over), and no load starts until ``runtime_back``. A load that
fails because the runtime could not be reached (``Unavailable``, ``Cancelled``) is reported with
``runtime_fault``: the runtime failed, not the model, so it never counts as the model's failure.

A planned restart of the runtime (``recycle``, issue 16: it holds memory no copy accounts for)
goes the gentle way: no new load starts (requests for models queue and wait), loads in progress
finish, the loaded copies leave the cache (requests already holding one finish on it, up to a
grace period), then the process is replaced and ``runtime_back`` lets the queued loads start.

Memory that no copy accounts for may be counted as used (``count_unaccounted``, fed by
``mesh/memory.py``); when it does not fit in the free space, the policy's victims are evicted.

The eviction policy (``CacheConfig.eviction_policy``: ``lru``, ModelMesh's, or ``adaptive``, see
``core/eviction.py``) sees every miss (a reservation), hit (``touch``), load (its measured time,
told from ``report``) and eviction through the ledger; it never sees a loading copy or one with
requests waiting or in flight as a victim (they are protected here and refused by the ledger).

Locking: there is no lock on the request path. The event loop is the only thread touching the
ledger and the copies map, and each check-then-act on them happens without an ``await`` in between
(the "re-check after waking" pattern), which is what a per-model lock would buy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from kserve_mesh.core.cache import CacheLedger, EvictionPolicy
from kserve_mesh.core.clock import Clock
from kserve_mesh.core.errors import DeadlineExceeded, MeshError, ModelLoadFailed, ModelNotFound, Unavailable
from kserve_mesh.core.eviction import make_policy
from kserve_mesh.core.gpu import GpuLedger
from kserve_mesh.core.ids import ModelId
from kserve_mesh.core.loadqueue import LoadQueue, load_priority
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.mesh.cache_events import CacheObserver, LoadOutcome, SilentObserver
from kserve_mesh.mesh.copies import LocalCopy, Phase
from kserve_mesh.mesh.loading import LoadJob
from kserve_mesh.runtime.spi import ModelRuntime

__all__ = ["CacheConfig", "CacheManager", "LoadOutcome"]  # LoadOutcome re-exported for old imports

log = logging.getLogger(__name__)

UNLOAD_DRAIN_TIMEOUT_S = 30.0
UNLOAD_ATTEMPTS = 3
UNLOAD_RETRY_BACKOFF_S = 0.5  # before the second attempt; doubles for each next one (at most 10 s)
UNLOAD_TIMEOUT_S = 60.0
CLEANUP_UNLOAD_TIMEOUT_S = 30.0
ORPHAN_UNLOAD_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class CacheConfig:
    capacity_bytes: int
    max_loading_concurrency: int
    load_timeout_s: float
    default_model_size_bytes: int
    eviction_policy: str = "lru"  # "lru" | "adaptive" (core/eviction.py); an explicit ``policy`` wins
    gpu_capacity_bytes: int = 0  # GPU memory models may use (core/gpu.py); 0: no GPU, nothing enforced
    gpu_status: str = "no GPU"


class CacheManager:
    def __init__(
        self,
        runtime: ModelRuntime,
        config: CacheConfig,
        clock: Clock,
        *,
        policy: EvictionPolicy | None = None,
        on_load: Callable[[LoadOutcome], None] | None = None,
        on_unload: Callable[[ModelId, int, float], None] | None = None,
        observer: CacheObserver | None = None,
    ) -> None:
        self.runtime = runtime
        self.config = config
        self.clock = clock
        if policy is None:
            policy = make_policy(config.eviction_policy, config.capacity_bytes)
        self.ledger = CacheLedger(config.capacity_bytes, policy)
        self.gpu = GpuLedger(config.gpu_capacity_bytes, config.gpu_status)  # the second ledger (core/gpu.py)
        self.copies: dict[ModelId, LocalCopy] = {}
        self._queue = LoadQueue()
        self._infos: dict[ModelId, tuple[ModelInfo, int]] = {}
        self._slots = config.max_loading_concurrency
        self._loading = 0
        self._wake_dispatcher = asyncio.Event()
        self._space_changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._on_load = on_load
        self._on_unload = on_unload
        self.observer: CacheObserver = observer if observer is not None else SilentObserver()
        self._closed = False
        self._runtime_down = ""  # why the runtime cannot be used now; "" while it serves
        self._orphans: set[ModelId] = set()  # copies dropped with a runtime that may still hold them
        self._paused = False  # a planned restart of the runtime: no load starts until runtime_back
        # Sizes that hold (mesh/memory.py): (model id, predicted, reported, resident delta) of each load.
        self.on_sized: Callable[[ModelId, int, int, int], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch(), name="load-dispatcher")

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        if self._dispatcher is not None:
            tasks.append(self._dispatcher)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for copy in self.copies.values():
            if not copy.ready.done():
                copy.ready.set_exception(Unavailable("the instance is shutting down"))
                copy.ready.exception()  # mark retrieved

    @property
    def loads_in_progress(self) -> int:
        return self._loading

    @property
    def queued_loads(self) -> int:
        return len(self._queue)

    @property
    def runtime_available(self) -> bool:
        """False between ``runtime_lost`` and ``runtime_back``."""
        return not self._runtime_down

    # -- memory truth ----------------------------------------------------------------------------
    def accounted_bytes(self) -> int:
        return self.ledger.accounted_bytes

    def count_unaccounted(self, wanted_bytes: int) -> int:
        """Count memory no copy accounts for as used; evict the policy's victims for what does not fit.
        Returns the bytes that did not fit now (they are asked for again at the next reading)."""
        short = self.ledger.count_unaccounted(wanted_bytes)
        if short > 0 and not self._runtime_down and not self._paused:
            protect = {m for m, c in self.copies.items() if c.waiters or c.phase is not Phase.LOADED}
            for victim in self.ledger.plan_eviction(self.ledger.free_bytes + short, protect=protect):
                self.begin_unload(victim, evicted=True)
        return short

    # -- a planned restart of the runtime --------------------------------------------------------
    async def drain_for_restart(self, grace_s: float) -> int:
        """Before a planned restart: stop starting loads, let loads and unloads in progress end,
        take the loaded copies out of the cache (new requests queue a load that waits for
        ``runtime_back``) and wait, up to ``grace_s``, until requests on them have finished. Returns
        how many copies left. Requests never fail for it: they wait for the fresh runtime."""
        self._paused = True
        loop = asyncio.get_running_loop()
        end = loop.time() + grace_s
        while (self._loading or any(c.phase is Phase.UNLOADING for c in self.copies.values())) \
                and loop.time() < end:
            await self.wait_for_space(0.05)
        held = [c for c in self.copies.values() if c.phase is Phase.LOADED]
        for copy in held:
            del self.copies[copy.model_id]
            entry = self.ledger.release(copy.model_id)
            copy.phase = Phase.UNLOADING
            if self._on_unload is not None and entry is not None:
                self._on_unload(copy.model_id, entry.last_used_ms, 0.0)
        self.ledger.count_unaccounted(0)
        self._space_changed.set()
        busy = [c.idle.wait() for c in held if c.inflight]
        if busy:
            try:
                await asyncio.wait_for(asyncio.gather(*busy), max(0.0, end - loop.time()))
            except TimeoutError:
                log.warning("restarting the runtime with %d requests still in flight",
                            sum(c.inflight for c in held))
        for copy in held:
            copy.gone.set()
        return len(held)

    # -- the runtime's life ----------------------------------------------------------------------
    def runtime_lost(self, reason: str) -> int:
        """The runtime died or hangs: drop every copy now, refuse loads until ``runtime_back``.

        ``reason`` completes "model 'x' is not available on this instance: ..." (e.g. "runtime
        restarting: the runtime process (pid 12) exited (killed by signal SIGKILL)"). Returns how
        many copies were dropped.
        """
        self._runtime_down = reason or "the runtime is unavailable"
        self.ledger.count_unaccounted(0)
        dropped = list(self.copies.values())
        for copy in dropped:
            self._drop_lost(copy)
        for task in list(self._tasks):  # loads and unloads talking to the lost runtime
            task.cancel()
        self._space_changed.set()
        return len(dropped)

    def _drop_lost(self, copy: LocalCopy) -> None:
        model_id = copy.model_id
        del self.copies[model_id]
        self._queue.remove(model_id)
        self._infos.pop(model_id, None)
        entry = self.ledger.release(model_id)
        phase, copy.phase = copy.phase, Phase.UNLOADING
        if not copy.ready.done():
            copy.ready.set_exception(Unavailable(f"model '{model_id}' is not available on this instance: "
                                                 f"{self._runtime_down}"))
        copy.gone.set()
        if phase is not Phase.QUEUED:
            self._orphans.add(model_id)  # a runtime that comes back by itself may still hold it
        if phase in (Phase.LOADED, Phase.UNLOADING) and entry is not None and self._on_unload is not None:
            self._on_unload(model_id, entry.last_used_ms, 0.0)

    async def runtime_back(self, *, fresh: bool) -> None:
        """The runtime serves again; loads may start. ``fresh``: a new process holding nothing;
        otherwise (the same remote runtime) the copies it may still hold are unloaded first,
        best effort and bounded, so its memory is not held by models this cache forgot."""
        orphans, self._orphans = self._orphans, set()
        if orphans and not fresh:
            results = await asyncio.gather(*(self.try_unload(m, ORPHAN_UNLOAD_TIMEOUT_S) for m in orphans),
                                           return_exceptions=True)
            for model_id, result in zip(orphans, results, strict=True):
                if isinstance(result, Exception):
                    log.warning("unloading %s from the recovered runtime failed: %r", model_id, result)
        self._runtime_down = ""
        self._paused = False
        self._wake_dispatcher.set()

    # -- the request path ------------------------------------------------------------------------
    def try_enter(self, model_id: ModelId) -> LocalCopy | None:
        """Hit path: the LOADED copy, counted as in use, or None. No await, no allocation."""
        return self._enter_loaded(model_id, counted=True)

    def _enter_loaded(self, model_id: ModelId, *, counted: bool) -> LocalCopy | None:
        """The LOADED copy, entered, or None. ``counted``: a hit (the policy sees an access);
        otherwise the request that waited for the load (its miss was counted at the reservation)."""
        copy = self.copies.get(model_id)
        if copy is not None and copy.phase is Phase.LOADED:
            copy.enter()
            self.ledger.touch(model_id, self.clock.now_ms(), counted=counted)
            return copy
        return None

    async def enter(self, model_id: ModelId, info: ModelInfo, last_used_ms: int, timeout_s: float) -> LocalCopy:
        """Miss path: load (or join the load of) a model and return its copy, counted as in use. The
        time waited for the load, if any, is the observer's cache miss."""
        copy = self.try_enter(model_id)
        if copy is not None:  # loaded meanwhile: no miss
            return copy
        started = self.clock.monotonic()
        try:
            return await self._wait_loaded(model_id, info, last_used_ms, started + timeout_s)
        finally:
            self.observer.cache_miss(model_id, self.clock.monotonic() - started)

    async def _wait_loaded(self, model_id: ModelId, info: ModelInfo, last_used_ms: int, deadline: float) -> LocalCopy:
        while True:
            copy = self._enter_loaded(model_id, counted=False)
            if copy is not None:
                return copy
            copy = self.copies.get(model_id)
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(f"timed out waiting for model '{model_id}' to load")
            if copy is None:
                copy = self.request_load(model_id, info, last_used_ms, request_waiting=True)
            elif copy.phase is Phase.UNLOADING:
                await _wait_event(copy.gone, remaining, model_id)
                continue
            elif copy.phase is Phase.QUEUED:
                self._queue.push(model_id, load_priority(last_used_ms=last_used_ms,
                                                         now_ms=self.clock.now_ms(), request_waiting=True))
            copy.waiters += 1
            copy.requested = True
            try:
                await asyncio.wait_for(asyncio.shield(copy.ready), remaining)
            except TimeoutError:
                raise DeadlineExceeded(f"timed out waiting for model '{model_id}' to load") from None
            finally:
                copy.waiters -= 1

    def request_load(self, model_id: ModelId, info: ModelInfo, last_used_ms: int, *,
                     request_waiting: bool) -> LocalCopy:
        """Queue a load unless the model already has a copy here; returns the copy."""
        copy = self.copies.get(model_id)
        if copy is not None and copy.phase is not Phase.UNLOADING:
            return copy
        if copy is not None:  # unloading: the new copy waits for the old to go
            raise Unavailable(f"model '{model_id}' is being unloaded; retry")
        if self._runtime_down:
            raise Unavailable(f"model '{model_id}' cannot be loaded on this instance now: {self._runtime_down}")
        self.ledger.check_fits_at_all(model_id, 1)
        copy = LocalCopy(model_id, asyncio.get_running_loop(), self.clock.monotonic())
        # Nobody may be awaiting this future (a background load); don't warn about its exception.
        copy.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.copies[model_id] = copy
        self._infos[model_id] = (info, last_used_ms)
        prio = load_priority(last_used_ms=last_used_ms, now_ms=self.clock.now_ms(), request_waiting=request_waiting)
        self._queue.push(model_id, prio)
        self._wake_dispatcher.set()
        return copy

    # -- loading ---------------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        while not self._closed:
            await self._wake_dispatcher.wait()
            self._wake_dispatcher.clear()
            while self._loading < self._slots and not self._paused:
                model_id = self._queue.pop()
                if model_id is None:
                    break
                copy = self.copies.get(model_id)
                if copy is None or copy.phase is not Phase.QUEUED:
                    continue
                self._loading += 1
                self._spawn(self._load(copy), f"load:{model_id}")

    def _spawn(self, coro, name: str) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, copy: LocalCopy) -> None:
        info, last_used_ms = self._infos.pop(copy.model_id)
        try:
            await LoadJob(self, copy, info, last_used_ms).run()
        finally:
            self._loading -= 1
            self._wake_dispatcher.set()

    # -- what a LoadJob uses ---------------------------------------------------------------------
    def owns(self, copy: LocalCopy) -> bool:
        """Whether ``copy`` is still this cache's copy of its model (not dropped by runtime_lost)."""
        return self.copies.get(copy.model_id) is copy

    def forget(self, copy: LocalCopy, *, release: bool) -> None:
        """A copy that did not load leaves the cache (``release``: its reservation too)."""
        if release:
            self.ledger.release(copy.model_id)
        del self.copies[copy.model_id]
        copy.gone.set()
        self._space_changed.set()

    def report(self, outcome: LoadOutcome) -> None:
        """Tell the policy (a load's measured time), the observer and the load listener how a load ended."""
        if outcome.ok:
            self.ledger.record_load_time(outcome.model_id, outcome.duration_s * 1000.0)
        self.observer.load_finished(outcome)
        if self._on_load is not None:
            try:
                self._on_load(outcome)
            except Exception:
                log.exception("load listener failed for %s", outcome.model_id)

    async def wait_for_space(self, timeout_s: float) -> None:
        """Until some cache space is freed (an unload ends, a load fails), at most ``timeout_s``."""
        self._space_changed.clear()
        try:
            await asyncio.wait_for(self._space_changed.wait(), timeout_s)
        except TimeoutError:
            pass

    # -- unloading -------------------------------------------------------------------------------
    def unload(self, model_id: ModelId) -> asyncio.Event | None:
        """Unload a model's copy (unregister). Returns an event set once it is gone, or None."""
        copy = self.copies.get(model_id)
        if copy is None:
            return None
        if copy.phase is Phase.QUEUED:
            self._queue.remove(model_id)
            self._infos.pop(model_id, None)
            self.copies.pop(model_id, None)
            copy.ready.set_exception(ModelLoadFailed(f"model '{model_id}' was unregistered"))
            copy.gone.set()
            return copy.gone
        if copy.phase is Phase.LOADED and self.ledger.mark_unloading(model_id):
            self.begin_unload(model_id, evicted=False)
        return copy.gone  # LOADING: the load finishes, then the instance unloads it if unregistered

    def begin_unload(self, model_id: ModelId, *, evicted: bool) -> None:
        """Unload a LOADED copy in the background (``evicted``: to make room for a load)."""
        copy = self.copies[model_id]
        copy.phase = Phase.UNLOADING
        if evicted:
            entry = self.ledger.get(model_id)
            if entry is not None:
                self.observer.evicted(model_id, max(0, self.clock.now_ms() - entry.last_used_ms))
        self._spawn(self._unload(copy), f"unload:{model_id}")

    async def _unload(self, copy: LocalCopy) -> None:
        model_id = copy.model_id
        entry = self.ledger.get(model_id)
        started = self.clock.monotonic()
        unloaded = False
        try:
            try:
                await asyncio.wait_for(copy.idle.wait(), UNLOAD_DRAIN_TIMEOUT_S)
            except TimeoutError:
                log.warning("unloading %s with %d requests still in flight", model_id, copy.inflight)
            unloaded = await self._unload_with_retries(model_id)
        finally:
            if self.owns(copy):  # else runtime_lost released and reported it already
                self.ledger.release(model_id)
                del self.copies[model_id]
                self._space_changed.set()
                took = self.clock.monotonic() - started
                self.observer.unload_finished(model_id, took, unloaded)
                if self._on_unload is not None and entry is not None:
                    self._on_unload(model_id, entry.last_used_ms, took)
            copy.gone.set()

    async def _unload_with_retries(self, model_id: ModelId) -> bool:
        for attempt in range(UNLOAD_ATTEMPTS):
            if attempt:
                await asyncio.sleep(min(10.0, UNLOAD_RETRY_BACKOFF_S * 2 ** (attempt - 1)))
            if await self.try_unload(model_id, UNLOAD_TIMEOUT_S):
                return True
        log.error("unloading model %s failed %d times; its copy leaves the cache anyway", model_id,
                  UNLOAD_ATTEMPTS)
        return False

    async def try_unload(self, model_id: ModelId, timeout_s: float) -> bool:
        """One unload attempt; whether the runtime no longer holds the model (not having it counts).
        A failed attempt is logged and told to the observer."""
        try:
            await asyncio.wait_for(self.runtime.unload_model(model_id), timeout_s)
        except ModelNotFound:
            return True
        except (MeshError, TimeoutError) as exc:
            log.warning("unload of %s failed: %s", model_id, exc or type(exc).__name__)
            self.observer.unload_attempt_failed(model_id)
            return False
        return True

    async def unload_quietly(self, model_id: ModelId) -> None:
        """Clean up after a load that cannot be used (timed out, too big): one bounded attempt."""
        await self.try_unload(model_id, CLEANUP_UNLOAD_TIMEOUT_S)


async def _wait_event(event: asyncio.Event, timeout: float, model_id: ModelId) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        raise DeadlineExceeded(f"timed out waiting for model '{model_id}' to unload") from None
