"""``TritonRuntime``: the ModelRuntime SPI in front of a Triton Inference Server, as ModelMesh's
triton-adapter.

Loading a model: fetch its files (``kserve_mesh.storage``, in a thread), lay them out in Triton's
model repository under the model's Triton name (``layout.py``: config.pbtxt kept with its name
rewritten, or written with the backend of the model type; ONNX through the Python backend where
Triton has no onnxruntime backend), and ask Triton to load it (``RepositoryModelLoad``, explicit
model control). The reported size is measured: the growth of the resident memory of the Triton
process and its children (the Python backend runs each model instance in a stub process) across
the load, never less than bytes on disk x ``floor_size_factor``. Triton's per-model memory
statistics are empty for the Python backend (checked on 2.51), so RSS is what measures. Loads are
measured one at a time (RSS is process-wide); fetches run in parallel up to
``max_loading_concurrency``.

Unloading asks Triton to unload (``RepositoryModelUnload``; its index then says UNAVAILABLE), then
deletes the model's folder and the fetched files. Inference and metadata are forwarded as V2 gRPC
with the Triton name, and answered with the mesh's model id.

What is not Triton's own (a load shared by all who ask for the model, one cleanup at a time per
model, the size measured across the load, ``close``) is ``runtime.adapters.loads``, shared with the
MLServer adapter; this module supplies its hooks.

A Triton this runtime started is watched (``supervise.py``): when it dies, ``runtimeStatus`` says
FAILING at once, it is started again (bounded backoff) and the models it held are loaded again
before the runtime is READY; past ``recycle_bytes`` of memory no model accounts for it is restarted
the same way, on purpose (issue 16).
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from kserve_mesh.core.errors import Unavailable
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.protocol import v2
from kserve_mesh.runtime.adapters.loads import ModelLoads, Owned, default_fetcher
from kserve_mesh.runtime.adapters.process import grpc_ready
from kserve_mesh.runtime.builtin.fetch import Fetcher
from kserve_mesh.runtime.builtin.sizing import disk_size_bytes, disk_size_or_zero, local_path
from kserve_mesh.runtime.spi import RuntimeStatus
from kserve_mesh.runtime.triton import layout
from kserve_mesh.runtime.triton.client import TritonClient
from kserve_mesh.runtime.triton.config import PythonEnv, TritonConfig, TritonDist, find_triton, probe_python
from kserve_mesh.runtime.triton.process import TritonEndpoint, TritonProcess
from kserve_mesh.runtime.triton.supervise import Supervised

logger = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class _Loaded:
    size_bytes: int
    name: str  # Triton's name of the model
    backend: str


@dataclass(slots=True)
class _Owned(Owned):
    """Also how to start a fresh Triton."""

    dist: TritonDist | None = None
    python: PythonEnv | None = None
    work_dir: Path | None = None


class TritonRuntime(Supervised, ModelLoads):
    """The ModelRuntime of a Triton process. Create it with ``start`` or ``attach``."""

    server = "Triton"
    log = logger

    def __init__(self, endpoint: TritonEndpoint, config: TritonConfig, fetcher: Fetcher, *,
                 backends: frozenset[str], onnxruntime_in_python: bool, python_env: str,
                 owned: _Owned | None = None, version: str = "") -> None:
        self.config = config
        self.endpoint = endpoint
        self.backends = backends
        self.version = version
        self._onnx_via_python = onnxruntime_in_python
        self._python_env = python_env
        self._fetcher = fetcher
        self._owned = owned or _Owned()
        self._init_loads()
        self._client = TritonClient(endpoint.grpc_target, config, self._owned.process)
        self._init_supervision()

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    async def start(cls, config: TritonConfig | None = None, *, tritonserver: Path | None = None,
                    venv: Path | None = None, backend_python: Path | None = None, work_dir: Path | None = None,
                    fetcher: Fetcher | None = None) -> TritonRuntime:
        """Find Triton (``config.find_triton``), start it and return the runtime in front of it.
        ``work_dir`` holds the model repository, the backends and Triton's log; by default a
        temporary folder deleted by ``close``."""
        config = config or TritonConfig()
        dist, python_exe = find_triton(tritonserver, venv, backend_python)
        python = await asyncio.to_thread(probe_python, python_exe, dist)
        owned = _Owned(dist=dist, python=python)
        if work_dir is None:
            work_dir = Path(tempfile.mkdtemp(prefix="kserve-mesh-triton-"))
            owned.dirs.append(work_dir)
        owned.work_dir = work_dir
        try:
            owned.process = await TritonProcess.start(dist, python, work_dir, timeout_s=config.start_timeout_s,
                                                      exit_timeout_s=config.exit_timeout_s)
        except BaseException:
            for d in owned.dirs:
                shutil.rmtree(d, ignore_errors=True)
            raise
        backends = frozenset(p.name for p in (work_dir / "backends").iterdir() if p.is_dir())
        runtime = cls(owned.process.endpoint, config, fetcher or default_fetcher(work_dir / "cache"),
                      backends=backends, onnxruntime_in_python=python.onnxruntime, python_env=python.where,
                      owned=owned)
        try:
            runtime.version = await runtime._client.version()
            runtime._start_watching()
        except BaseException:
            await runtime.close()
            raise
        return runtime

    @classmethod
    async def attach(cls, endpoint: TritonEndpoint, config: TritonConfig | None = None, *,
                     fetcher: Fetcher | None = None, backends: frozenset[str] = frozenset({layout.PYTHON}),
                     onnxruntime_in_python: bool = False) -> TritonRuntime:
        """Drive a Triton that already runs in explicit model-control mode. Its model repository must
        be ``endpoint.repository`` (a folder both processes see); ``backends``: the backends it has;
        without ``endpoint.pid`` sizes are the disk-size floor only. It is not restarted or recycled."""
        config = config or TritonConfig()
        cache = Path(tempfile.mkdtemp(prefix="kserve-mesh-triton-cache-"))
        runtime = cls(endpoint, config, fetcher or default_fetcher(cache), backends=backends,
                      onnxruntime_in_python=onnxruntime_in_python, python_env="the attached Triton's Python backend",
                      owned=_Owned(dirs=[cache]))
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + config.start_timeout_s
            while not await grpc_ready(endpoint.grpc_target):
                if loop.time() > end:
                    raise Unavailable(f"Triton at {endpoint.grpc_target} is not ready after {config.start_timeout_s:g} s")
                await asyncio.sleep(0.2)
            runtime.version = await runtime._client.version()
        except BaseException:
            await runtime.close()
            raise
        return runtime

    # -- status and sizes -----------------------------------------------------------------------

    def formats(self) -> list[str]:
        """The model types this Triton serves."""
        out = [fmt for fmt, (backend, _f) in layout.BACKENDS.items() if backend in self.backends]
        if layout.ONNX not in out and layout.PYTHON in self.backends and self._onnx_via_python:
            out.append(layout.ONNX)
        return sorted(out) + [layout.NATIVE]

    async def runtime_status(self) -> RuntimeStatus:
        process = self._owned.process
        if self._closed or self.down:
            alive = False
        else:  # a planned recycle: READY (calls wait at the gate), memory unknown
            alive = self.recycling or process is None or process.alive()
        measurable = alive and not self.restarting
        resident = (await asyncio.to_thread(self._tree_rss) or 0) if measurable else 0
        if measurable and not resident and process is not None:
            alive = False  # its /proc entry is gone: it is dying, though not yet reaped
        return self._status(alive, resident)

    async def predict_model_size(self, model_id: str, info: ModelInfo) -> int:
        """Bytes on disk x ``predict_size_factor`` + overhead when the files are local; the default
        model size otherwise. No download."""
        local = local_path(info.path)
        disk = await asyncio.to_thread(disk_size_or_zero, local) if local is not None else 0
        if not disk:
            return self.config.default_model_size_bytes
        return math.ceil(disk * self.config.predict_size_factor) + self.config.model_overhead_bytes

    # -- load / unload: ModelLoads' hooks ----------------------------------------------------------

    def _model_format(self, model_id: str, info: ModelInfo) -> str:
        return layout.model_format(info.type, info.key)

    async def _prepare(self, model_id: str, info: ModelInfo, fmt: str) -> tuple[tuple[str, layout.Plan], int]:
        local = await asyncio.to_thread(self._fetcher.fetch, model_id, info.path, layout.storage_key(info.key))
        fmt = fmt or await asyncio.to_thread(layout.detect_format, local)
        plan = layout.plan_backend(model_id, fmt, local, self.backends, self._onnx_via_python, self._python_env)
        name = layout.triton_name(model_id)
        await asyncio.to_thread(layout.lay_out, local, name, plan, self.endpoint.repository)
        disk = await asyncio.to_thread(disk_size_bytes, local)
        return (name, plan), disk

    async def _ask_load(self, model_id: str, prepared: tuple[str, layout.Plan]) -> None:
        await self._client.load(prepared[0], model_id)

    def _commit(self, model_id: str, prepared: tuple[str, layout.Plan], size: int) -> None:
        name, plan = prepared
        self._models[model_id] = _Loaded(size, name, plan.backend)
        how = "python backend, onnxruntime inside" if plan.onnx_wrapper else f"{plan.backend} backend"
        logger.info("Triton loaded model %s as %s (%s, %d bytes)", model_id, name, how, size)

    async def _ask_unload(self, model_id: str) -> None:
        await self._client.unload(layout.triton_name(model_id), model_id)

    def _remove_layout(self, model_id: str) -> None:
        shutil.rmtree(self.endpoint.repository / layout.triton_name(model_id), True)

    # -- inference ------------------------------------------------------------------------------

    async def infer(self, request: v2.ModelInferRequest, *, timeout: float | None = None) -> v2.ModelInferResponse:
        model_id = request.model_name
        self._get(model_id)
        deadline = min(timeout or self.config.infer_timeout_s, self.config.infer_timeout_s)
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with self._entered(deadline):
            loaded = self._get(model_id)
            request.model_name = loaded.name
            try:
                response = await self._client.infer(request, model_id, max(0.001, deadline - (loop.time() - start)))
            finally:
                request.model_name = model_id
        response.model_name = model_id
        return response

    async def infer_stream(self, request: v2.ModelInferRequest, *,
                           timeout: float | None = None) -> AsyncIterator[v2.ModelInferResponse]:
        """Every response the model sends for ``request`` (Triton's ModelStreamInfer: several from a
        decoupled model, one from any other), answered with the mesh's model id."""
        model_id = request.model_name
        self._get(model_id)
        deadline = min(timeout or self.config.infer_timeout_s, self.config.infer_timeout_s)
        async with self._entered(deadline):
            request.model_name = self._get(model_id).name
            try:
                async for response in self._client.infer_stream(request, model_id, deadline):
                    response.model_name = model_id
                    yield response
            finally:
                request.model_name = model_id

    async def model_metadata(self, model_id: str) -> v2.ModelMetadataResponse:
        self._get(model_id)
        async with self._entered(self.config.call_timeout_s):
            response = await self._client.model_metadata(self._get(model_id).name, model_id)
        response.name = model_id
        return response

    @asynccontextmanager
    async def _entered(self, timeout_s: float) -> AsyncIterator[None]:
        """Pass the gate (closed while Triton restarts), with a message that says why a call waited."""
        gate = self._gate.enter(timeout_s)
        try:
            await gate.__aenter__()
        except Unavailable:
            raise Unavailable(f"Triton is restarting ({self.restart_reason}) and was not back within "
                              f"{timeout_s:g} s") from None
        try:
            yield
        finally:
            await gate.__aexit__(None, None, None)

    # -- shutdown -------------------------------------------------------------------------------

    async def _stop_background(self) -> None:
        await self._stop_supervision()
