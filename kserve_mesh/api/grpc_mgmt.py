"""ModelMesh's management API (``mmesh.ModelMesh``) over gRPC, wire-compatible with ModelMesh.

Each method converts its message, calls ``mesh.management.Management`` (which checks ids against
the ``core.ids`` rules) and converts the status back. Methods are registered from the service
descriptor, taking their requests as bytes (``grpc_calls``): a body that is not the method's
message is ``INVALID_ARGUMENT``, and errors are answered from the one table.
"""

from __future__ import annotations

import grpc

from kserve_mesh.api.grpc_calls import service
from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.core.ids import check_id
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.mesh.management import Management
from kserve_mesh.mesh.status import ModelStatus, VModelStatus
from kserve_mesh.protos import model_mesh_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["ModelMesh"]
Context = grpc.aio.ServicerContext


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


class ModelMeshServicer:
    def __init__(self, mgmt: Management) -> None:
        self.mgmt = mgmt

    async def registerModel(self, request: pb.RegisterModelRequest, context: Context) -> pb.ModelStatusInfo:
        if not request.HasField("modelInfo"):
            raise InvalidArgument(f"registerModel '{check_id(request.modelId)}': modelInfo is required")
        return status_pb(await self.mgmt.register(request.modelId, info_of(request.modelInfo),
                                                  load_now=request.loadNow, sync=request.sync,
                                                  last_used_ms=request.lastUsedTime))

    async def unregisterModel(self, request: pb.UnregisterModelRequest, context: Context) -> pb.UnregisterModelResponse:
        await self.mgmt.unregister(request.modelId)
        return pb.UnregisterModelResponse()

    async def getModelStatus(self, request: pb.GetStatusRequest, context: Context) -> pb.ModelStatusInfo:
        return status_pb(self.mgmt.model_status(request.modelId))

    async def ensureLoaded(self, request: pb.EnsureLoadedRequest, context: Context) -> pb.ModelStatusInfo:
        return status_pb(await self.mgmt.ensure_loaded(request.modelId, last_used_ms=request.lastUsedTime,
                                                       sync=request.sync))

    async def setVModel(self, request: pb.SetVModelRequest, context: Context) -> pb.VModelStatusInfo:
        info = info_of(request.modelInfo) if request.HasField("modelInfo") else None
        return vmodel_pb(await self.mgmt.set_vmodel(
            request.vModelId, request.targetModelId, owner=request.owner, update_only=request.updateOnly,
            force=request.force, expected_target=request.expectedTargetModelId, model_info=info,
            auto_delete=request.autoDeleteTargetModel, load_now=request.loadNow, sync=request.sync))

    async def deleteVModel(self, request: pb.DeleteVModelRequest, context: Context) -> pb.DeleteVModelResponse:
        await self.mgmt.delete_vmodel(request.vModelId, request.owner)
        return pb.DeleteVModelResponse()

    async def getVModelStatus(self, request: pb.GetVModelStatusRequest, context: Context) -> pb.VModelStatusInfo:
        return vmodel_pb(self.mgmt.vmodel_status(request.vModelId, request.owner))


def handler(mgmt: Management) -> grpc.GenericRpcHandler:
    """``mmesh.ModelMesh``, every method taking its request as bytes."""
    servicer = ModelMeshServicer(mgmt)
    return service(SERVICE.full_name, {
        method.name: (getattr(servicer, method.name), getattr(pb, method.input_type.name),
                      getattr(pb, method.output_type.name))
        for method in SERVICE.methods
    })


def add_to_server(mgmt: Management, server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers((handler(mgmt),))
