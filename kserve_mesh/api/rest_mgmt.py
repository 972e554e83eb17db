"""The management REST API under ``/mesh/v1``, one to one with ``mmesh.ModelMesh``.

    GET    /mesh/v1/models                       {"models": [status]}
    PUT    /mesh/v1/models/{id}                  register (RegisterBody) -> status
    GET    /mesh/v1/models/{id}                  status (404 with the status and an error if unknown)
    DELETE /mesh/v1/models/{id}                  unregister -> {}
    POST   /mesh/v1/models/{id}/ensure-loaded    (EnsureLoadedBody) -> status
    GET    /mesh/v1/vmodels                      {"vmodels": [vmodel status]}
    PUT    /mesh/v1/vmodels/{id}                 setVModel (SetVModelBody) -> vmodel status
    GET    /mesh/v1/vmodels/{id}[?owner=]        vmodel status (404 if unknown)
    DELETE /mesh/v1/vmodels/{id}[?owner=]        deleteVModel -> {}
    GET    /mesh/v1/status                       the instance's status (the server's)

Handlers convert and call ``mesh.management.Management``; errors go to the app's exception handler.
Listings are read by the infer role too, so a model URL shows no credentials (``core.limits``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from kserve_mesh.core.limits import redacted_key, redacted_path
from kserve_mesh.core.records import ModelInfo, ModelState, VModelState
from kserve_mesh.mesh.management import Management
from kserve_mesh.mesh.status import ModelStatus, VModelStatus


def model_status_json(s: ModelStatus) -> dict[str, Any]:
    out: dict[str, Any] = {
        "modelId": s.model_id,
        "status": s.state.name,
        "errors": list(s.errors),
        "modelCopyInfos": [{"location": c.location, "copyStatus": c.state.name, "time": c.time_ms}
                           for c in s.copies],
        "sizeBytes": s.size_bytes,
        "lastUsedTime": s.last_used_ms,
        "copies": sum(1 for c in s.copies if c.state is ModelState.LOADED),
    }
    if s.info is not None:
        # Whoever may read a listing (the infer role too) sees no credentials in a model URL.
        out["modelInfo"] = {"type": s.info.type, "path": redacted_path(s.info.path), "key": redacted_key(s.info.key)}
    return out


def vmodel_status_json(s: VModelStatus) -> dict[str, Any]:
    return {
        "vModelId": s.vmodel_id,
        "status": s.state.name,
        "activeModelId": s.active,
        "targetModelId": s.target,
        "owner": s.owner,
        "activeModelStatus": model_status_json(s.active_status) if s.active_status else None,
        "targetModelStatus": model_status_json(s.target_status) if s.target_status else None,
    }


class ModelInfoBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    path: str = ""
    key: str = ""

    def info(self) -> ModelInfo:
        return ModelInfo(self.type, self.path, self.key)


class RegisterBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    modelInfo: ModelInfoBody
    loadNow: bool = False
    sync: bool = False
    lastUsedTime: int = Field(default=0, ge=0)
    autoDelete: bool = False
    minCopies: int = Field(default=0, ge=0)
    maxCopies: int = Field(default=0, ge=0)


class EnsureLoadedBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lastUsedTime: int = Field(default=0, ge=0)
    sync: bool = False


class SetVModelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    targetModelId: str
    owner: str = ""
    updateOnly: bool = False
    modelInfo: ModelInfoBody | None = None
    autoDeleteTargetModel: bool = False
    loadNow: bool = False
    force: bool = False
    sync: bool = False
    expectedTargetModelId: str = ""


def _found(body: dict[str, Any], not_found: bool, what: str) -> JSONResponse:
    """A status as the answer; one of an unknown id is 404 and says so (the status still comes along)."""
    if not_found:
        return JSONResponse({**body, "error": f"{what} not found"}, status_code=404)
    return JSONResponse(body)


def router(mgmt: Management, status: Callable[[], dict[str, Any]] | None = None) -> APIRouter:
    api = APIRouter(prefix="/mesh/v1")

    @api.get("/models")
    async def list_models() -> dict[str, Any]:
        return {"models": [model_status_json(s) for s in mgmt.list_models()]}

    @api.put("/models/{model_id}")
    async def register(model_id: str, body: RegisterBody) -> JSONResponse:
        return JSONResponse(model_status_json(await mgmt.register(
            model_id, body.modelInfo.info(), load_now=body.loadNow, sync=body.sync, last_used_ms=body.lastUsedTime,
            auto_delete=body.autoDelete, min_copies=body.minCopies, max_copies=body.maxCopies)))

    @api.get("/models/{model_id}")
    async def get_model(model_id: str) -> JSONResponse:
        status = mgmt.model_status(model_id)
        return _found(model_status_json(status), status.state is ModelState.NOT_FOUND, f"model '{model_id}'")

    @api.delete("/models/{model_id}")
    async def unregister(model_id: str) -> JSONResponse:
        await mgmt.unregister(model_id)
        return JSONResponse({})

    @api.post("/models/{model_id}/ensure-loaded")
    async def ensure_loaded(model_id: str, body: EnsureLoadedBody | None = None) -> JSONResponse:
        body = body or EnsureLoadedBody()
        status = await mgmt.ensure_loaded(model_id, last_used_ms=body.lastUsedTime, sync=body.sync)
        return JSONResponse(model_status_json(status))

    @api.get("/vmodels")
    async def list_vmodels() -> dict[str, Any]:
        return {"vmodels": [vmodel_status_json(s) for s in mgmt.list_vmodels()]}

    @api.put("/vmodels/{vmodel_id}")
    async def set_vmodel(vmodel_id: str, body: SetVModelBody) -> JSONResponse:
        return JSONResponse(vmodel_status_json(await mgmt.set_vmodel(
            vmodel_id, body.targetModelId, owner=body.owner, update_only=body.updateOnly, force=body.force,
            expected_target=body.expectedTargetModelId, model_info=body.modelInfo.info() if body.modelInfo else None,
            auto_delete=body.autoDeleteTargetModel, load_now=body.loadNow, sync=body.sync)))

    @api.get("/vmodels/{vmodel_id}")
    async def get_vmodel(vmodel_id: str, owner: str = "") -> JSONResponse:
        status = mgmt.vmodel_status(vmodel_id, owner)
        return _found(vmodel_status_json(status), status.state is VModelState.NOT_FOUND, f"vmodel '{vmodel_id}'")

    @api.delete("/vmodels/{vmodel_id}")
    async def delete_vmodel(vmodel_id: str, owner: str = "") -> JSONResponse:
        await mgmt.delete_vmodel(vmodel_id, owner)
        return JSONResponse({})

    @api.get("/status")
    async def instance_status() -> dict[str, Any]:
        return status() if status is not None else {}

    return api
