"""``MLServerClient``: the wire to one MLServer process, every failure a core error.

Two channels: MLServer's repository API over REST (``POST /v2/repository/models/{name}/load`` and
``/unload``, ``GET /v2`` for its version) and V2 inference over gRPC (``ModelInfer``,
``ModelMetadata``, with ``model_name`` = the concrete id). MLServer runs in another process, so
its protos never meet ours. Failures become core errors (``runtime.grpc_errors``) with MLServer's
own message; when the process this runtime started has exited, the error says so and shows the end
of its log. ``MLServerRuntime`` decides what to load and when; this module only talks.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

import grpc
import httpx

from kserve_mesh.core.errors import DeadlineExceeded, InternalError, MeshError, ModelLoadFailed, Unavailable
from kserve_mesh.protocol import v2
from kserve_mesh.runtime.adapters.process import grpc_ready
from kserve_mesh.runtime.grpc_errors import error_of
from kserve_mesh.runtime.mlserver.config import MLServerConfig
from kserve_mesh.runtime.mlserver.model_settings import remove_model_settings, write_model_settings
from kserve_mesh.runtime.mlserver.process import MLServerEndpoint, MLServerProcess

logger = logging.getLogger("kserve_mesh.runtime.mlserver.runtime")  # the runtime's log, as before the split

PRIME_PREFIX = "__kserve-mesh-prime-"


class MLServerClient:
    """REST and gRPC clients of the MLServer at ``endpoint``; ``process``: the one this runtime
    started (None when attached), whose exit the errors report."""

    def __init__(self, endpoint: MLServerEndpoint, config: MLServerConfig,
                 process: MLServerProcess | None = None) -> None:
        self.endpoint = endpoint
        self.config = config
        self.process = process
        self._load_timeout_s = config.model_loading_timeout_ms / 1000
        self._http = httpx.AsyncClient(base_url=endpoint.http_url, timeout=config.call_timeout_s)
        options = [("grpc.max_send_message_length", config.max_message_bytes),
                   ("grpc.max_receive_message_length", config.max_message_bytes)]
        self._channel = grpc.aio.insecure_channel(endpoint.grpc_target, options=options)
        self._infer = self._channel.unary_unary(
            v2.method("ModelInfer"), request_serializer=v2.ModelInferRequest.SerializeToString,
            response_deserializer=v2.ModelInferResponse.FromString)
        self._metadata = self._channel.unary_unary(
            v2.method("ModelMetadata"), request_serializer=v2.ModelMetadataRequest.SerializeToString,
            response_deserializer=v2.ModelMetadataResponse.FromString)

    async def wait_ready(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while not await grpc_ready(self.endpoint.grpc_target):
            if loop.time() + 0.2 > end:
                raise Unavailable(f"MLServer at {self.endpoint.grpc_target} is not ready after {timeout_s:g} s")
            await asyncio.sleep(0.2)

    async def prepare(self, formats: frozenset[str]) -> str:
        """Prime every format of ``formats`` (see :meth:`prime`); returns MLServer's version."""
        version = await self.version()
        for fmt in sorted(formats):
            await self.prime(fmt)
        return version

    async def version(self) -> str:
        """MLServer's name and version (``mlserver-1.7.1``); ``mlserver`` when it cannot be read."""
        try:
            resp = await self._http.get("/v2")
            doc = resp.json()
            return f"{doc.get('name', 'mlserver')}-{doc.get('version', '')}".rstrip("-")
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning("cannot read MLServer's version: %s", exc)
            return "mlserver"

    async def prime(self, fmt: str) -> None:
        """Make MLServer import ``fmt``'s implementation: parse settings of a model that never loads."""
        name = f"{PRIME_PREFIX}{fmt}"
        missing = self.endpoint.repository / ".prime-nothing-here"
        await asyncio.to_thread(write_model_settings, self.endpoint.repository, name, fmt, missing)
        try:
            resp = await self._http.post(f"/v2/repository/models/{name}/load")
            logger.debug("primed MLServer for %s (%d)", fmt, resp.status_code)
        except httpx.HTTPError as exc:
            logger.warning("could not prime MLServer for %s: %s", fmt, exc)
        finally:
            await asyncio.to_thread(remove_model_settings, self.endpoint.repository, name)

    async def repository(self, action: str, model_id: str, *, missing_ok: bool = False) -> None:
        """POST ``/v2/repository/models/{id}/{action}``; MLServer's error text in the core error."""
        url = f"/v2/repository/models/{quote(model_id, safe='')}/{action}"
        timeout = self._load_timeout_s + 5 if action == "load" else self.config.call_timeout_s
        try:
            resp = await self._http.post(url, timeout=timeout)
        except httpx.TimeoutException as exc:
            raise DeadlineExceeded(f"MLServer did not answer {action} of model '{model_id}' in {timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"MLServer at {self.endpoint.http_url} cannot be reached for {action} of model '{model_id}': "
                f"{type(exc).__name__}: {exc}{self.exit_note()}"
            ) from exc
        if resp.status_code == 200 or (missing_ok and resp.status_code == 404):
            return
        text = _error_text(resp)
        if action == "load":
            raise ModelLoadFailed(f"MLServer could not load model '{model_id}' (HTTP {resp.status_code}): {text}")
        raise InternalError(f"MLServer could not {action} model '{model_id}' (HTTP {resp.status_code}): {text}")

    async def infer(self, request: v2.ModelInferRequest, timeout: float) -> v2.ModelInferResponse:
        try:
            response = await self._infer(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._grpc_error(exc, "ModelInfer", request.model_name) from exc
        if response.raw_output_contents:
            _drop_empty_contents(response)
        return response

    async def model_metadata(self, model_id: str) -> v2.ModelMetadataResponse:
        try:
            return await self._metadata(v2.ModelMetadataRequest(name=model_id), timeout=self.config.call_timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise self._grpc_error(exc, "ModelMetadata", model_id) from exc

    def _grpc_error(self, exc: grpc.aio.AioRpcError, method: str, model_id: str) -> MeshError:
        code, details = exc.code(), exc.details() or ""
        if code == grpc.StatusCode.INTERNAL:
            return InternalError(f"MLServer failed to run {method} on model '{model_id}': {details}")
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
            details = f"MLServer at {self.endpoint.grpc_target}: {method} failed ({code.name}): {details}"
            details += self.exit_note()
        else:
            details = f"MLServer: {details}"
        return error_of(code, details, method=method, model_id=model_id)

    def exit_note(self) -> str:
        process = self.process
        if process is not None and not process.alive():
            return f" (MLServer exited with status {process.proc.returncode}; its log ends:\n{process.log_tail()})"
        return ""

    async def close(self) -> None:
        await self._channel.close()
        await self._http.aclose()


def _drop_empty_contents(response: v2.ModelInferResponse) -> None:
    """MLServer answers a raw request with raw outputs *and* an empty ``contents`` on each output;
    V2 says raw or typed, never both, and our decoder holds it to that. Drop the empty ones."""
    for output in response.outputs:
        if output.HasField("contents") and output.contents.ByteSize() == 0:
            output.ClearField("contents")


def _error_text(resp: httpx.Response) -> str:
    try:
        doc = resp.json()
    except ValueError:
        return resp.text.strip()[:500] or resp.reason_phrase
    if isinstance(doc, dict) and doc.get("error"):
        return str(doc["error"])
    return str(doc)[:500]
