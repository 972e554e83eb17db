"""KServe V2 gRPC (``inference.GRPCInferenceService``) in front of a mesh instance.

Registered as generic handlers over the V2 messages from ``protocol.v2`` (kserve's generated
servicer module would import all of kserve). Routing follows ModelMesh: the ``mm-vmodel-id`` /
``mm-model-id`` headers (or their ``-bin`` forms) win, then ``model_name`` as a vmodel id, then as a
model id; the concrete model id is written into the request before the runtime sees it and comes
back as the response's ``model_name``. The repository index uses wire-compatible messages of our
own package (``protos/v2_repository.proto``); kserve ships none for it.

Handlers receive the request as bytes and parse it themselves, so a body that is not the method's
message is ``INVALID_ARGUMENT`` naming the message type (a failing deserializer inside grpc answers
``UNKNOWN``). Ids from the request or the routing headers follow ``core.ids`` rules.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from kserve_mesh.api.errors import grpc_code, to_mesh_error
from kserve_mesh.api.telemetry import Telemetry
from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.core.ids import ModelId, check_id
from kserve_mesh.mesh.instance import Instance
from kserve_mesh.protocol import v2
from kserve_mesh.protos import v2_repository_pb2 as repo_pb

SERVER_NAME = "kserve-mesh"
EXTENSIONS = ["model_repository_extension", "binary_tensor_data", "modelmesh"]
DEFAULT_TIMEOUT_S = 120.0
INFER_METHOD = "inference.GRPCInferenceService/ModelInfer"


def _text(key: str, value: str | bytes) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"header {key} is not UTF-8 text") from None


def routing_headers(context: grpc.aio.ServicerContext) -> tuple[str, str]:
    """(model id, vmodel id) from the ModelMesh routing headers, '' when absent."""
    model_id = vmodel_id = ""
    for key, value in context.invocation_metadata() or ():
        if key == "mm-model-id":
            model_id = value
        elif key == "mm-vmodel-id":
            vmodel_id = value
        elif key == "mm-model-id-bin":
            model_id = _text(key, value)
        elif key == "mm-vmodel-id-bin":
            vmodel_id = _text(key, value)
    return model_id, vmodel_id


def check_routing(name: str, model_id: str, vmodel_id: str) -> None:
    """The id a request is routed by (the same order as ``Instance.resolve``) follows the id rules."""
    if vmodel_id:
        check_id(vmodel_id, "header mm-vmodel-id")
    elif model_id:
        check_id(model_id, "header mm-model-id")
    elif name:
        check_id(name, "model name")


def is_forwarded(context: grpc.aio.ServicerContext) -> bool:
    """A hop from another instance (``mm-forwarded``): serve here, never forward again."""
    return any(key == "mm-forwarded" for key, _ in context.invocation_metadata() or ())


def is_balanced(context: grpc.aio.ServicerContext) -> bool:
    """``mm-balanced: true``: the caller spreads the load itself, so a local copy always serves."""
    return any(key == "mm-balanced" and value == "true" for key, value in context.invocation_metadata() or ())


def _timeout(context: grpc.aio.ServicerContext) -> float:
    remaining = context.time_remaining()
    return DEFAULT_TIMEOUT_S if remaining is None else max(0.001, remaining)


class V2Servicer:
    def __init__(self, instance: Instance, version: str, telemetry: Telemetry | None = None) -> None:
        self.instance = instance
        self.version = version
        self.telemetry = telemetry

    async def _fail(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        err = to_mesh_error(exc)
        await context.abort(grpc_code(err), err.message)

    def _resolve(self, name: str, context: grpc.aio.ServicerContext) -> ModelId:
        model_id, vmodel_id = routing_headers(context)
        check_routing(name, model_id, vmodel_id)
        return self.instance.resolve(name, model_id=model_id, vmodel_id=vmodel_id)

    async def ModelInfer(self, data: bytes, context: grpc.aio.ServicerContext) -> v2.ModelInferResponse:
        start = time.perf_counter()
        code = "OK"
        model_id = ""
        try:
            request = parse(v2.ModelInferRequest, data)
            forwarded = is_forwarded(context)
            header_model, header_vmodel = routing_headers(context)
            check_routing(request.model_name, header_model, header_vmodel)
            model_id = await self.instance.lookup(request.model_name, model_id=header_model,
                                                  vmodel_id=header_vmodel, forwarded=forwarded)
            return await self.instance.infer(model_id, request, _timeout(context), forwarded=forwarded,
                                             balanced=is_balanced(context))
        except Exception as exc:
            err = to_mesh_error(exc)
            code = grpc_code(err).name
            await context.abort(grpc_code(err), err.message)
            raise  # unreachable: abort raises
        finally:
            if self.telemetry is not None:
                self.telemetry.request(INFER_METHOD, code, time.perf_counter() - start, model_id)

    async def ModelMetadata(self, request: v2.ModelMetadataRequest, context: grpc.aio.ServicerContext) -> v2.ModelMetadataResponse:
        try:
            model_id = self._resolve(request.name, context)
            return await self.instance.model_metadata(model_id, _timeout(context))
        except Exception as exc:
            await self._fail(context, exc)
            raise

    async def ModelReady(self, request: v2.ModelReadyRequest, context: grpc.aio.ServicerContext) -> v2.ModelReadyResponse:
        try:
            model_id = self._resolve(request.name, context)
            return v2.ModelReadyResponse(ready=self.instance.is_loaded(model_id))
        except Exception as exc:
            await self._fail(context, exc)
            raise

    async def ServerLive(self, request: v2.ServerLiveRequest, context: grpc.aio.ServicerContext) -> v2.ServerLiveResponse:
        return v2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: v2.ServerReadyRequest, context: grpc.aio.ServicerContext) -> v2.ServerReadyResponse:
        return v2.ServerReadyResponse(ready=self.instance.serving_ready)

    async def ServerMetadata(self, request: v2.ServerMetadataRequest, context: grpc.aio.ServicerContext) -> v2.ServerMetadataResponse:
        return v2.ServerMetadataResponse(name=SERVER_NAME, version=self.version, extensions=EXTENSIONS)

    async def RepositoryIndex(self, request: repo_pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext) -> repo_pb.RepositoryIndexResponse:
        resp = repo_pb.RepositoryIndexResponse()
        for status in self.instance.list_models():
            if request.ready and status.state.name != "LOADED":
                continue
            resp.models.add(name=status.model_id, state=repository_state(status.state.name),
                            reason="; ".join(status.errors))
        return resp

    async def RepositoryModelLoad(self, request: v2.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext) -> v2.RepositoryModelLoadResponse:
        try:
            model_id = self._resolve(request.model_name, context)
            status = await self.instance.ensure_loaded(model_id, sync=True)
            if status.state.name != "LOADED":
                raise_load_failed(model_id, status.errors)
            return v2.RepositoryModelLoadResponse(model_name=model_id, isLoaded=True)
        except Exception as exc:
            await self._fail(context, exc)
            raise

    async def RepositoryModelUnload(self, request: v2.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext) -> v2.RepositoryModelUnloadResponse:
        try:
            model_id = self._resolve(request.model_name, context)
            await self.instance.unload_copy(model_id)
            return v2.RepositoryModelUnloadResponse(model_name=model_id, isUnloaded=True)
        except Exception as exc:
            await self._fail(context, exc)
            raise


def repository_state(state_name: str) -> str:
    """Mesh model state -> the V2 repository index state words (READY, LOADING, UNAVAILABLE)."""
    return {"LOADED": "READY", "LOADING": "LOADING", "LOADING_FAILED": "UNAVAILABLE"}.get(state_name, "UNAVAILABLE")


def raise_load_failed(model_id: str, errors: tuple[str, ...]) -> None:
    from kserve_mesh.core.errors import ModelLoadFailed

    raise ModelLoadFailed(f"model '{model_id}' did not load: {'; '.join(errors) or 'unknown reason'}")


def parse(message_type: Any, data: bytes) -> Any:
    """``data`` as a ``message_type``, or ``InvalidArgument`` naming the type."""
    try:
        return message_type.FromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InvalidArgument(f"the request is not a valid {message_type.DESCRIPTOR.full_name} message: "
                              f"{exc or type(exc).__name__}") from None


def parsing(method: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
            message_type: Any) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Any]]:
    """``method`` taking its request as bytes: undecodable bytes are ``INVALID_ARGUMENT``."""

    async def handle(data: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = parse(message_type, data)
        except InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
            raise  # unreachable: abort raises
        return await method(request, context)

    handle.__name__ = getattr(method, "__name__", "handle")
    return handle


_METHODS = {
    "ModelInfer": (v2.ModelInferRequest, v2.ModelInferResponse),
    "ModelMetadata": (v2.ModelMetadataRequest, v2.ModelMetadataResponse),
    "ModelReady": (v2.ModelReadyRequest, v2.ModelReadyResponse),
    "ServerLive": (v2.ServerLiveRequest, v2.ServerLiveResponse),
    "ServerReady": (v2.ServerReadyRequest, v2.ServerReadyResponse),
    "ServerMetadata": (v2.ServerMetadataRequest, v2.ServerMetadataResponse),
    "RepositoryIndex": (repo_pb.RepositoryIndexRequest, repo_pb.RepositoryIndexResponse),
    "RepositoryModelLoad": (v2.RepositoryModelLoadRequest, v2.RepositoryModelLoadResponse),
    "RepositoryModelUnload": (v2.RepositoryModelUnloadRequest, v2.RepositoryModelUnloadResponse),
}


def handler(servicer: V2Servicer) -> grpc.GenericRpcHandler:
    """The V2 service: every method takes raw bytes (ModelInfer parses its own, inside its error
    handling and telemetry; the others through ``parsing``)."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            servicer.ModelInfer if name == "ModelInfer" else parsing(getattr(servicer, name), req),
            response_serializer=resp.SerializeToString,
        )
        for name, (req, resp) in _METHODS.items()
    }
    return grpc.method_handlers_generic_handler(v2.SERVICE, handlers)
