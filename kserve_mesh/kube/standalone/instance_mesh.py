"""``InstanceMesh``: a standalone mesh's ``MeshManagement`` adapter (``kube/reconcile.py``), in process.

A mesh without Kubernetes applies KServe resources to itself: the reconcile calls its own
``Instance`` directly, and the statuses it answers become the kube side's values
(``core/views.py``), the same ones the controller's gRPC adapter makes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kserve_mesh.core.ids import ModelId, VModelId
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.core.vmodel import SetVModel
from kserve_mesh.kube.core.views import CopyInfo, ModelStatusInfo, VModelStatusInfo

if TYPE_CHECKING:
    from kserve_mesh.mesh.instance import Instance, ModelStatus, VModelStatus


def model_status_info(status: ModelStatus) -> ModelStatusInfo:
    copies = tuple(CopyInfo(c.location, c.state, c.time_ms) for c in status.copies)
    return ModelStatusInfo(status.model_id, status.state, tuple(status.errors), copies)


def vmodel_status_info(status: VModelStatus) -> VModelStatusInfo:
    active = None if status.active_status is None else model_status_info(status.active_status)
    target = None if status.target_status is None else model_status_info(status.target_status)
    return VModelStatusInfo(status.vmodel_id, status.state, status.active, status.target, status.owner, active,
                            target)


class InstanceMesh:
    """``MeshManagement`` on an in-process ``Instance``."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance

    async def register_model(self, model_id: str, info: ModelInfo, *, load_now: bool = False) -> ModelStatusInfo:
        return model_status_info(await self.instance.register(model_id, info, load_now=load_now))

    async def set_vmodel(self, vmodel_id: str, owner: str, target: str, info: ModelInfo | None, *,
                         auto_delete: bool = True, load_now: bool = False) -> VModelStatusInfo:
        req = SetVModel(VModelId(vmodel_id), ModelId(target), owner=owner)
        status = await self.instance.set_vmodel(req, model_info=info, auto_delete=auto_delete, load_now=load_now)
        return vmodel_status_info(status)

    async def delete_vmodel(self, vmodel_id: str, owner: str) -> None:
        await self.instance.delete_vmodel(vmodel_id, owner)

    async def vmodel_status(self, vmodel_id: str, owner: str = "") -> VModelStatusInfo:
        return vmodel_status_info(self.instance.vmodel_status(vmodel_id, owner))

    async def model_status(self, model_id: str) -> ModelStatusInfo:
        return model_status_info(self.instance.model_status(model_id))

    async def unregister(self, model_id: str) -> None:
        await self.instance.unregister(model_id)
