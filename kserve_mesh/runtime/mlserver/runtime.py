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

What is not MLServer's own (a load shared by all who ask for the model, one cleanup at a time per
model, the size measured across the load, ``close``) is ``runtime.adapters.loads``, shared with
the Triton adapter; this module supplies its hooks.

Not handled: a dead MLServer process is reported (``runtimeStatus`` FAILING, calls answer
``Unavailable``) but not restarted; the supervisor (Kubernetes, or the operator) restarts the pod.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from kserve_mesh.core.errors import ModelLoadFailed
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.protocol import tensors, v2
from kserve_mesh.runtime.adapters.loads import ModelLoads, Owned, default_fetcher
from kserve_mesh.runtime.adapters.recycle import Gate
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
from kserve_mesh.runtime.mlserver.recycle import Recycling
from kserve_mesh.runtime.mlserver.sizing import predicted_size
from kserve_mesh.runtime.spi import RuntimeStatus

logger = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class _Loaded:
    size_bytes: int
    model_format: str


@dataclass(slots=True)
class _Owned(Owned):
    """Also where the process came from and where it works: a recycle starts a fresh one the same way."""

    venv: Path | None = None
    work_dir: Path | None = None


class MLServerRuntime(Recycling, ModelLoads):
    """The ModelRuntime of an MLServer process. Create it with ``start`` or ``attach``."""

    server = "MLServer"
    log = logger

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
        venv: Path | None = None,
        work_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.endpoint = endpoint
        self.formats = formats
        self.version = version
        self._fetcher = fetcher
        self._owned = _Owned(process, list(owned_dirs or ()), venv, work_dir)
        self._init_loads()
        self._client = MLServerClient(endpoint, config, process)
        self._gate = Gate("MLServer")  # closed while the MLServer process is recycled (recycle.py)
        self._recycling: asyncio.Task[None] | None = None
        self._last_recycle = float("-inf")
        self.recycles = 0

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
        runtime = cls(process.endpoint, config, fetcher or default_fetcher(work_dir / "cache"),
                      installed_formats(venv), process=process, owned_dirs=owned, venv=venv, work_dir=work_dir)
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
        runtime = cls(endpoint, config, fetcher or default_fetcher(cache), formats or frozenset(IMPLEMENTATIONS),
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
        process = self._owned.process
        recycling = self.recycling  # a planned restart: READY (calls wait at the gate), memory unknown
        alive = not self._closed and (recycling or process is None or process.alive())
        resident = (await asyncio.to_thread(self._tree_rss) or 0) if alive and not recycling else 0
        return self._status(alive, resident)

    async def predict_model_size(self, model_id: str, info: ModelInfo) -> int:
        """Bytes on disk x ``predict_size_factor`` + overhead (``sizing.predicted_size``). No download."""
        return await predicted_size(info, self.config)

    # -- load / unload: ModelLoads' hooks ----------------------------------------------------------

    def _entered(self, timeout_s: float) -> AbstractAsyncContextManager[None]:
        return self._gate.enter(timeout_s)

    def _model_format(self, model_id: str, info: ModelInfo) -> str:
        spec = resolve_model_spec(info.type, info.key)
        if spec.model_type:
            self._check_format(model_id, spec.model_type)
        return spec.model_type

    async def _prepare(self, model_id: str, info: ModelInfo, model_format: str) -> tuple[str, int]:
        local = await asyncio.to_thread(self._fetcher.fetch, model_id, info.path, info.key)
        model_format, model_file, disk = await asyncio.to_thread(_inspect, local, model_format)
        self._check_format(model_id, model_format)
        await asyncio.to_thread(write_model_settings, self.endpoint.repository, model_id, model_format, model_file)
        return model_format, disk

    async def _ask_load(self, model_id: str, prepared: str) -> None:
        await self._client.repository("load", model_id)

    def _commit(self, model_id: str, prepared: str, size: int) -> None:
        self._models[model_id] = _Loaded(size, prepared)
        logger.info("MLServer loaded model %s (%s, %d bytes)", model_id, prepared, size)

    def _check_format(self, model_id: str, model_format: str) -> None:
        if model_format in self.formats:
            return
        known = IMPLEMENTATIONS.get(model_format)
        hint = f" (install {known[1]} into the MLServer venv)" if known else ""
        raise ModelLoadFailed(
            f"model '{model_id}': the MLServer runtime cannot serve model type '{model_format}'{hint}; "
            f"it serves {', '.join(sorted(self.formats)) or 'nothing'}"
        )

    async def _ask_unload(self, model_id: str) -> None:
        await self._client.repository("unload", model_id, missing_ok=True)

    def _remove_layout(self, model_id: str) -> None:
        remove_model_settings(self.endpoint.repository, model_id)

    # -- inference ------------------------------------------------------------------------------

    async def infer(self, request: v2.ModelInferRequest, *, timeout: float | None = None) -> v2.ModelInferResponse:
        model_id = request.model_name
        self._get(model_id)
        tensors.decode_inputs(request)  # InvalidArgument naming the tensor: MLServer would say INTERNAL
        deadline = min(timeout or self.config.infer_timeout_s, self.config.infer_timeout_s)
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with self._gate.enter(deadline):
            self._get(model_id)
            return await self._client.infer(request, max(0.001, deadline - (loop.time() - start)))

    async def model_metadata(self, model_id: str) -> v2.ModelMetadataResponse:
        self._get(model_id)
        async with self._gate.enter(self.config.call_timeout_s):
            return await self._client.model_metadata(model_id)

    # -- shutdown -------------------------------------------------------------------------------

    async def _stop_background(self) -> None:
        if self._recycling is not None:
            self._recycling.cancel()
            await asyncio.gather(self._recycling, return_exceptions=True)


def _inspect(local: Path, model_format: str) -> tuple[str, Path, int]:
    """(format, the model file MLServer is to read, bytes on disk) of fetched files. Blocking."""
    model_format = model_format or detect_model_type(local)
    return model_format, find_model_file(local, model_format), disk_size_bytes(local)
