"""``ModelLoads``: the model bookkeeping both server adapters share, as a base of their runtimes.

What it keeps: the models loaded (a record per model id, with its reported ``size_bytes``), the
loads under way and the cleanups under way. What it does:

- **one load per model.** The first ``load_model`` of a model starts its load as a task; later
  calls for the same model wait on that task (shielded). A caller that is cancelled stops waiting;
  the last one to stop waiting stops the load itself. A load stopped by ``unload_model`` or
  ``close`` answers its waiters ``Cancelled``. Loads run at most ``max_loading_concurrency`` at a
  time, each bounded by ``model_loading_timeout_ms`` (``DeadlineExceeded``), after any cleanup of
  an earlier copy of the same model.
- **measured sizes.** The adapter fetches and lays out the model (``_prepare``), then the server
  is asked to load it (``_ask_load``) between two readings of its process tree's RSS, one load at a
  time; the size is the growth, never less than bytes on disk x ``floor_size_factor``
  (``measured_size``) and never more than the whole capacity (``CapacityExceeded``).
- **one cleanup per model.** A failed load, an unload and ``close`` remove a model through one
  task per model (``_start_cleanup``: the adapter's ``_ask_unload``, bounded, then its
  ``_remove_layout`` and the fetcher's ``release``), which later loads of the model wait for.
- **close.** Stop what runs in the background (the adapter's ``_stop_background``), stop the loads,
  unload what it loaded from a server it only attached to, stop the server it started, delete what
  it created.

The adapter sets ``server`` (its name in messages and task names) and ``log`` (its logger), calls
``_init_loads`` from its ``__init__``, and supplies the hooks named above.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from kserve_mesh.core.errors import (
    Cancelled,
    CapacityExceeded,
    DeadlineExceeded,
    MeshError,
    ModelLoadFailed,
    ModelNotFound,
    Unavailable,
)
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.runtime.adapters.memory import tree_rss_bytes
from kserve_mesh.runtime.spi import LoadResult, RuntimeState, RuntimeStatus

CLEANUP_TIMEOUT_S = 30.0


def measured_size(config: Any, disk: int, before: int | None, after: int | None) -> int:
    """RSS growth of the server's process tree, never less than disk x ``config.floor_size_factor``."""
    floor = math.ceil(disk * config.floor_size_factor)
    delta = after - before if before is not None and after is not None else 0
    return max(delta, floor, 1)


@dataclass(slots=True)
class PendingLoad:
    task: asyncio.Task[LoadResult]
    waiters: int = 0


@dataclass(slots=True)
class Owned:
    """What ``start`` created and ``close`` must stop or delete: the server process (None when the
    runtime attached to one) and folders. Adapters add how to start a fresh server."""

    process: Any = None
    dirs: list[Path] = field(default_factory=list)


class ModelLoads:
    """Loads, unloads and close of an adapter's runtime (module docstring)."""

    server: ClassVar[str]  # "MLServer", "Triton": in messages; lower-cased in task names
    log: ClassVar[logging.Logger]

    config: Any  # the adapter's config: capacity_bytes, max_loading_concurrency, model_loading_timeout_ms, ...
    endpoint: Any  # its server's endpoint: ``pid`` measures loads
    version: str
    _owned: Owned
    _client: Any
    _fetcher: Any  # runtime.builtin.fetch.Fetcher

    def _init_loads(self) -> None:
        self._models: dict[str, Any] = {}  # model id -> the adapter's record (with ``size_bytes``)
        self._pending: dict[str, PendingLoad] = {}
        self._cleanups: dict[str, asyncio.Task[None]] = {}
        self._load_slots = asyncio.Semaphore(self.config.max_loading_concurrency)
        self._measure_lock = asyncio.Lock()
        self._baseline_bytes = 0  # the tree's RSS at the first status holding no models (issue 16)
        self._load_timeout_s = self.config.model_loading_timeout_ms / 1000
        self._closed = False

    # -- what the adapter supplies --------------------------------------------------------------

    def _entered(self, timeout_s: float) -> AbstractAsyncContextManager[None]:
        """Pass the adapter's gate (closed while its server restarts)."""
        raise NotImplementedError

    def _model_format(self, model_id: str, info: ModelInfo) -> str:
        """The model's format as its ModelInfo says (checked where it can be), or "" to detect."""
        raise NotImplementedError

    async def _prepare(self, model_id: str, info: ModelInfo, model_format: str) -> tuple[Any, int]:
        """Fetch the model and lay it out for the server: (what ``_ask_load`` and ``_commit`` need,
        bytes on disk)."""
        raise NotImplementedError

    async def _ask_load(self, model_id: str, prepared: Any) -> None:
        raise NotImplementedError

    def _commit(self, model_id: str, prepared: Any, size: int) -> None:
        """Record the loaded model in ``_models`` (and log it)."""
        raise NotImplementedError

    async def _ask_unload(self, model_id: str) -> None:
        raise NotImplementedError

    def _remove_layout(self, model_id: str) -> None:
        """Delete what ``_prepare`` wrote into the server's repository. Blocking."""
        raise NotImplementedError

    def _maybe_recycle(self, resident: int) -> None:
        """Start a recycle of the server if one is due (``runtime.adapters.recycle``)."""

    async def _stop_background(self) -> None:
        """Stop what the adapter runs in the background (a recycle, a watcher)."""

    # -- status and sizes -----------------------------------------------------------------------

    def _tree_rss(self) -> int | None:
        """Resident bytes of the server's process tree (None without its pid: sizes are the floor)."""
        pid = self.endpoint.pid
        return tree_rss_bytes(pid) if pid else None

    def _status(self, alive: bool, resident: int) -> RuntimeStatus:
        """The status to report; the first reading holding no models is the baseline."""
        c = self.config
        if resident and not self._baseline_bytes and not self._models and not self._pending:
            self._baseline_bytes = resident
        if resident:
            self._maybe_recycle(resident)
        return RuntimeStatus(
            state=RuntimeState.READY if alive else RuntimeState.FAILING,
            capacity_bytes=c.capacity_bytes,
            max_loading_concurrency=c.max_loading_concurrency,
            model_loading_timeout_ms=c.model_loading_timeout_ms,
            default_model_size_bytes=c.default_model_size_bytes,
            runtime_version=self.version,
            resident_bytes=resident,
            baseline_bytes=self._baseline_bytes if resident else 0,
        )

    async def model_size(self, model_id: str) -> int:
        return self._get(model_id).size_bytes

    def loaded_models(self) -> dict[str, int]:
        """Loaded model ids and their reported sizes."""
        return {mid: m.size_bytes for mid, m in self._models.items()}

    def _get(self, model_id: str) -> Any:
        loaded = self._models.get(model_id)
        if loaded is None:
            raise ModelNotFound(model_id, f"model '{model_id}' is not loaded in this runtime")
        return loaded

    # -- load / unload --------------------------------------------------------------------------

    async def load_model(self, model_id: str, info: ModelInfo) -> LoadResult:
        if self._closed:
            raise Unavailable(f"the {self.server} runtime is shutting down")
        async with self._entered(self._load_timeout_s):
            return await self._load_or_join(model_id, info)

    async def _load_or_join(self, model_id: str, info: ModelInfo) -> LoadResult:
        loaded = self._models.get(model_id)
        if loaded is not None:
            return LoadResult(loaded.size_bytes)
        pending = self._pending.get(model_id)
        if pending is None:  # the first ask starts the load; later asks share it
            task = asyncio.create_task(self._load(model_id, info), name=f"{self.server.lower()}-load:{model_id}")
            pending = self._pending[model_id] = PendingLoad(task)
            task.add_done_callback(lambda t: self._load_done(model_id, pending))
        pending.waiters += 1
        try:
            return await asyncio.shield(pending.task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():  # this caller was cancelled
                if pending.waiters == 1:  # nobody else wants it: stop the load (it cleans up after itself)
                    pending.task.cancel()
                raise
            # the load itself was stopped, by an unload or by close
            raise Cancelled(f"load of model '{model_id}' was cancelled by an unload") from None
        finally:
            pending.waiters -= 1

    def _load_done(self, model_id: str, pending: PendingLoad) -> None:
        if self._pending.get(model_id) is pending:
            del self._pending[model_id]
        if not pending.task.cancelled():
            pending.task.exception()  # retrieved here: a load nobody waits for any more must not warn

    async def _load(self, model_id: str, info: ModelInfo) -> LoadResult:
        model_format = self._model_format(model_id, info)
        cleanup = self._cleanups.get(model_id)
        if cleanup is not None:  # an earlier copy is still being removed
            await asyncio.shield(cleanup)
        async with self._load_slots:
            try:
                async with asyncio.timeout(self._load_timeout_s):
                    return await self._load_now(model_id, info, model_format)
            except TimeoutError as exc:
                raise DeadlineExceeded(
                    f"loading model '{model_id}' timed out after {self.config.model_loading_timeout_ms} ms"
                ) from exc

    async def _load_now(self, model_id: str, info: ModelInfo, model_format: str) -> LoadResult:
        committed = asked = False
        try:
            prepared, disk = await self._prepare(model_id, info, model_format)
            async with self._measure_lock:
                before = self._tree_rss()
                asked = True
                await self._ask_load(model_id, prepared)
                after = self._tree_rss()
            size = measured_size(self.config, disk, before, after)
            if size > self.config.capacity_bytes:
                raise CapacityExceeded(
                    f"model '{model_id}' needs {size} bytes, more than the runtime's whole capacity of "
                    f"{self.config.capacity_bytes} bytes"
                )
            self._commit(model_id, prepared, size)
            committed = True
            delta = max(0, after - before) if before is not None and after is not None else 0
            return LoadResult(size, resident_delta_bytes=delta)
        except MeshError:
            raise
        except Exception as exc:  # a file or library error becomes one clear message
            raise ModelLoadFailed(
                f"cannot load model '{model_id}' into {self.server}: {type(exc).__name__}: {exc}") from exc
        finally:
            if not committed:
                await asyncio.shield(self._start_cleanup(model_id, unload=asked))

    async def unload_model(self, model_id: str) -> None:
        """Unload a model (or stop its load); returns when the server has dropped it and its files are gone."""
        pending = self._pending.get(model_id)
        if pending is not None:
            pending.task.cancel()
            await asyncio.wait({pending.task})
        loaded = self._models.pop(model_id, None)
        if loaded is not None:
            await asyncio.shield(self._start_cleanup(model_id))
            self.log.info("%s unloaded model %s", self.server, model_id)
        else:
            cleanup = self._cleanups.get(model_id)
            if cleanup is not None:
                await asyncio.shield(cleanup)

    def _start_cleanup(self, model_id: str, *, unload: bool = True) -> asyncio.Task[None]:
        """Start removing a model (``_cleanup``), or return its removal under way: one at a time per model."""
        existing = self._cleanups.get(model_id)
        if existing is not None:
            return existing
        task = asyncio.create_task(self._cleanup(model_id, unload), name=f"{self.server.lower()}-unload:{model_id}")
        self._cleanups[model_id] = task

        def _forget(done: asyncio.Task[None]) -> None:
            if self._cleanups.get(model_id) is done:
                del self._cleanups[model_id]
            if not done.cancelled() and done.exception() is not None:
                self.log.warning("cleaning up model %s failed: %s", model_id, done.exception())

        task.add_done_callback(_forget)
        return task

    async def _cleanup(self, model_id: str, unload: bool) -> None:
        """Ask the server to unload the model (if it was asked to load it), delete its layout and
        let the fetcher delete its files."""
        try:
            if unload:
                async with asyncio.timeout(CLEANUP_TIMEOUT_S):
                    await self._ask_unload(model_id)
        except (MeshError, TimeoutError) as exc:
            process = self._owned.process
            if process is None or process.alive():
                self.log.warning("%s did not unload model %s: %s", self.server, model_id, exc)
        await asyncio.to_thread(self._remove_layout, model_id)
        try:
            await asyncio.to_thread(self._fetcher.release, model_id)
        except Exception as exc:  # noqa: BLE001 - a leftover cache folder must not fail an unload
            self.log.warning("could not release the files of model %s: %s", model_id, exc)

    # -- shutdown -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop loads, stop the server if this runtime started it (else unload what it loaded), and
        delete what it created."""
        if self._closed:
            return
        self._closed = True
        await self._stop_background()
        tasks: list[asyncio.Task[Any]] = [p.task for p in self._pending.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLEANUP_TIMEOUT_S)
        process = self._owned.process
        if process is None:  # someone else's server: leave it as we found it
            for model_id in list(self._models):
                self._models.pop(model_id)
                self._start_cleanup(model_id)
        else:
            self._models.clear()
        if self._cleanups:
            await asyncio.wait(set(self._cleanups.values()), timeout=CLEANUP_TIMEOUT_S)
        await self._client.close()
        if process is not None:
            await process.stop()
        for d in self._owned.dirs:
            shutil.rmtree(d, ignore_errors=True)


def default_fetcher(cache_dir: Path) -> Any:
    """A fetcher without storage credentials (local paths and public URLs), caching in ``cache_dir``."""
    from kserve_mesh.storage import ModelFetcher, StorageConfig

    cache_dir.mkdir(parents=True, exist_ok=True)
    return ModelFetcher(StorageConfig.empty(), cache_dir)
