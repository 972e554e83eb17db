"""ModelMesh's management API (``mmesh.ModelMesh``) over gRPC, wire-compatible with ModelMesh.

The methods are registered from the service descriptor with raw-bytes requests, parsed by each
handler (``grpc_v2.parsing``): a body that is not the method's message is ``INVALID_ARGUMENT``.
Model and vmodel ids follow the ``core.ids`` rules.
"""

from __future__ import annotations

import grpc

from kserve_mesh.api.errors import grpc_code, to_mesh_error
from kserve_mesh.api.grpc_v2 import parsing
from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.core.ids import ModelId, VModelId, check_id
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.core.vmodel import SetVModel
from kserve_mesh.mesh.instance import Instance, ModelStatus, VModelStatus
from kserve_mesh.protos import model_mesh_pb2 as pb
from kserve_mesh.protos import model_mesh_pb2_grpc as pb_grpc


def status_pb(status: ModelStatus) -> pb.ModelStatusInfo:
    msg = pb.ModelStatusInfo(status=status.state.value, errors=list(status.errors))
    for copy in status.copies:
        msg.modelCopyInfos.add(location=copy.location, copyStatus=copy.state.value, time=copy.time_ms)
    return msg


def vmodel_pb(status: VModelStatus) -> pb.VModelStatusInfo:
    msg = pb.VModelStatusInfo(status=status.state.value, activeModelId=status.active,
                              targetModelId=status.target, owner=status.owner)
    if status.active_status is not None:
        msg.activeModelStatus.CopyFrom(status_pb(status.active_status))
    if status.target_status is not None:
        msg.targetModelStatus.CopyFrom(status_pb(status.target_status))
    return msg


def info_of(msg: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(type=msg.type, path=msg.path, key=msg.key)


class ModelMeshServicer(pb_grpc.ModelMeshServicer):
    def __init__(self, instance: Instance) -> None:
        self.instance = instance

    async def _fail(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        err = to_mesh_error(exc)
        await context.abort(grpc_code(err), err.message)

    async def registerModel(self, request, context):  # type: ignore[no-untyped-def]
        try:
            if not request.HasField("modelInfo"):
                raise InvalidArgument(f"registerModel '{check_id(request.modelId)}': modelInfo is required")
            status = await self.instance.register(
                request.modelId, info_of(request.modelInfo), load_now=request.loadNow,
                sync=request.sync, last_used_ms=request.lastUsedTime)
            return status_pb(status)
        except Exception as exc:  # noqa: BLE001
            await self._fail(context, exc)

    async def unregisterModel(self, request, context):  # type: ignore[no-untyped-def]
        try:
            await self.instance.unregister(check_id(request.modelId))
            return pb.UnregisterModelResponse()
        except Exception as exc:  # noqa: BLE001
            await self._fail(context, exc)

    async def getModelStatus(self, request, context):  # type: ignore[no-untyped-def]
        try:
            return status_pb(self.instance.model_status(check_id(request.modelId)))
        except Exception as exc:  # noqa: BLE001
            await self._fail(context, exc)

    async def ensureLoaded(self, request, context):  # type: ignore[no-untyped-def]
        try:
            status = await self.instance.ensure_loaded(check_id(request.modelId), last_used_ms=request.lastUsedTime,
                                                       sync=request.sync)
            return status_pb(status)
        except Exception as exc:  # noqa: BLE001
            await self._fail(context, exc)

    async def setVModel(self, request, context):  # type: ignore[no-untyped-def]
        try:
            req = SetVModel(VModelId(request.vModelId), ModelId(request.targetModelId), owner=request.owner,
                            update_only=request.updateOnly, force=request.force,
                            expected_target=request.expectedTargetModelId)
            info = info_of(request.modelInfo) if request.HasField("modelInfo") else None
            status = await self.instance.set_vmodel(req, model_info=info, auto_delete=request.autoDeleteTargetModel,
                                                    load_now=request.loadNow, sync=request.sync)
            return vmodel_pb(status)
        except Exception as exc:  # noqa: BLE001
            await self._fail(context, exc)

    async def deleteVModel(self, request, context):  # type: ignore[no-untyped-def]
        try:
            await self.instance.delete_vmodel(check_id(request.vModelId, "vmodel id"), request.owner)
            return pb.DeleteVModelResponse()
        except Exception as exc:  # noqa: BLE001
            await self._fail(context, exc)

    async def getVModelStatus(self, request, context):  # type: ignore[no-untyped-def]
        try:
            return vmodel_pb(self.instance.vmodel_status(check_id(request.vModelId, "vmodel id"), request.owner))
        except Exception as exc:  # noqa: BLE001
            await self._fail(context, exc)


SERVICE = pb.DESCRIPTOR.services_by_name["ModelMesh"]


def handler(instance: Instance) -> grpc.GenericRpcHandler:
    """``mmesh.ModelMesh``, every method taking its request as bytes."""
    servicer = ModelMeshServicer(instance)
    handlers = {}
    for method in SERVICE.methods:
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            parsing(getattr(servicer, method.name), request_type),
            response_serializer=response_type.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)


def add_to_server(instance: Instance, server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers((handler(instance),))
