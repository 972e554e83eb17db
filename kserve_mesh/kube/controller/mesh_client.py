"""``GrpcMesh``: the controller's ``MeshManagement`` adapter (``kube/reconcile.py``), over gRPC.

It speaks ModelMesh's management API (``mmesh.ModelMesh``) to a mesh Service, each call with a
deadline; gRPC failures come back as mesh errors (``Unavailable``, ``AlreadyExists``...). Answers
become the kube side's status values (``core/views.py``), so the controller never loads the mesh
itself; anything that managed ModelMesh could use it. ``MeshCredentials`` make it present a bearer
token (metadata ``authorization``) and speak TLS (the mesh's CA, the name in its certificate, and a
client certificate for mutual TLS); a mesh that refuses them answers ``Unavailable`` naming why, as
an unreachable one does.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from kserve_mesh.core.errors import MeshError, Unavailable
from kserve_mesh.core.records import ModelInfo, ModelState, VModelState
from kserve_mesh.kube.core.views import CopyInfo, ModelStatusInfo, VModelStatusInfo
from kserve_mesh.protos import model_mesh_pb2 as pb
from kserve_mesh.protos import model_mesh_pb2_grpc as pb_grpc
from kserve_mesh.runtime.grpc_errors import error_of

DEFAULT_DEADLINE_S = 10.0


@dataclass(frozen=True)
class MeshTls:
    """TLS towards a mesh: what to trust, the name its certificate carries, our client certificate."""

    root_pem: bytes
    server_name: str
    cert_pem: bytes | None = None
    key_pem: bytes | None = None


@dataclass(frozen=True)
class MeshCredentials:
    """How to call a mesh whose instances authenticate: a bearer token and/or TLS."""

    token: str | None = None
    tls: MeshTls | None = None

    def __repr__(self) -> str:  # never show the token or the key
        return f"MeshCredentials(token={'***' if self.token else None}, tls={bool(self.tls)})"


def _channel(target: str, credentials: MeshCredentials | None) -> grpc.aio.Channel:
    tls = credentials.tls if credentials else None
    if tls is None:
        return grpc.aio.insecure_channel(target)
    creds = grpc.ssl_channel_credentials(root_certificates=tls.root_pem, private_key=tls.key_pem,
                                         certificate_chain=tls.cert_pem)
    # The Service's DNS name is in the certificate; a fixed --mesh-address may dial another name.
    return grpc.aio.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", tls.server_name)])


def model_status_of(model_id: str, msg: pb.ModelStatusInfo) -> ModelStatusInfo:
    copies = tuple(CopyInfo(c.location, ModelState(c.copyStatus), int(c.time)) for c in msg.modelCopyInfos)
    return ModelStatusInfo(model_id, ModelState(msg.status), tuple(msg.errors), copies)


def vmodel_status_of(vmodel_id: str, msg: pb.VModelStatusInfo) -> VModelStatusInfo:
    active = model_status_of(msg.activeModelId, msg.activeModelStatus) if msg.HasField("activeModelStatus") else None
    target = model_status_of(msg.targetModelId, msg.targetModelStatus) if msg.HasField("targetModelStatus") else None
    return VModelStatusInfo(vmodel_id, VModelState(msg.status), msg.activeModelId, msg.targetModelId, msg.owner,
                            active, target)


class GrpcMesh:
    """``MeshManagement`` over gRPC (``mmesh.ModelMesh``); ``target`` is ``host:port``."""

    def __init__(self, target: str, *, deadline_s: float = DEFAULT_DEADLINE_S,
                 channel: grpc.aio.Channel | None = None, credentials: MeshCredentials | None = None) -> None:
        self.target = target
        self.deadline_s = deadline_s
        self.credentials = credentials
        self._channel = channel or _channel(target, credentials)
        self._owns_channel = channel is None
        self._stub = pb_grpc.ModelMeshStub(self._channel)
        token = credentials.token if credentials else None
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()

    async def _call(self, method: str, request, model_id: str = ""):  # type: ignore[no-untyped-def]
        try:
            return await getattr(self._stub, method)(request, timeout=self.deadline_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                raise Unavailable(f"mesh at {self.target} refused the controller's credentials ({code.name}): "
                                  f"{exc.details()}") from exc
            err: MeshError = error_of(code, exc.details() or "", method=method, model_id=model_id)
            if code == grpc.StatusCode.UNAVAILABLE:
                err = type(err)(f"mesh at {self.target} unavailable: {exc.details()}")
            raise err from exc

    async def register_model(self, model_id: str, info: ModelInfo, *, load_now: bool = False) -> ModelStatusInfo:
        req = pb.RegisterModelRequest(modelId=model_id, loadNow=load_now,
                                      modelInfo=pb.ModelInfo(type=info.type, path=info.path, key=info.key))
        return model_status_of(model_id, await self._call("registerModel", req, model_id))

    async def set_vmodel(self, vmodel_id: str, owner: str, target: str, info: ModelInfo | None, *,
                         auto_delete: bool = True, load_now: bool = False) -> VModelStatusInfo:
        req = pb.SetVModelRequest(vModelId=vmodel_id, owner=owner, targetModelId=target,
                                  autoDeleteTargetModel=auto_delete, loadNow=load_now)
        if info is not None:
            req.modelInfo.CopyFrom(pb.ModelInfo(type=info.type, path=info.path, key=info.key))
        return vmodel_status_of(vmodel_id, await self._call("setVModel", req, target))

    async def delete_vmodel(self, vmodel_id: str, owner: str) -> None:
        await self._call("deleteVModel", pb.DeleteVModelRequest(vModelId=vmodel_id, owner=owner))

    async def vmodel_status(self, vmodel_id: str, owner: str = "") -> VModelStatusInfo:
        msg = await self._call("getVModelStatus", pb.GetVModelStatusRequest(vModelId=vmodel_id, owner=owner))
        return vmodel_status_of(vmodel_id, msg)

    async def model_status(self, model_id: str) -> ModelStatusInfo:
        return model_status_of(model_id, await self._call("getModelStatus", pb.GetStatusRequest(modelId=model_id),
                                                          model_id))

    async def unregister(self, model_id: str) -> None:
        await self._call("unregisterModel", pb.UnregisterModelRequest(modelId=model_id), model_id)
