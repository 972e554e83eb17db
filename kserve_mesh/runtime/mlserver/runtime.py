"""``MLServerRuntime``: the ModelRuntime SPI in front of an MLServer process.

Loading a model: fetch its files (``kserve_mesh.storage``, in a thread), write a
``model-settings.json`` named after the concrete model id with the MLServer implementation of its
format, and ask MLServer's repository API to load it (REST ``POST
/v2/repository/models/{name}/load``). The reported size is measured: the growth of the resident
memory of the MLServer process and its workers across the load, never less than bytes on disk x
``floor_size_factor``. Loads are measured one at a time (RSS is process-wide); fetches run in
parallel up to ``max_loading_concurrency``. Before the first load, each installed format is
"primed" (MLServer imports the implementation while parsing a throw-away settings file) so the
first model of a format is not charged for importing its framework.

Unloading asks MLServer's repository API to unload, then deletes the settings file and the fetched
files. MLServer does not give the memory back to the operating system (FACTS.md): the RSS stays
high after an unload, later loads reuse that memory and measure small, and the disk-size floor is
what keeps their reported sizes honest. The mesh's cache accounting, not the process RSS, is what
bounds the models held.

Inference: requests are checked structurally here (MLServer answers INTERNAL for a malformed
tensor), then forwarded to MLServer by ``MLServerClient`` (``client.py``: the REST and gRPC wire).

Not handled: a dead MLServer process is reported (``runtimeStatus`` FAILING, calls answer
``Unavailable``) but not restarted; the supervisor (Kubernetes, or the operator) restarts the pod.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from kserve_mesh.protocol import tensors, v2
from kserve_mesh.runtime.builtin.fetch import Fetcher
from kserve_mesh.runtime.builtin.models import detect_model_type, find_model_file, resolve_model_spec
from kserve_mesh.runtime.builtin.sizing import disk_size_bytes
from kserve_mesh.runtime.mlserver.client import MLServerClient
from kserve_mesh.runtime.mlserver.config import MLServerConfig, find_venv
from kserve_mesh.runtime.mlserver.model_settings import (
    IMPLEMENTATIONS,
    installed_formats,
    remove_model_settings,
    write_model_settings,
)
from kserve_mesh.runtime.mlserver.process import MLServerEndpoint, MLServerProcess
from kserve_mesh.runtime.mlserver.sizing import measured_size, predicted_size, tree_rss
from kserve_mesh.runtime.spi import LoadResult, RuntimeState, RuntimeStatus

logger = logging.getLogger(__name__)

_CLEANUP_TIMEOUT_S = 30.0


@dataclass(slots=True)
class _PendingLoad:
    task: asyncio.Task[LoadResult]
    waiters: int = 0


@dataclass(frozen=True, slots=True)
class _Loaded:
    size_bytes: int
    model_format: str


@dataclass(slots=True)
class _Owned:
    """What ``start`` created and ``close`` must stop or delete."""

    process: MLServerProcess | None = None
    dirs: list[Path] = field(default_factory=list)


class MLServerRuntime:
    """The ModelRuntime of an MLServer process. Create it with ``start`` or ``attach``."""

    def __init__(
        self,
        endpoint: MLServerEndpoint,
        config: MLServerConfig,
        fetcher: Fetcher,
        formats: frozenset[str],
        *,
        process: MLServerProcess | None = None,
        owned_dirs: list[Path] | None = None,
        version: str = "",
    ) -> None:
        self.config = config
        self.endpoint = endpoint
        self.formats = formats
        self.version = version
        self._fetcher = fetcher
        self._owned = _Owned(process, list(owned_dirs or ()))
        self._models: dict[str, _Loaded] = {}
        self._pending: dict[str, _PendingLoad] = {}
        self._cleanups: dict[str, asyncio.Task[None]] = {}
        self._load_slots = asyncio.Semaphore(config.max_loading_concurrency)
        self._measure_lock = asyncio.Lock()
        self._baseline_bytes = 0  # the tree's RSS at the first status holding no models (issue 16)
        self._load_timeout_s = config.model_loading_timeout_ms / 1000
        self._client = MLServerClient(endpoint, config, process)
        self._closed = False

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    async def start(
        cls, config: MLServerConfig | None = None, *, venv: Path | None = None, work_dir: Path | None = None,
        fetcher: Fetcher | None = None,
    ) -> MLServerRuntime:
        """Start MLServer from its venv (``find_venv``) and return the runtime in front of it.

        ``work_dir`` holds MLServer's settings, the model settings, its log and (with the default
        fetcher) downloaded models; by default a temporary folder deleted by ``close``.
        """
        config = config or MLServerConfig()
        venv = find_venv(venv)
        owned: list[Path] = []
        if work_dir is None:
            work_dir = Path(tempfile.mkdtemp(prefix="kserve-mesh-mlserver-"))
            owned.append(work_dir)
        try:
            process = await MLServerProcess.start(
                venv, work_dir, parallel_workers=config.parallel_workers,
                max_message_bytes=config.max_message_bytes, timeout_s=config.start_timeout_s)
        except BaseException:
            for d in owned:
                shutil.rmtree(d, ignore_errors=True)
            raise
        runtime = cls(process.endpoint, config, fetcher or _default_fetcher(work_dir / "cache"),
                      installed_formats(venv), process=process, owned_dirs=owned)
        try:
            runtime.version = await runtime._client.prepare(runtime.formats)
        except BaseException:
            await runtime.close()
            raise
        return runtime

    @classmethod
    async def attach(
        cls, endpoint: MLServerEndpoint, config: MLServerConfig | None = None, *,
        fetcher: Fetcher | None = None, formats: frozenset[str] | None = None,
    ) -> MLServerRuntime:
        """Drive an MLServer that already runs. Its ``model_repository_root`` must be
        ``endpoint.repository`` (a folder both processes see); without ``endpoint.pid`` sizes are
        the disk-size floor only."""
        config = config or MLServerConfig()
        cache = Path(tempfile.mkdtemp(prefix="kserve-mesh-mlserver-cache-"))
        runtime = cls(endpoint, config, fetcher or _default_fetcher(cache), formats or frozenset(IMPLEMENTATIONS),
                      owned_dirs=[cache])
        try:
            await runtime._client.wait_ready(config.start_timeout_s)
            runtime.version = await runtime._client.prepare(runtime.formats)
        except BaseException:
            await runtime.close()
            raise
        return runtime

    # -- status and sizes -----------------------------------------------------------------------

    async def runtime_status(self) -> RuntimeStatus:
        c = self.config
        process = self._owned.process
        alive = not self._closed and (process is None or process.alive())
        resident = (await asyncio.to_thread(tree_rss, self.endpoint) or 0) if alive else 0
        if resident and not self._baseline_bytes and not self._models and not self._pending:
            self._baseline_bytes = resident
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

    async def predict_model_size(self, model_id: str, info: ModelInfo) -> int:
        """Bytes on disk x ``predict_size_factor`` + overhead (``sizing.predicted_size``). No download."""
        return await predicted_size(info, self.config)

    async def model_size(self, model_id: str) -> int:
        return self._get(model_id).size_bytes

    def loaded_models(self) -> dict[str, int]:
        """Loaded model ids and their reported sizes."""
        return {mid: m.size_bytes for mid, m in self._models.items()}

    # -- load / unload --------------------------------------------------------------------------

    async def load_model(self, model_id: str, info: ModelInfo) -> LoadResult:
        if self._closed:
            raise Unavailable("the MLServer runtime is shutting down")
        loaded = self._models.get(model_id)
        if loaded is not None:
            return LoadResult(loaded.size_bytes)
        pending = self._pending.get(model_id)
        if pending is None:  # the first ask starts the load; later asks share it
            task = asyncio.create_task(self._load(model_id, info), name=f"mlserver-load:{model_id}")
            pending = self._pending[model_id] = _PendingLoad(task)
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

    def _load_done(self, model_id: str, pending: _PendingLoad) -> None:
        if self._pending.get(model_id) is pending:
            del self._pending[model_id]
        if not pending.task.cancelled():
            pending.task.exception()  # retrieved here: a load nobody waits for any more must not warn

    async def _load(self, model_id: str, info: ModelInfo) -> LoadResult:
        spec = resolve_model_spec(info.type, info.key)
        if spec.model_type:
            self._check_format(model_id, spec.model_type)
        cleanup = self._cleanups.get(model_id)
        if cleanup is not None:  # an earlier copy is still being removed
            await asyncio.shield(cleanup)
        async with self._load_slots:
            try:
                async with asyncio.timeout(self._load_timeout_s):
                    return await self._load_now(model_id, info, spec.model_type)
            except TimeoutError as exc:
                raise DeadlineExceeded(
                    f"loading model '{model_id}' timed out after {self.config.model_loading_timeout_ms} ms"
                ) from exc

    async def _load_now(self, model_id: str, info: ModelInfo, model_format: str) -> LoadResult:
        committed = asked = False
        try:
            local = await asyncio.to_thread(self._fetcher.fetch, model_id, info.path, info.key)
            model_format, model_file, disk = await asyncio.to_thread(_inspect, local, model_format)
            self._check_format(model_id, model_format)
            await asyncio.to_thread(write_model_settings, self.endpoint.repository, model_id, model_format,
                                    model_file)
            async with self._measure_lock:
                before = tree_rss(self.endpoint)
                asked = True
                await self._client.repository("load", model_id)
                after = tree_rss(self.endpoint)
            size = measured_size(self.config, disk, before, after)
            if size > self.config.capacity_bytes:
                raise CapacityExceeded(
                    f"model '{model_id}' needs {size} bytes, more than the runtime's whole capacity of "
                    f"{self.config.capacity_bytes} bytes"
                )
            self._models[model_id] = _Loaded(size, model_format)
            committed = True
            logger.info("MLServer loaded model %s (%s, %d bytes)", model_id, model_format, size)
            delta = max(0, after - before) if before is not None and after is not None else 0
            return LoadResult(size, resident_delta_bytes=delta)
        except MeshError:
            raise
        except Exception as exc:  # noqa: BLE001 - a file or library error becomes one clear message
            raise ModelLoadFailed(f"cannot load model '{model_id}' into MLServer: {type(exc).__name__}: {exc}") from exc
        finally:
            if not committed:
                await asyncio.shield(self._start_cleanup(model_id, unload=asked))

    def _check_format(self, model_id: str, model_format: str) -> None:
        if model_format in self.formats:
            return
        known = IMPLEMENTATIONS.get(model_format)
        hint = f" (install {known[1]} into the MLServer venv)" if known else ""
        raise ModelLoadFailed(
            f"model '{model_id}': the MLServer runtime cannot serve model type '{model_format}'{hint}; "
            f"it serves {', '.join(sorted(self.formats)) or 'nothing'}"
        )

    async def unload_model(self, model_id: str) -> None:
        """Unload a model (or stop its load); returns when MLServer has dropped it and its files are gone."""
        pending = self._pending.get(model_id)
        if pending is not None:
            pending.task.cancel()
            await asyncio.wait({pending.task})
        loaded = self._models.pop(model_id, None)
        if loaded is not None:
            await asyncio.shield(self._start_cleanup(model_id))
            logger.info("MLServer unloaded model %s", model_id)
        else:
            cleanup = self._cleanups.get(model_id)
            if cleanup is not None:
                await asyncio.shield(cleanup)

    def _start_cleanup(self, model_id: str, *, unload: bool = True) -> asyncio.Task[None]:
        """Unload from MLServer (if it was asked to load it), delete the settings and the fetched
        files. One cleanup at a time per model."""
        existing = self._cleanups.get(model_id)
        if existing is not None:
            return existing
        task = asyncio.create_task(self._cleanup(model_id, unload), name=f"mlserver-unload:{model_id}")
        self._cleanups[model_id] = task

        def _forget(done: asyncio.Task[None]) -> None:
            if self._cleanups.get(model_id) is done:
                del self._cleanups[model_id]
            if not done.cancelled() and done.exception() is not None:
                logger.warning("cleaning up model %s failed: %s", model_id, done.exception())

        task.add_done_callback(_forget)
        return task

    async def _cleanup(self, model_id: str, unload: bool) -> None:
        try:
            if unload:
                async with asyncio.timeout(_CLEANUP_TIMEOUT_S):
                    await self._client.repository("unload", model_id, missing_ok=True)
        except (MeshError, TimeoutError) as exc:
            if self._owned.process is None or self._owned.process.alive():
                logger.warning("MLServer did not unload model %s: %s", model_id, exc)
        await asyncio.to_thread(remove_model_settings, self.endpoint.repository, model_id)
        try:
            await asyncio.to_thread(self._fetcher.release, model_id)
        except Exception as exc:  # noqa: BLE001 - a leftover cache folder must not fail an unload
            logger.warning("could not release the files of model %s: %s", model_id, exc)

    # -- inference ------------------------------------------------------------------------------

    async def infer(self, request: v2.ModelInferRequest, *, timeout: float | None = None) -> v2.ModelInferResponse:
        model_id = request.model_name
        self._get(model_id)
        tensors.decode_inputs(request)  # InvalidArgument naming the tensor: MLServer would say INTERNAL
        return await self._client.infer(request, min(timeout or self.config.infer_timeout_s,
                                                     self.config.infer_timeout_s))

    async def model_metadata(self, model_id: str) -> v2.ModelMetadataResponse:
        self._get(model_id)
        return await self._client.model_metadata(model_id)

    def _get(self, model_id: str) -> _Loaded:
        loaded = self._models.get(model_id)
        if loaded is None:
            raise ModelNotFound(model_id, f"model '{model_id}' is not loaded in this runtime")
        return loaded

    # -- shutdown -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop loads, stop MLServer if this runtime started it (else unload what it loaded), and
        delete what it created."""
        if self._closed:
            return
        self._closed = True
        tasks: list[asyncio.Task[Any]] = [p.task for p in self._pending.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_CLEANUP_TIMEOUT_S)
        process = self._owned.process
        if process is None:  # someone else's MLServer: leave it as we found it
            for model_id in list(self._models):
                self._models.pop(model_id)
                self._start_cleanup(model_id)
        else:
            self._models.clear()
        if self._cleanups:
            await asyncio.wait(set(self._cleanups.values()), timeout=_CLEANUP_TIMEOUT_S)
        await self._client.close()
        if process is not None:
            await process.stop()
        for d in self._owned.dirs:
            shutil.rmtree(d, ignore_errors=True)


def _default_fetcher(cache_dir: Path) -> Fetcher:
    from kserve_mesh.storage import ModelFetcher, StorageConfig

    cache_dir.mkdir(parents=True, exist_ok=True)
    return ModelFetcher(StorageConfig.empty(), cache_dir)


def _inspect(local: Path, model_format: str) -> tuple[str, Path, int]:
    """(format, the model file MLServer is to read, bytes on disk) of fetched files. Blocking."""
    model_format = model_format or detect_model_type(local)
    return model_format, find_model_file(local, model_format), disk_size_bytes(local)
