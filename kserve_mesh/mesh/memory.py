"""Memory truth (issue 16): what the runtime process really holds, against what the cache accounts.

The cache promises ``used bytes <= capacity``, but that promise is kept in the ledger; the process
can hold more than its copies' sizes (the allocator keeps freed memory, sizes were predicted too
low). ``MemoryWatch`` reads the runtime's ``runtimeStatus`` (``resident_bytes``: its RSS now;
``baseline_bytes``: its RSS holding no models plus the libraries it imported) every
``interval_s`` and works out

    unaccounted = resident - baseline - accounted (the ledger's copies, loading and unloading included)

Then, when ``reconcile`` is on, what exceeds ``margin_bytes`` is counted as used in the ledger
(``CacheManager.count_unaccounted``: LRU copies are evicted when it does not fit), so the cache
evicts instead of over-committing: resident <= baseline + capacity + margin. Past ``recycle_bytes``
(0: never) it asks for a planned restart of the runtime child (``RuntimeSupervisor.recycle``): no new
loads, requests in flight finish, a fresh process, models load again on demand. While it recycles,
the instance publishes ``recycling`` in its record: peers place no new copies on it, and requests
that reach it for models it no longer holds are forwarded to, or loaded on, other instances. The first reading
taken while the cache holds nothing moves the baseline up to the resident size then (what the
process allocated between the runtime's own baseline and serving: its servers, and with the
in-process runtime the whole instance); growth after that is drift. A runtime that does
not report its memory (resident 0: a remote adapter that does not know the extension) is left alone.

Sizes that hold: each load's reported size is compared with its prediction and, where the runtime
measured it, its RSS growth; a size off by more than ``misprediction_factor`` either way is logged
and counted (``kserve_mesh_model_size_mispredictions_total``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kserve_mesh.core.errors import MeshError
from kserve_mesh.runtime.spi import ModelRuntime

log = logging.getLogger(__name__)

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class MemorySettings:
    reconcile: bool = True
    margin_bytes: int = 128 * MiB
    recycle_bytes: int = 0  # unaccounted bytes past which the runtime child is recycled; 0 = never
    interval_s: float = 5.0
    misprediction_factor: float = 2.0
    recycle_min_interval_s: float = 60.0  # no second recycle sooner than this after one


@dataclass(frozen=True, slots=True)
class MemorySnapshot:
    """The last reading: all 0 until the runtime reported its memory."""

    resident_bytes: int = 0
    baseline_bytes: int = 0
    accounted_bytes: int = 0
    counted_bytes: int = 0  # unaccounted bytes the ledger counts as used
    recycles: int = 0
    mispredictions: int = 0

    @property
    def known(self) -> bool:
        return self.resident_bytes > 0

    @property
    def unaccounted_bytes(self) -> int:
        return self.resident_bytes - self.baseline_bytes - self.accounted_bytes if self.known else 0

    def as_json(self) -> dict[str, int]:
        return {"residentBytes": self.resident_bytes, "baselineBytes": self.baseline_bytes,
                "accountedBytes": self.accounted_bytes, "unaccountedBytes": self.unaccounted_bytes,
                "unaccountedCountedBytes": self.counted_bytes, "runtimeRecycles": self.recycles,
                "sizeMispredictions": self.mispredictions}


def excess_to_count(unaccounted: int, margin: int) -> int:
    """The unaccounted bytes the ledger counts as used: what exceeds the margin."""
    return max(0, unaccounted - margin)


def mispredicted(predicted: int, measured: int, factor: float) -> bool:
    """Whether a size is off by more than ``factor`` either way (0 sizes are not judged)."""
    if predicted <= 0 or measured <= 0:
        return False
    return measured > predicted * factor or predicted > measured * factor


class Ledgered:
    """What the watch needs of the cache manager."""

    def accounted_bytes(self) -> int: ...  # pragma: no cover - protocol

    def count_unaccounted(self, wanted_bytes: int) -> int: ...  # pragma: no cover - protocol


class MemoryWatch:
    """Polls the runtime's memory, feeds the ledger, asks for recycles (module docstring)."""

    def __init__(self, runtime: ModelRuntime, cache: Ledgered, settings: MemorySettings, *,
                 recycle: Callable[[str], Awaitable[None]] | None = None,
                 monotonic: Callable[[], float] | None = None,
                 on_recycling: Callable[[bool], None] | None = None) -> None:
        self.runtime = runtime
        self.cache = cache
        self.settings = settings
        self._recycle = recycle
        self._on_recycling = on_recycling  # told when a recycle starts (True) and ends (False)
        self._monotonic = monotonic or (lambda: asyncio.get_running_loop().time())
        self.snapshot = MemorySnapshot()
        self.recycles = 0
        self.mispredictions = 0
        # The runtime's batch sizes as last reported (runtimeStatus: counts per bucket, requests):
        # what kserve_mesh_batch_size shows for a runtime in another process.
        self.batch_sizes: tuple[tuple[int, ...], int] = ((), 0)
        self._last_recycle = float("-inf")
        self._start_offset: int | None = None  # resident - baseline at the first reading of an empty cache
        self._recycling: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="memory-watch")

    async def stop(self) -> None:
        for task in (self._task, self._recycling):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._recycling = None

    @property
    def recycling(self) -> bool:
        return self._recycling is not None and not self._recycling.done()

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("memory check failed")
            await asyncio.sleep(self.settings.interval_s)

    async def check(self) -> MemorySnapshot:
        """Read the runtime's memory once and act on it; returns the new snapshot."""
        try:
            status = await asyncio.wait_for(self.runtime.runtime_status(), max(1.0, self.settings.interval_s))
        except (MeshError, TimeoutError):
            return self.snapshot  # the supervisor deals with a runtime that does not answer
        self.batch_sizes = (tuple(status.batch_size_counts), status.batch_size_total)
        return self.observe(status.resident_bytes, status.baseline_bytes)

    def observe(self, resident: int, baseline: int) -> MemorySnapshot:
        """One reading of the runtime's memory (``resident`` 0: unknown): reconcile, maybe recycle."""
        s = self.settings
        accounted = self.cache.accounted_bytes()
        counted = 0
        if resident > 0 and self._start_offset is None and accounted == 0:
            self._start_offset = max(0, resident - baseline)
        baseline += self._start_offset or 0
        if resident > 0 and not self.recycling:
            unaccounted = resident - baseline - accounted
            if s.reconcile:
                counted = excess_to_count(unaccounted, s.margin_bytes)
                short = self.cache.count_unaccounted(counted)
                counted -= short
            if s.recycle_bytes and unaccounted > s.recycle_bytes and self._recycle is not None \
                    and self._monotonic() - self._last_recycle >= s.recycle_min_interval_s:
                self._start_recycle(f"it holds {unaccounted / MiB:.0f} MiB that no model accounts for "
                                    f"(resident {resident / MiB:.0f} MiB, baseline {baseline / MiB:.0f} MiB, "
                                    f"models {accounted / MiB:.0f} MiB; recycle past {s.recycle_bytes / MiB:.0f} MiB)")
        elif resident <= 0:
            self.cache.count_unaccounted(0)
        self.snapshot = MemorySnapshot(resident, baseline, accounted, counted, self.recycles, self.mispredictions)
        return self.snapshot

    def _start_recycle(self, reason: str) -> None:
        assert self._recycle is not None
        self._last_recycle = self._monotonic()
        self.recycles += 1
        self.cache.count_unaccounted(0)  # a fresh process comes: what it held goes with it
        log.warning("recycling the runtime process: %s", reason)
        self._recycling = asyncio.create_task(self._recycle(reason), name="runtime-recycle")
        self._recycling.add_done_callback(self._recycle_ended)
        self._tell(True)

    def _tell(self, recycling: bool) -> None:
        if self._on_recycling is not None:
            try:
                self._on_recycling(recycling)
            except Exception:
                log.exception("telling the mesh about a recycle failed")

    def _recycle_ended(self, task: asyncio.Task[None]) -> None:
        _log_failure(task)
        self._tell(False)

    def load_sized(self, model_id: str, predicted: int, reported: int, resident_delta: int) -> None:
        """A load finished: judge its predicted and reported sizes against each other and against
        the measured RSS growth; a size off by more than the factor is logged and counted."""
        f = self.settings.misprediction_factor
        off = []
        if mispredicted(predicted, reported, f):
            off.append(f"predicted {predicted} bytes, loaded {reported} bytes")
        if mispredicted(reported, resident_delta, f) and resident_delta > reported:
            off.append(f"reported {reported} bytes, but resident memory grew {resident_delta} bytes")
        if off:
            self.mispredictions += 1
            log.warning("model %s: size far off (more than %gx): %s", model_id, f, "; ".join(off))


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("recycling the runtime failed", exc_info=task.exception())
