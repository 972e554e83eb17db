"""KServe V2 gRPC (``inference.GRPCInferenceService``) in front of the data plane.

Each method converts: the request (and its routing metadata, read into a ``wire.Routing``, and
the call's deadline) goes to ``mesh.dataplane.DataPlane``, the answer comes back as the V2 message.
Routing, deadlines, telemetry and errors are the data plane's; the error table is applied by
``grpc_calls.unary``. The messages are ``protocol.v2``'s (kserve's generated servicer module would
import all of kserve). The repository index uses wire-compatible messages of our own package
(``protos/v2_repository.proto``), as do repository load/unload, which accept Triton's request shape
too (tritonclient.grpc's ``load_model`` / ``unload_model`` send the model name as field 2).
``ModelStreamInfer`` (Triton's streaming extension, what tritonclient's ``start_stream`` /
``async_stream_infer`` use) is a stream of inferences through the same data plane.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc

from kserve_mesh.api.errors import grpc_code, to_mesh_error
from kserve_mesh.api.grpc_calls import method_handlers
from kserve_mesh.mesh.dataplane import DataPlane
from kserve_mesh.mesh.wire import Routing
from kserve_mesh.protocol import v2
from kserve_mesh.protos import v2_repository_pb2 as repo_pb

Context = grpc.aio.ServicerContext


def _route(context: Context) -> Routing:
    return Routing.from_grpc(context.invocation_metadata())


def _model_name(data: bytes, kserve_type: Any) -> str:
    """The model a repository load/unload request names. KServe's shape names it in field 1,
    Triton's in field 2 (its field 1 is the repository's name; a KServe request has no field 2)."""
    v2.parse(kserve_type, data)  # a malformed request is refused naming the V2 message
    either = v2.parse(repo_pb.RepositoryModelRequest, data)
    return either.triton_model_name or either.name


class V2Servicer:
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def ModelInfer(self, data: bytes, context: Context) -> Awaitable[v2.ModelInferResponse]:
        # A plain function returning the data plane's coroutine: one coroutine less per inference.
        return self.plane.infer(data, _route(context), remaining_s=context.time_remaining())

    async def ModelMetadata(self, request: v2.ModelMetadataRequest, context: Context) -> v2.ModelMetadataResponse:
        _, metadata = await self.plane.model_metadata(request.name, _route(context), context.time_remaining())
        return metadata

    async def ModelReady(self, request: v2.ModelReadyRequest, context: Context) -> v2.ModelReadyResponse:
        _, ready = await self.plane.model_ready(request.name, _route(context))
        return v2.ModelReadyResponse(ready=ready)

    async def ServerLive(self, request: v2.ServerLiveRequest, context: Context) -> v2.ServerLiveResponse:
        return v2.ServerLiveResponse(live=self.plane.live())

    async def ServerReady(self, request: v2.ServerReadyRequest, context: Context) -> v2.ServerReadyResponse:
        return v2.ServerReadyResponse(ready=self.plane.ready())

    async def ServerMetadata(self, request: v2.ServerMetadataRequest, context: Context) -> v2.ServerMetadataResponse:
        meta = self.plane.server_metadata()
        return v2.ServerMetadataResponse(name=meta.name, version=meta.version, extensions=list(meta.extensions))

    async def ModelStreamInfer(self, requests: AsyncIterator[bytes], context: Context) -> None:
        """Triton's streaming extension: each ``ModelInferRequest`` of the stream is routed on its own
        (its model name and the stream's headers; forwarded to the holder or loaded on demand), and
        every response its model gives (several for a model that streams) is written as it comes. A
        failed request is answered with its ``error_message`` and the stream goes on, as Triton does;
        a peer's hop (one request) ends with the error's status instead, so the sender knows its kind."""
        try:
            route = _route(context)
        except Exception as exc:  # noqa: BLE001 - a malformed routing header ends the stream clearly
            err = to_mesh_error(exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, err.message)

        async def send(response: v2.ModelInferResponse) -> None:
            await context.write(repo_pb.ModelStreamInferResponse(infer_response=response.SerializeToString()))

        async for data in requests:
            try:
                request = v2.parse(v2.ModelInferRequest, data)
                await self.plane.infer_stream(request, route, send, remaining_s=context.time_remaining())
            except Exception as exc:  # noqa: BLE001 - answered in the stream, which goes on
                err = to_mesh_error(exc)
                if route.forwarded:
                    await context.abort(grpc_code(err), err.message)
                await context.write(repo_pb.ModelStreamInferResponse(error_message=err.message))

    async def RepositoryIndex(self, request: repo_pb.RepositoryIndexRequest,
                              context: Context) -> repo_pb.RepositoryIndexResponse:
        resp = repo_pb.RepositoryIndexResponse()
        for entry in self.plane.repository_index(request.ready):
            resp.models.add(name=entry.name, state=entry.state, reason=entry.reason)
        return resp

    async def RepositoryModelLoad(self, data: bytes, context: Context) -> v2.RepositoryModelLoadResponse:
        model_id = await self.plane.repository_load(_model_name(data, v2.RepositoryModelLoadRequest), _route(context))
        return v2.RepositoryModelLoadResponse(model_name=model_id, isLoaded=True)

    async def RepositoryModelUnload(self, data: bytes, context: Context) -> v2.RepositoryModelUnloadResponse:
        model_id = await self.plane.repository_unload(_model_name(data, v2.RepositoryModelUnloadRequest),
                                                      _route(context))
        return v2.RepositoryModelUnloadResponse(model_name=model_id, isUnloaded=True)


def handlers(plane: DataPlane) -> dict[str, grpc.RpcMethodHandler]:
    """The V2 service's methods, for ``add_registered_method_handlers`` (grpc's core matches the
    method of a registered call itself: no generic-handler lookup per call). ModelInfer hands its
    bytes to the data plane, which parses them (inside its timing); repository load/unload parse
    theirs in either shape."""
    s = V2Servicer(plane)
    return method_handlers({
        "ModelInfer": (s.ModelInfer, None, v2.ModelInferResponse),
        "ModelMetadata": (s.ModelMetadata, v2.ModelMetadataRequest, v2.ModelMetadataResponse),
        "ModelReady": (s.ModelReady, v2.ModelReadyRequest, v2.ModelReadyResponse),
        "ServerLive": (s.ServerLive, v2.ServerLiveRequest, v2.ServerLiveResponse),
        "ServerReady": (s.ServerReady, v2.ServerReadyRequest, v2.ServerReadyResponse),
        "ServerMetadata": (s.ServerMetadata, v2.ServerMetadataRequest, v2.ServerMetadataResponse),
        "RepositoryIndex": (s.RepositoryIndex, repo_pb.RepositoryIndexRequest, repo_pb.RepositoryIndexResponse),
        "RepositoryModelLoad": (s.RepositoryModelLoad, None, v2.RepositoryModelLoadResponse),
        "RepositoryModelUnload": (s.RepositoryModelUnload, None, v2.RepositoryModelUnloadResponse),
    }, streams={
        "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
            s.ModelStreamInfer, response_serializer=repo_pb.ModelStreamInferResponse.SerializeToString),
    })
