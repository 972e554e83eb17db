"""ModelMesh's management API (``mmesh.ModelMesh``), transport-neutral.

The gRPC service (``api/grpc_mgmt.py``) and the REST routes under ``/mesh/v1`` (``api/rest_mgmt.py``)
convert their requests and call this; ids are checked against ``core.ids`` rules here, once, before
anything is read or stored. Semantics are the instance's (``mesh/instance.py``, ``mesh/vmodels.py``).
"""

from __future__ import annotations

from kserve_mesh.core.ids import ModelId, VModelId, check_id
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.core.vmodel import SetVModel
from kserve_mesh.mesh.instance import Instance
from kserve_mesh.mesh.status import ModelStatus, VModelStatus


class Management:
    def __init__(self, instance: Instance) -> None:
        self._inst = instance

    # -- models ----------------------------------------------------------------------------------
    async def register(self, model_id: str, info: ModelInfo, *, load_now: bool = False, sync: bool = False,
                       last_used_ms: int = 0, auto_delete: bool = False, min_copies: int = 0,
                       max_copies: int = 0) -> ModelStatus:
        """Register a model (ids and ``modelInfo`` bounds checked by the instance, before its
        storage policy); with ``load_now`` load a copy, and with ``sync`` wait for it."""
        return await self._inst.register(model_id, info, load_now=load_now, sync=sync, last_used_ms=last_used_ms,
                                         auto_delete=auto_delete, min_copies=min_copies, max_copies=max_copies)

    async def unregister(self, model_id: str) -> None:
        await self._inst.unregister(check_id(model_id))

    def model_status(self, model_id: str) -> ModelStatus:
        return self._inst.model_status(check_id(model_id))

    def list_models(self) -> list[ModelStatus]:
        return self._inst.list_models()

    async def ensure_loaded(self, model_id: str, *, last_used_ms: int = 0, sync: bool = False) -> ModelStatus:
        return await self._inst.ensure_loaded(check_id(model_id), last_used_ms=last_used_ms, sync=sync)

    # -- vmodels ---------------------------------------------------------------------------------
    async def set_vmodel(self, vmodel_id: str, target: str, *, owner: str = "", update_only: bool = False,
                         force: bool = False, expected_target: str = "", model_info: ModelInfo | None = None,
                         auto_delete: bool = False, load_now: bool = False, sync: bool = False) -> VModelStatus:
        req = SetVModel(VModelId(vmodel_id), ModelId(target), owner=owner, update_only=update_only, force=force,
                        expected_target=expected_target)
        return await self._inst.set_vmodel(req, model_info=model_info, auto_delete=auto_delete, load_now=load_now,
                                           sync=sync)

    async def delete_vmodel(self, vmodel_id: str, owner: str = "") -> None:
        await self._inst.delete_vmodel(check_id(vmodel_id, "vmodel id"), owner)

    def vmodel_status(self, vmodel_id: str, owner: str = "") -> VModelStatus:
        return self._inst.vmodel_status(check_id(vmodel_id, "vmodel id"), owner)

    def list_vmodels(self) -> list[VModelStatus]:
        return self._inst.list_vmodels()
