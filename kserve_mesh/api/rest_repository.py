"""The V2 model repository extension over REST: index, load, unload (KServe's and Triton's routes).

    POST /v2/repository/index                 [{"name", "state", "reason"?}]; body {"ready": true} optional
    POST /v2/repository/models/{name}/load    {"name", "load": true} once loaded here (else 503 with why)
    POST /v2/repository/models/{name}/unload  {"name", "unload": true}

Handlers convert and call ``mesh.dataplane.DataPlane``; errors go to the app's exception handler.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from kserve_mesh.api.rest_v2 import read_body, route_of
from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.core.limits import loads_json
from kserve_mesh.mesh.dataplane import DataPlane


async def _ready_only(request: Request) -> bool:
    raw = await read_body(request)
    if not raw.strip():
        return False
    try:
        body = loads_json(raw, "the repository index body")
    except ValueError:
        raise InvalidArgument("repository index body must be JSON") from None
    return bool(body.get("ready", False)) if isinstance(body, dict) else False


def router(plane: DataPlane) -> APIRouter:
    api = APIRouter()

    @api.post("/v2/repository/index")
    async def repository_index(request: Request) -> JSONResponse:
        out: list[dict[str, Any]] = []
        for entry in plane.repository_index(await _ready_only(request)):
            item = {"name": entry.name, "state": entry.state}
            if entry.reason:
                item["reason"] = entry.reason
            out.append(item)
        return JSONResponse(out)

    @api.post("/v2/repository/models/{name}/load")
    async def repository_load(request: Request, name: str) -> JSONResponse:
        return JSONResponse({"name": await plane.repository_load(name, route_of(request)), "load": True})

    @api.post("/v2/repository/models/{name}/unload")
    async def repository_unload(request: Request, name: str) -> JSONResponse:
        return JSONResponse({"name": await plane.repository_unload(name, route_of(request)), "unload": True})

    return api
