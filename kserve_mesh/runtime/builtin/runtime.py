"""The built-in Python runtime: loads sklearn/xgboost/lightgbm/onnx/string, pytorch, tensorflow/keras,
openvino_ir and custom Python models (``formats/``) and serves them.

It implements the ``ModelRuntime`` port (``runtime/spi.py``) in-process, which is how the embedded
default runs it (no extra hop); ``runtime/server.py`` puts the same object behind gRPC.

Loading: fetching and deserializing block, so they run in a worker thread, at most
``max_loading_concurrency`` at a time; the load timeout counts from the start of loading, not from
queueing. A thread cannot be interrupted, so a load that times out, is cancelled, or meets an
``unload_model`` is marked abandoned: its slot stays taken until the thread ends, and then whatever
it loaded is dropped and its files released. Nothing abandoned ever becomes servable.

Inference: validate against the model's metadata (``validation.py``), predict (``prediction.py``), encode. Small
requests predict on the event loop (a thread hop costs more than a tiny model); large ones go to a worker thread.
Models that take a batch dimension get an adaptive batcher (``batching.py``, decided at load time by
``batch_plan``): concurrent requests are stacked, predicted once and split.

The settings are ``RuntimeConfig`` (``config.py``, importable from here as before).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import logging
import math
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

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
from kserve_mesh.protocol.rest_arrays import ArrayRequest, parse_infer_arrays, render_arrays_response
from kserve_mesh.runtime.builtin.batching import Batcher, BatchSnapshot, BatchStats
from kserve_mesh.runtime.builtin.config import RuntimeConfig
from kserve_mesh.runtime.builtin.fetch import Fetcher, default_fetcher
from kserve_mesh.runtime.builtin.formats import FRAMEWORKS, import_framework
from kserve_mesh.runtime.builtin.loaders import StringModel, load_model_file
from kserve_mesh.runtime.builtin.models import (
    SKLEARN,
    STRING,
    BatchSettings,
    LoadedModel,
    ModelSpec,
    detect_model_type,
    find_model_file,
    resolve_model_spec,
)
from kserve_mesh.runtime.builtin.prediction import predict as _predict
from kserve_mesh.runtime.builtin.sizing import (
    current_rss_bytes,
    disk_size_bytes,
    disk_size_or_zero,
    local_path,
    release_free_memory,
)
from kserve_mesh.runtime.builtin.streaming import stream_answers
from kserve_mesh.runtime.builtin.validation import declared_datatypes, metadata_of, validate_inputs
from kserve_mesh.runtime.gpu import GpuProbe
from kserve_mesh.runtime.spi import LoadResult, RuntimeState, RuntimeStatus

logger = logging.getLogger(__name__)

# Framework modules imported before the measured part of a load, so the first model of a type is
# not charged for the library itself.
_FRAMEWORK_MODULES = {
    SKLEARN: ("joblib", "sklearn.base", "sklearn.linear_model", "sklearn.ensemble", "sklearn.tree"),
    "xgboost": ("xgboost",),
    "lightgbm": ("lightgbm",),
    "onnx": ("onnxruntime",),
}


def batch_plan(model: LoadedModel, key: BatchSettings | None, config: RuntimeConfig) -> tuple[int, float] | None:
    """(max batch size, max delay in ms) of a loaded model, or None when it is not batched: the
    model key's ``batching`` first, then the model's own settings (a custom model's), then the
    runtime's defaults, which apply only to models that take them (``batch_by_default``: not user
    code), and then only where every input has a dimension after the batch one. Never for a model
    whose inputs cannot be stacked (``LoadedModel.stacks_rows``)."""
    own = model.batching or BatchSettings()
    key = key or BatchSettings()
    size = key.max_batch_size if key.max_batch_size is not None else own.max_batch_size
    explicit = size is not None
    if size is None:
        size = config.batch_max_size if model.batch_by_default else 0
    delay = key.max_batch_delay_ms if key.max_batch_delay_ms is not None else own.max_batch_delay_ms
    if delay is None:
        delay = config.batch_max_delay_ms
    if size <= 1:
        return None
    why_not = model.stacks_rows(explicit=explicit)
    if why_not:
        logger.debug("model of type %s not batched: %s", model.model_type, why_not)
        return None
    return size, delay


@dataclass(slots=True)
class _Loaded:
    model: LoadedModel
    size_bytes: int
    metadata: v2.ModelMetadataResponse
    resident_delta_bytes: int = 0
    gpu_bytes: int = 0  # GPU memory the load took (runtime/gpu.py), 0 without a GPU
    batching: BatchSettings | None = None  # the model key's batching settings
    batcher: Batcher | None = None  # adaptive batching of this model (made on the loop), None: off


@dataclass(slots=True)
class _PendingLoad:
    """One load in flight. ``abandoned``: its result must be dropped; ``settled``: decided."""

    waiter: asyncio.Future[LoadResult]
    future: asyncio.Future[_Loaded] | None = None
    abandoned: bool = False
    settled: bool = False


class BuiltinRuntime:
    """The ModelRuntime of the built-in loaders. Create and use it on one event loop."""

    def __init__(self, config: RuntimeConfig | None = None, fetcher: Fetcher | None = None) -> None:
        self.config = config or RuntimeConfig()
        self._fetcher = fetcher if fetcher is not None else default_fetcher()
        self._models: dict[str, _Loaded] = {}
        self._pending: dict[str, _PendingLoad] = {}
        self._releasing: dict[str, asyncio.Future[None]] = {}
        # Loads given up on (timeout, cancel, unload) whose thread may still run.
        self._abandoned: dict[str, _PendingLoad] = {}
        self._load_slots = asyncio.Semaphore(self.config.max_loading_concurrency)
        self._load_pool = concurrent.futures.ThreadPoolExecutor(
            self.config.max_loading_concurrency, thread_name_prefix="model-load"
        )
        self._work_pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="model-work")
        self._measure_lock = threading.Lock()
        self._timeout_s = self.config.model_loading_timeout_ms / 1000
        self._closed = False
        # Memory truth: the process' RSS holding no models, plus what importing each framework cost.
        self._baseline_bytes = current_rss_bytes() or 0
        self._imported: set[str] = set()
        self._trim: asyncio.Future[bool] | None = None  # a malloc_trim running in a worker thread
        self._gpu = GpuProbe.open()  # GPU memory accounting: disabled, saying why, without a GPU
        self.trims = 0
        self._batch_stats = BatchStats()  # requests per model call of the batched models

    # -- status and sizes ---------------------------------------------------------------------

    async def runtime_status(self) -> RuntimeStatus:
        c = self.config
        return RuntimeStatus(
            state=RuntimeState.READY,
            capacity_bytes=c.capacity_bytes,
            max_loading_concurrency=c.max_loading_concurrency,
            model_loading_timeout_ms=c.model_loading_timeout_ms,
            default_model_size_bytes=c.default_model_size_bytes,
            runtime_version=c.runtime_version,
            resident_bytes=current_rss_bytes() or 0,
            baseline_bytes=self._baseline_bytes,
            gpu_capacity_bytes=self._gpu.capacity_bytes,
            gpu_status=self._gpu.status,
            batch_size_counts=(batches := self._batch_stats.snapshot()).counts,
            batch_size_total=batches.total,
        )

    async def predict_model_size(self, model_id: str, info: ModelInfo) -> int:
        """A fast, conservative estimate: bytes on disk x ``predict_size_factor`` + a per-model
        overhead, when the files are local (or the model key carries ``disk_size_bytes``); the
        default model size otherwise. Never downloads anything."""
        spec = resolve_model_spec(info.type, info.key)
        disk = spec.disk_size_bytes
        if not disk:
            local = local_path(info.path)
            if local is not None:
                loop = asyncio.get_running_loop()
                disk = await loop.run_in_executor(self._work_pool, disk_size_or_zero, local)
        if not disk:
            return self.config.default_model_size_bytes
        if spec.model_type == STRING:
            return StringModel.OVERHEAD_BYTES + disk
        return math.ceil(disk * self.config.predict_size_factor) + self.config.model_overhead_bytes

    async def model_size(self, model_id: str) -> int:
        return self._get(model_id).size_bytes

    # -- load / unload -------------------------------------------------------------------------

    async def load_model(self, model_id: str, info: ModelInfo) -> LoadResult:
        if self._closed:
            raise Unavailable("the runtime is shutting down")
        loaded = self._models.get(model_id)
        if loaded is not None:
            return LoadResult(loaded.size_bytes, resident_delta_bytes=loaded.resident_delta_bytes,
                          gpu_bytes=loaded.gpu_bytes)
        pending = self._pending.get(model_id)
        if pending is not None:  # the same model asked for again while it loads: share that load
            return await asyncio.shield(pending.waiter)
        pending = _PendingLoad(asyncio.get_running_loop().create_future())
        self._pending[model_id] = pending
        try:
            result = await self._load(model_id, info, pending)
        except BaseException as exc:
            if not pending.waiter.done():
                failure = exc if isinstance(exc, MeshError) else Cancelled(f"load of model '{model_id}' was cancelled")
                pending.waiter.set_exception(failure)
                pending.waiter.exception()  # mark retrieved: nobody else may be waiting
            raise
        finally:
            if self._pending.get(model_id) is pending:
                del self._pending[model_id]
        pending.waiter.set_result(result)
        return result

    async def _load(self, model_id: str, info: ModelInfo, pending: _PendingLoad) -> LoadResult:
        spec = resolve_model_spec(info.type, info.key)
        await self._drain(model_id)  # an earlier copy's thread or file release must finish first
        if model_id in self._abandoned:
            raise ModelLoadFailed(f"an earlier, abandoned load of model '{model_id}' is still running")
        await self._load_slots.acquire()
        if pending.abandoned:  # unloaded while waiting for a slot
            self._load_slots.release()
            raise Cancelled(f"load of model '{model_id}' was cancelled by an unload")
        try:
            cfut = self._load_pool.submit(self._load_blocking, model_id, info, spec, pending)
        except BaseException:
            self._load_slots.release()
            raise
        fut = asyncio.wrap_future(cfut)
        pending.future = fut
        fut.add_done_callback(lambda f: self._on_thread_done(model_id, pending, f))
        try:
            async with asyncio.timeout(self._timeout_s):
                loaded = await asyncio.shield(fut)
        except TimeoutError as exc:
            self._abandon(model_id, pending)
            raise DeadlineExceeded(
                f"loading model '{model_id}' timed out after {self.config.model_loading_timeout_ms} ms"
            ) from exc
        except asyncio.CancelledError:
            self._abandon(model_id, pending)
            raise
        if pending.abandoned:  # an unload came in while the thread was finishing
            self._abandon(model_id, pending)
            raise Cancelled(f"load of model '{model_id}' was cancelled by an unload")
        pending.settled = True
        if loaded.size_bytes > self.config.capacity_bytes:
            self._dispose(model_id, loaded)
            raise CapacityExceeded(
                f"model '{model_id}' needs {loaded.size_bytes} bytes, more than the runtime's whole "
                f"capacity of {self.config.capacity_bytes} bytes"
            )
        loaded.batcher = self._batcher(model_id, loaded)
        self._models[model_id] = loaded
        logger.info("loaded model %s (%s, %d bytes%s)", model_id, loaded.model.model_type, loaded.size_bytes,
                    f", batches of up to {loaded.batcher.max_batch_size}" if loaded.batcher else "")
        return LoadResult(loaded.size_bytes, resident_delta_bytes=loaded.resident_delta_bytes,
                          gpu_bytes=loaded.gpu_bytes)

    def _load_blocking(self, model_id: str, info: ModelInfo, spec: ModelSpec, pending: _PendingLoad) -> _Loaded:
        """Fetch, deserialize, warm up and measure one model. Runs in a load thread."""
        local = self._fetcher.fetch(model_id, info.path, info.key)
        try:
            if pending.abandoned:
                raise Cancelled(f"load of model '{model_id}' was cancelled")
            model_type = spec.model_type or detect_model_type(local)
            model_file = find_model_file(local, model_type)
            disk = disk_size_bytes(local)
            self._import_frameworks(model_type)
            with self._measure_lock:
                before, gpu_before = current_rss_bytes(), self._gpu.used_bytes()
                model = load_model_file(model_type, model_file, model_id)
                model.warm_up()
                if self.config.release_memory:  # what deserializing freed is not the model's: give it back first
                    release_free_memory()
                after, gpu_bytes = current_rss_bytes(), max(0, self._gpu.used_bytes() - gpu_before)
            size = self._measured_size(model, disk, before, after)
            # No RSS growth for models sized by computation: page-granular growth says nothing of them.
            measured = before is not None and after is not None and model.fixed_size_bytes() is None
            delta = max(0, after - before) if measured else 0  # type: ignore[operator]
            return _Loaded(model, size, metadata_of(model_id, model), delta, gpu_bytes, spec.batching)
        except BaseException as exc:
            self._release_quietly(model_id)
            if isinstance(exc, MeshError) or not isinstance(exc, Exception):
                raise
            raise ModelLoadFailed(f"cannot load model '{model_id}': {type(exc).__name__}: {exc}") from exc

    def _batcher(self, model_id: str, loaded: _Loaded) -> Batcher | None:
        plan = batch_plan(loaded.model, loaded.batching, self.config)
        if plan is None:
            return None
        size, delay_ms = plan
        return Batcher(model_id, loaded.model, max_batch_size=size, max_batch_delay_ms=delay_ms,
                       executor=self._work_pool, inline_max_elements=self.config.inline_infer_max_elements,
                       stats=self._batch_stats)

    def batch_stats(self) -> BatchSnapshot:
        """Batch sizes so far (requests per model call of the batched models): the
        ``kserve_mesh_batch_size`` histogram."""
        return self._batch_stats.snapshot()

    def _import_frameworks(self, model_type: str) -> None:
        """Import a model type's libraries before a load is measured; the RSS they cost the first
        time is added to the baseline (memory the process keeps that no model accounts for)."""
        if model_type in self._imported:
            return
        with self._measure_lock:
            if model_type in self._imported:
                return
            before = current_rss_bytes()
            for module in _FRAMEWORK_MODULES.get(model_type, ()):
                importlib.import_module(module)
            framework = FRAMEWORKS.get(model_type)
            for module in framework.modules if framework is not None else ():
                import_framework(model_type, module)  # a missing one names the extra to install
            after = current_rss_bytes()
            if before is not None and after is not None:
                self._baseline_bytes += max(0, after - before)
            self._imported.add(model_type)

    def _measured_size(self, model: LoadedModel, disk: int, before: int | None, after: int | None) -> int:
        """The size to report for a loaded model.

        Measured: the growth of the process RSS across deserialization and a warm-up prediction,
        taken under a lock so two loads never measure each other. RSS misses memory the allocator
        reuses (freed by an earlier unload) and counts memory that other threads allocate at the
        same time, so the measure alone can be too low or a little high. Too low is what hurts
        (the mesh overfills the process and the kernel kills it), so the report is the larger of
        the measure and bytes on disk x ``floor_size_factor`` (what ModelMesh's adapters
        reported). Models far smaller than a memory page (the string model) report a computed
        size instead: a page-granular RSS delta says nothing about them.
        """
        fixed = model.fixed_size_bytes()
        if fixed is not None:
            return fixed
        floor = math.ceil(disk * self.config.floor_size_factor)
        delta = after - before if before is not None and after is not None else 0
        return max(delta, floor, 1)

    def _on_thread_done(self, model_id: str, pending: _PendingLoad, fut: asyncio.Future[_Loaded]) -> None:
        self._load_slots.release()
        if pending.abandoned:
            self._settle_abandoned(model_id, pending)

    def _abandon(self, model_id: str, pending: _PendingLoad) -> None:
        pending.abandoned = True
        if not pending.settled:
            self._abandoned[model_id] = pending
        self._settle_abandoned(model_id, pending)

    def _settle_abandoned(self, model_id: str, pending: _PendingLoad) -> None:
        """Drop what an abandoned load produced, exactly once, once its thread has finished."""
        fut = pending.future
        if pending.settled or (fut is not None and not fut.done()):
            return
        pending.settled = True
        if self._abandoned.get(model_id) is pending:
            del self._abandoned[model_id]
        if fut is None or fut.cancelled() or fut.exception() is not None:
            return  # no thread ran, or it failed and released its files itself
        self._dispose(model_id, fut.result())

    async def _drain(self, model_id: str) -> None:
        """Wait until an abandoned load of ``model_id`` has ended and its files are released."""
        old = self._abandoned.get(model_id)
        if old is not None:
            if old.future is not None and not old.future.done():
                await asyncio.wait({old.future}, timeout=self._timeout_s)
            self._settle_abandoned(model_id, old)
        releasing = self._releasing.get(model_id)
        if releasing is not None:
            await asyncio.shield(releasing)

    def _dispose(self, model_id: str, loaded: _Loaded) -> asyncio.Future[None]:
        if loaded.batcher is not None:
            loaded.batcher.close()
        loaded.model.close()
        fut = asyncio.get_running_loop().run_in_executor(self._work_pool, self._release_quietly, model_id)
        self._releasing[model_id] = fut

        def _forget(done: asyncio.Future[None]) -> None:
            if self._releasing.get(model_id) is done:
                del self._releasing[model_id]

        fut.add_done_callback(_forget)
        return fut

    def _release_quietly(self, model_id: str) -> None:
        try:
            self._fetcher.release(model_id)
        except Exception as exc:  # noqa: BLE001 - a leftover cache dir must not fail an unload
            logger.warning("could not release the files of model %s: %s", model_id, exc)

    async def unload_model(self, model_id: str) -> None:
        """Unload a model (or abandon its load); returns once its files are released."""
        pending = self._pending.get(model_id)
        if pending is not None:
            self._abandon(model_id, pending)
        loaded = self._models.pop(model_id, None)
        if loaded is not None:
            self._dispose(model_id, loaded)
            logger.info("unloaded model %s", model_id)
            loaded = True  # type: ignore[assignment]  # drop the model now: its memory is free before the trim
        await self._drain(model_id)
        if self.config.release_memory and (loaded is not None or pending is not None):
            await self._release_memory()

    async def _release_memory(self) -> None:
        """Return the allocator's free memory to the OS after an unload (``release_free_memory``).
        One trim at a time: unloads that end while one runs share the next."""
        running = self._trim
        if running is not None and not running.done():
            await asyncio.shield(running)  # it may have started before this model's memory was freed
        if self._trim is running or self._trim is None or self._trim.done():
            self._trim = asyncio.get_running_loop().run_in_executor(self._work_pool, release_free_memory)
            self.trims += 1
        await asyncio.shield(self._trim)

    # -- inference -----------------------------------------------------------------------------

    async def infer(self, request: v2.ModelInferRequest, *, timeout: float | None = None) -> v2.ModelInferResponse:
        model_id = request.model_name
        loaded = self._get(model_id)
        feed = validate_inputs(model_id, loaded.model, declared_datatypes(request), tensors.decode_inputs(request))
        outputs = await self._outputs(model_id, loaded, feed, timeout)
        return tensors.encode_response(
            model_id,
            outputs,
            model_version=request.model_version,
            request_id=request.id,
            raw=len(request.raw_input_contents) > 0,
            requested=[o.name for o in request.outputs] or None,
        )

    async def infer_arrays(self, model_id: str, request: ArrayRequest, *,
                           timeout: float | None = None) -> Mapping[str, Any]:
        """``infer`` for a REST request decoded straight to arrays (``spi.ArrayRuntime``)."""
        loaded = self._get(model_id)
        feed = validate_inputs(model_id, loaded.model, request.datatypes, request.arrays)
        outputs = await self._outputs(model_id, loaded, feed, timeout)
        return tensors.select_outputs(model_id, outputs, request.outputs)

    async def infer_rest(self, model_id: str, body: bytes, header_length: int | None, *,
                         timeout: float | None = None) -> tuple[bytes, dict[str, str]]:
        """``infer`` for a V2 REST body as it came (``spi.RestRuntime``: this runtime in its own
        process, reached over the local link): decoded straight to arrays, the answer rendered."""
        request = parse_infer_arrays(body, header_length)
        outputs = await self.infer_arrays(model_id, request, timeout=timeout)
        return render_arrays_response(model_id, outputs, request)

    async def _outputs(self, model_id: str, loaded: _Loaded, feed: dict[str, np.ndarray],
                       timeout: float | None) -> Mapping[str, Any]:
        """The model's answer to ``feed``: batched, inline (small and cheap), or in a worker thread."""
        if loaded.batcher is not None:
            return await loaded.batcher.infer(feed, timeout)
        if sum(a.size for a in feed.values()) <= self.config.inline_infer_max_elements and \
                loaded.model.predict_inline:
            return _predict(model_id, loaded.model, feed)
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._work_pool, _predict, model_id, loaded.model, feed)
        try:
            return await asyncio.wait_for(work, timeout)
        except TimeoutError:  # the predict finishes in its thread; the caller is answered now
            raise DeadlineExceeded(f"model '{model_id}' did not answer within {timeout:g} s") from None

    async def infer_stream(self, request: v2.ModelInferRequest, *,
                           timeout: float | None = None) -> AsyncIterator[v2.ModelInferResponse]:
        """Every answer a model that streams gives (``predict_stream`` in a worker thread, at most
        ``streaming.STREAM_AHEAD`` answers ahead of the caller), each as it comes; a model that does not stream
        answers once, as ``infer``. Closing the iterator (the client went away) stops the model
        before its next answer and closes its generator."""
        model_id = request.model_name
        loaded = self._get(model_id)
        if not loaded.model.streams:
            yield await self.infer(request, timeout=timeout)
            return
        feed = validate_inputs(model_id, loaded.model, declared_datatypes(request), tensors.decode_inputs(request))
        async with contextlib.aclosing(stream_answers(model_id, loaded.model, feed, self._work_pool,
                                                      timeout or self._timeout_s)) as answers:
            async for outputs in answers:
                yield tensors.encode_response(model_id, outputs, model_version=request.model_version,
                                              request_id=request.id, raw=len(request.raw_input_contents) > 0,
                                              requested=[o.name for o in request.outputs] or None)

    async def model_metadata(self, model_id: str) -> v2.ModelMetadataResponse:
        return self._get(model_id).metadata

    def is_loaded(self, model_id: str) -> bool:
        return model_id in self._models

    def loaded_models(self) -> dict[str, int]:
        """Loaded model ids and their reported sizes."""
        return {mid: m.size_bytes for mid, m in self._models.items()}

    def _get(self, model_id: str) -> _Loaded:
        loaded = self._models.get(model_id)
        if loaded is None:
            raise ModelNotFound(model_id, f"model '{model_id}' is not loaded in this runtime")
        return loaded

    async def close(self) -> None:
        """Abandon loads in flight, drop every model, release files, stop the worker threads."""
        if self._closed:
            return
        self._closed = True
        for model_id, pending in list(self._pending.items()):
            self._abandon(model_id, pending)
        for model_id in list(self._models):
            self._dispose(model_id, self._models.pop(model_id))
        if self._releasing:
            await asyncio.wait(set(self._releasing.values()), timeout=10)
        self._load_pool.shutdown(wait=False, cancel_futures=True)
        self._work_pool.shutdown(wait=False, cancel_futures=True)
