"""``TritonClient``: the gRPC wire to one Triton process, every failure a core error.

Triton speaks KServe V2 gRPC (``inference.GRPCInferenceService``): ``ModelInfer``,
``ModelMetadata``, ``ServerReady`` and ``ServerMetadata`` use our V2 messages (``protocol.v2``).
Its repository extension (``RepositoryIndex``, ``RepositoryModelLoad``, ``RepositoryModelUnload``)
is not in KServe's proto, and Triton's own request shape differs from the one KServe's proto
describes (``model_name`` is field 2 after ``repository_name``; FACTS.md). tritonclient's
generated modules cannot be imported beside our V2 messages (both define ``inference.*`` in the
default descriptor pool), so the few repository messages are declared here, field for field as
Triton's ``grpc_service.proto`` has them, in a private descriptor pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from kserve_mesh.core.errors import DeadlineExceeded, InternalError, MeshError, ModelLoadFailed, Unavailable
from kserve_mesh.protocol import v2
from kserve_mesh.runtime.grpc_errors import error_of
from kserve_mesh.runtime.triton.config import TritonConfig
from kserve_mesh.runtime.triton.process import TritonProcess

logger = logging.getLogger(__name__)

_F = descriptor_pb2.FieldDescriptorProto
_UNLOADING = ("READY", "UNLOADING")
_UNLOAD_POLL_S = 0.1
_FINAL_ASK = "triton_enable_empty_final_response"
_FINAL = "triton_final_response"


def _repository_messages() -> dict[str, Any]:
    fdp = descriptor_pb2.FileDescriptorProto(name="kserve_mesh/triton_repository.proto", package="inference",
                                             syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, str, bool]) -> descriptor_pb2.DescriptorProto:
        msg = fdp.message_type.add(name=name)
        for fname, number, ftype, type_name, repeated in fields:
            added = msg.field.add(name=fname, number=number, type=ftype,
                                  label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
            if type_name:
                added.type_name = type_name
        return msg

    s, b, m = _F.TYPE_STRING, _F.TYPE_BOOL, _F.TYPE_MESSAGE
    message("RepositoryIndexRequest", ("repository_name", 1, s, "", False), ("ready", 2, b, "", False))
    index = message("RepositoryIndexResponse",
                    ("models", 1, m, ".inference.RepositoryIndexResponse.ModelIndex", True))
    model_index = index.nested_type.add(name="ModelIndex")
    for fname, number in (("name", 1), ("version", 2), ("state", 3), ("reason", 4)):
        model_index.field.add(name=fname, number=number, type=s, label=_F.LABEL_OPTIONAL)
    for verb in ("Load", "Unload"):
        message(f"RepositoryModel{verb}Request", ("repository_name", 1, s, "", False), ("model_name", 2, s, "", False))
        message(f"RepositoryModel{verb}Response")
    # infer_response is a ModelInferResponse (of KServe's V2 proto, in the default pool): declared as
    # bytes, which has the same wire form, and parsed with our V2 class.
    message("ModelStreamInferResponse", ("error_message", 1, s, "", False),
            ("infer_response", 2, _F.TYPE_BYTES, "", False))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {d.name: message_factory.GetMessageClass(d) for d in pool.FindFileByName(fdp.name).message_types_by_name.values()}


_MESSAGES = _repository_messages()


class TritonClient:
    """The gRPC client of the Triton at ``target``; ``process``: the one this runtime started (None
    when attached), whose exit the errors report."""

    def __init__(self, target: str, config: TritonConfig, process: TritonProcess | None = None) -> None:
        self.target = target
        self.config = config
        self.process = process
        options = [("grpc.max_send_message_length", config.max_message_bytes),
                   ("grpc.max_receive_message_length", config.max_message_bytes)]
        self._channel = grpc.aio.insecure_channel(target, options=options)

        def call(method: str, req: Any, resp: Any) -> Any:
            return self._channel.unary_unary(v2.method(method), request_serializer=req.SerializeToString,
                                             response_deserializer=resp.FromString)

        self._infer = call("ModelInfer", v2.ModelInferRequest, v2.ModelInferResponse)
        self._metadata = call("ModelMetadata", v2.ModelMetadataRequest, v2.ModelMetadataResponse)
        self._server_metadata = call("ServerMetadata", v2.ServerMetadataRequest, v2.ServerMetadataResponse)
        self._stream = self._channel.stream_stream(
            v2.method("ModelStreamInfer"), request_serializer=v2.ModelInferRequest.SerializeToString,
            response_deserializer=_MESSAGES["ModelStreamInferResponse"].FromString)
        self._index = call("RepositoryIndex", _MESSAGES["RepositoryIndexRequest"], _MESSAGES["RepositoryIndexResponse"])
        self._load = call("RepositoryModelLoad", _MESSAGES["RepositoryModelLoadRequest"],
                          _MESSAGES["RepositoryModelLoadResponse"])
        self._unload = call("RepositoryModelUnload", _MESSAGES["RepositoryModelUnloadRequest"],
                            _MESSAGES["RepositoryModelUnloadResponse"])

    async def version(self) -> str:
        """``triton-2.51.0``; ``triton`` when it cannot be read."""
        try:
            resp = await self._server_metadata(v2.ServerMetadataRequest(), timeout=self.config.call_timeout_s)
        except grpc.aio.AioRpcError as exc:
            logger.warning("cannot read Triton's version: %s", exc.details())
            return "triton"
        return f"{resp.name or 'triton'}-{resp.version}".rstrip("-")

    async def index(self) -> dict[str, tuple[str, str]]:
        """Triton's repository index: model name -> (state, reason)."""
        try:
            resp = await self._index(_MESSAGES["RepositoryIndexRequest"](), timeout=self.config.call_timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise self._grpc_error(exc, "RepositoryIndex", "") from exc
        return {m.name: (m.state, m.reason) for m in resp.models}

    async def load(self, name: str, model_id: str) -> None:
        """RepositoryModelLoad; a failure is ``ModelLoadFailed`` with Triton's own words (its
        answer, and the reason its index records when that says more)."""
        timeout = self.config.model_loading_timeout_ms / 1000 + 5
        offset = self.process.log_size() if self.process is not None else 0
        try:
            await self._load(_MESSAGES["RepositoryModelLoadRequest"](model_name=name), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded(f"Triton did not answer the load of model '{model_id}' in {timeout:g} s") from exc
            if code == grpc.StatusCode.UNAVAILABLE:
                raise self._grpc_error(exc, "RepositoryModelLoad", model_id) from exc
            reason = ""
            try:
                reason = (await self.index()).get(name, ("", ""))[1]
            except MeshError:
                pass
            text = details if not reason or reason in details else f"{details}: {reason}"
            if self.process is not None:
                logged = [e for e in self.process.errors_since(offset, name) if e not in text]
                text = "; ".join([text, *logged])
            raise ModelLoadFailed(f"Triton could not load model '{model_id}': {text}") from exc

    async def unload(self, name: str, model_id: str) -> None:
        """RepositoryModelUnload, then wait (bounded) until Triton's index no longer says READY or
        UNLOADING: Triton answers the call at once and unloads in the background (a Python-backend
        model's stub process exits ~1.5 s later), and the memory is only back then."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.config.call_timeout_s
        try:
            await self._unload(_MESSAGES["RepositoryModelUnloadRequest"](model_name=name),
                               timeout=self.config.call_timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded(f"Triton did not unload model '{model_id}' in time") from exc
            raise self._grpc_error(exc, "RepositoryModelUnload", model_id) from exc
        while (await self.index()).get(name, ("", ""))[0] in _UNLOADING:
            if loop.time() > end:
                raise DeadlineExceeded(f"Triton still holds model '{model_id}' {self.config.call_timeout_s:g} s "
                                       "after it was asked to unload it")
            await asyncio.sleep(_UNLOAD_POLL_S)

    async def infer(self, request: v2.ModelInferRequest, model_id: str, timeout: float) -> v2.ModelInferResponse:
        try:
            return await self._infer(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._grpc_error(exc, "ModelInfer", model_id) from exc

    async def infer_stream(self, request: v2.ModelInferRequest, model_id: str,
                           timeout: float) -> AsyncIterator[v2.ModelInferResponse]:
        """Triton's ModelStreamInfer for one request: every response its model sends (a decoupled
        model, several; any other, one). Triton is asked to flag the last one
        (``triton_enable_empty_final_response``), which ends the stream; an empty final response is
        not passed on."""
        request.parameters[_FINAL_ASK].bool_param = True
        call = self._stream(iter([request]), timeout=timeout)
        try:
            async for message in call:
                if message.error_message:
                    raise InternalError(f"Triton: model '{model_id}' failed: {message.error_message}")
                response = v2.ModelInferResponse.FromString(message.infer_response)
                final = _FINAL in response.parameters and response.parameters[_FINAL].bool_param
                if _FINAL in response.parameters:
                    del response.parameters[_FINAL]
                if response.outputs or not final:
                    yield response
                if final:
                    return
        except grpc.aio.AioRpcError as exc:
            raise self._grpc_error(exc, "ModelStreamInfer", model_id) from exc
        finally:
            call.cancel()
            del request.parameters[_FINAL_ASK]

    async def model_metadata(self, name: str, model_id: str) -> v2.ModelMetadataResponse:
        try:
            return await self._metadata(v2.ModelMetadataRequest(name=name), timeout=self.config.call_timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise self._grpc_error(exc, "ModelMetadata", model_id) from exc

    def _grpc_error(self, exc: grpc.aio.AioRpcError, method: str, model_id: str) -> MeshError:
        code, details = exc.code(), exc.details() or ""
        if code == grpc.StatusCode.INTERNAL:
            return InternalError(f"Triton failed to run {method} on model '{model_id}': {details}")
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED):
            return Unavailable(f"Triton at {self.target}: {method} failed ({code.name}): {details}{self.exit_note()}")
        return error_of(code, f"Triton: {details}", method=method, model_id=model_id)

    def exit_note(self) -> str:
        process = self.process
        if process is not None and not process.alive():
            return f" (Triton {process.exit_text()}; its log ends:\n{process.log_tail()})"
        return ""

    async def close(self) -> None:
        await self._channel.close()
