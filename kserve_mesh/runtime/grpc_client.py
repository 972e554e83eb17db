"""The ModelRuntime port over gRPC: drives a runtime running as its own process.

It speaks ``mmesh.ModelRuntime`` for management and ``inference.GRPCInferenceService`` for
inference, so it works against ``kserve_mesh.runtime.server`` or any ModelMesh-compatible runtime
adapter. gRPC failures come back as core errors (``grpc_errors``); every call has a deadline
(loads: the runtime's model loading timeout plus a margin). Inference is the hot path: one
channel, multicallables built once, and ``infer_bytes`` for callers that forward a request as
opaque bytes without decoding it.

A runtime child that died is restarted by its supervisor (``mesh/runtime_process.py``), which then
calls ``reconnect``: a fresh channel, so no reconnect backoff of the dead one delays the new child.
The channel also retries a lost connection after at most ``MAX_RECONNECT_BACKOFF_MS`` (gRPC's
default grows to two minutes), for runtimes that come back on their own (``--runtime remote``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from kserve_mesh.core.errors import MeshError, Unavailable
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.protocol import v2
from kserve_mesh.protos import model_runtime_pb2 as pb
from kserve_mesh.protos import v2_repository_pb2 as repo_pb
from kserve_mesh.runtime.grpc_errors import ERROR_KIND_KEY, error_of
from kserve_mesh.runtime.spi import LoadResult, RuntimeState, RuntimeStatus

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_RUNTIME = "/mmesh.ModelRuntime/"
# Extra time a load may take beyond the runtime's own loading timeout (queueing, transfer).
LOAD_DEADLINE_MARGIN_S = 10.0
DEFAULT_LOAD_TIMEOUT_S = 90.0
MAX_RECONNECT_BACKOFF_MS = 2_000
# How long calls still running on a replaced channel may finish before it is closed (closing a
# grpc.aio channel cancels its calls, and their callers see CancelledError).
OLD_CHANNEL_GRACE_S = 30.0


class GrpcRuntimeClient:
    """A ModelRuntime reached over gRPC at ``target`` (``host:port`` or ``unix:/path``).

    ``deadline_s`` bounds management calls, ``infer_deadline_s`` inference (unless a call passes
    its own ``timeout``), ``load_timeout_s`` loads (default: the ``modelLoadingTimeoutMs`` of the
    last ``runtime_status`` plus a margin, else 90 s plus the margin).
    Create it inside a running event loop.
    """

    def __init__(
        self,
        target: str,
        *,
        deadline_s: float = 30.0,
        infer_deadline_s: float = 30.0,
        load_timeout_s: float | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        options: list[tuple[str, Any]] | None = None,
    ) -> None:
        self.target = target
        self.deadline_s = deadline_s
        self.infer_deadline_s = infer_deadline_s
        self._load_timeout_s = load_timeout_s
        self._status_timeout_s: float | None = None
        self._options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
            *(options or []),
        ]
        self._closing: dict[asyncio.Task[None], grpc.aio.Channel] = {}  # old channels being closed
        self._open(target)

    def _open(self, target: str) -> None:
        """A channel to ``target`` and the multicallables on it."""
        self.target = target
        self._channel = grpc.aio.insecure_channel(target, options=self._options)
        call = self._channel.unary_unary
        self._load = call(_RUNTIME + "loadModel", request_serializer=pb.LoadModelRequest.SerializeToString,
                          response_deserializer=pb.LoadModelResponse.FromString)
        self._unload = call(_RUNTIME + "unloadModel", request_serializer=pb.UnloadModelRequest.SerializeToString,
                            response_deserializer=pb.UnloadModelResponse.FromString)
        self._predict_size = call(_RUNTIME + "predictModelSize",
                                  request_serializer=pb.PredictModelSizeRequest.SerializeToString,
                                  response_deserializer=pb.PredictModelSizeResponse.FromString)
        self._size = call(_RUNTIME + "modelSize", request_serializer=pb.ModelSizeRequest.SerializeToString,
                          response_deserializer=pb.ModelSizeResponse.FromString)
        self._status = call(_RUNTIME + "runtimeStatus", request_serializer=pb.RuntimeStatusRequest.SerializeToString,
                            response_deserializer=pb.RuntimeStatusResponse.FromString)
        self._infer = call(v2.method("ModelInfer"), request_serializer=v2.ModelInferRequest.SerializeToString,
                           response_deserializer=v2.ModelInferResponse.FromString)
        self._infer_raw = call(v2.method("ModelInfer"))  # bytes in, bytes out
        self._stream = self._channel.stream_stream(
            v2.method("ModelStreamInfer"), request_serializer=v2.ModelInferRequest.SerializeToString,
            response_deserializer=repo_pb.ModelStreamInferResponse.FromString)
        self._metadata = call(v2.method("ModelMetadata"), request_serializer=v2.ModelMetadataRequest.SerializeToString,
                              response_deserializer=v2.ModelMetadataResponse.FromString)
        self._ready = call(v2.method("ModelReady"), request_serializer=v2.ModelReadyRequest.SerializeToString,
                           response_deserializer=v2.ModelReadyResponse.FromString)
        self._server_ready = call(v2.method("ServerReady"),
                                  request_serializer=v2.ServerReadyRequest.SerializeToString,
                                  response_deserializer=v2.ServerReadyResponse.FromString)

    # -- ModelRuntime -------------------------------------------------------------------------

    async def runtime_status(self, *, timeout: float | None = None) -> RuntimeStatus:
        """runtimeStatus, with ``timeout`` (default ``deadline_s``) as its deadline."""
        resp = await self._call("runtimeStatus", self._status, pb.RuntimeStatusRequest(), timeout or self.deadline_s)
        if resp.modelLoadingTimeoutMs:
            self._status_timeout_s = resp.modelLoadingTimeoutMs / 1000
        state = RuntimeState(resp.status) if resp.status in (0, 1, 2) else RuntimeState.FAILING
        return RuntimeStatus(
            state=state,
            capacity_bytes=resp.capacityInBytes,
            max_loading_concurrency=resp.maxLoadingConcurrency,
            model_loading_timeout_ms=resp.modelLoadingTimeoutMs,
            default_model_size_bytes=resp.defaultModelSizeInBytes,
            runtime_version=resp.runtimeVersion,
            limit_model_concurrency=resp.limitModelConcurrency,
            resident_bytes=resp.residentBytes,
            baseline_bytes=resp.baselineBytes,
            gpu_capacity_bytes=resp.gpuCapacityBytes,
            gpu_status=resp.gpuStatus,
            batch_size_counts=tuple(resp.batchSizeCounts),
            batch_size_total=resp.batchSizeTotal,
        )

    async def load_model(self, model_id: str, info: ModelInfo) -> LoadResult:
        req = pb.LoadModelRequest(modelId=model_id, modelType=info.type, modelPath=info.path, modelKey=info.key)
        base = self._load_timeout_s or self._status_timeout_s or DEFAULT_LOAD_TIMEOUT_S
        resp = await self._call("loadModel", self._load, req, base + LOAD_DEADLINE_MARGIN_S, model_id)
        return LoadResult(size_bytes=resp.sizeInBytes, max_concurrency=resp.maxConcurrency,
                          resident_delta_bytes=resp.residentDeltaBytes, gpu_bytes=resp.gpuBytes)

    async def unload_model(self, model_id: str) -> None:
        await self._call("unloadModel", self._unload, pb.UnloadModelRequest(modelId=model_id), self.deadline_s,
                         model_id)

    async def predict_model_size(self, model_id: str, info: ModelInfo) -> int:
        """The runtime's estimate, or 0 when it does not implement predictModelSize."""
        req = pb.PredictModelSizeRequest(modelId=model_id, modelType=info.type, modelPath=info.path,
                                         modelKey=info.key)
        try:
            resp = await self._predict_size(req, timeout=self.deadline_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return 0
            raise self._error(exc, "predictModelSize", model_id) from exc
        return int(resp.sizeInBytes)

    async def model_size(self, model_id: str) -> int:
        resp = await self._call("modelSize", self._size, pb.ModelSizeRequest(modelId=model_id), self.deadline_s,
                                model_id)
        return int(resp.sizeInBytes)

    async def infer(self, request: v2.ModelInferRequest, *, timeout: float | None = None) -> v2.ModelInferResponse:
        try:
            return await self._infer(request, timeout=timeout or self.infer_deadline_s)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, "ModelInfer", request.model_name) from exc

    async def infer_stream(self, request: v2.ModelInferRequest, *,
                           timeout: float | None = None) -> AsyncIterator[v2.ModelInferResponse]:
        """Every response the runtime's model streams for ``request`` (its ModelStreamInfer, one
        request per call); a runtime without ModelStreamInfer answers once, through ModelInfer."""
        call = self._stream(iter((request,)), timeout=timeout or self.infer_deadline_s)
        answered = False
        try:
            async for answer in call:
                if answer.error_message:  # a runtime that reports errors in the stream, as Triton does
                    raise error_of(grpc.StatusCode.INTERNAL, answer.error_message, kind="", method="ModelStreamInfer",
                                   model_id=request.model_name)
                answered = True
                yield v2.ModelInferResponse.FromString(answer.infer_response)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNIMPLEMENTED and not answered:
                yield await self.infer(request, timeout=timeout)
                return
            raise self._error(exc, "ModelStreamInfer", request.model_name) from exc
        finally:
            call.cancel()  # a consumer that stops early (its client went away) ends the call

    async def infer_bytes(
        self, request: bytes, *, model_id: str = "", timeout: float | None = None,
        metadata: tuple[tuple[str, str | bytes], ...] | None = None,
    ) -> bytes:
        """ModelInfer with a request already serialized; returns the serialized response."""
        try:
            return await self._infer_raw(request, timeout=timeout or self.infer_deadline_s, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, "ModelInfer", model_id) from exc

    async def model_metadata(self, model_id: str) -> v2.ModelMetadataResponse:
        return await self._call("ModelMetadata", self._metadata, v2.ModelMetadataRequest(name=model_id),
                                self.deadline_s, model_id)

    async def model_ready(self, model_id: str) -> bool:
        resp = await self._call("ModelReady", self._ready, v2.ModelReadyRequest(name=model_id), self.deadline_s,
                                model_id)
        return bool(resp.ready)

    async def server_ready(self) -> bool:
        resp = await self._call("ServerReady", self._server_ready, v2.ServerReadyRequest(), self.deadline_s)
        return bool(resp.ready)

    async def wait_until_ready(self, timeout_s: float = 180.0, interval_s: float = 0.2) -> RuntimeStatus:
        """Poll ``runtime_status`` until READY; raises ``Unavailable`` after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        last = "no answer"
        while True:
            try:
                status = await self.runtime_status()
                if status.state == RuntimeState.READY:
                    return status
                last = f"status {status.state.name}"
            except MeshError as exc:
                last = str(exc)
            if loop.time() + interval_s > end:
                raise Unavailable(f"runtime at {self.target} not ready after {timeout_s:g} s: {last}")
            await asyncio.sleep(interval_s)

    def relay_channel(self) -> grpc.aio.Channel:
        """The channel to the runtime, for gRPC calls the mesh passes through (``mesh/relay.py``)."""
        return self._channel

    async def reconnect(self, target: str | None = None) -> None:
        """Talk to ``target`` (default: the same address, e.g. a restarted child's socket) over a
        fresh channel. Calls still running on the old channel get ``OLD_CHANNEL_GRACE_S`` to end."""
        old = self._channel
        self._open(target or self.target)
        task = asyncio.create_task(old.close(OLD_CHANNEL_GRACE_S), name="runtime-channel-close")
        self._closing[task] = old
        task.add_done_callback(lambda t: self._closing.pop(t, None))

    async def close(self) -> None:
        await self._channel.close()
        closing, self._closing = dict(self._closing), {}
        for task in closing:
            task.cancel()
        await asyncio.gather(*closing, return_exceptions=True)
        for old in closing.values():
            await old.close()  # no more grace: the client is closing

    # -- helpers -------------------------------------------------------------------------------

    async def _call(self, method: str, stub: Any, request: Any, timeout: float, model_id: str = "") -> Any:
        try:
            return await stub(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, method, model_id) from exc

    def _error(self, exc: grpc.aio.AioRpcError, method: str, model_id: str) -> MeshError:
        kind = ""
        for key, value in exc.trailing_metadata() or ():
            if key == ERROR_KIND_KEY:
                kind = value if isinstance(value, str) else value.decode()
        code = exc.code()
        details = exc.details() or ""
        if not kind and code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                 grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN):
            what = f"{method} of model '{model_id}'" if model_id else method
            details = f"runtime at {self.target}: {what} failed ({code.name}): {details}"
        return error_of(code, details, kind=kind, method=method, model_id=model_id)
