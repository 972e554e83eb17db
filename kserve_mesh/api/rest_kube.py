"""REST routes for KServe resources on a standalone mesh (``kserve-mesh apply | get | delete``).

    POST   /mesh/v1/apply                          multi-document YAML (application/yaml) or JSON
                                                   -> [{kind, namespace, name, action}]
    GET    /mesh/v1/{plural}[?namespace=NS]        {"items": [...]} with current status
    GET    /mesh/v1/{plural}/{namespace}/{name}    one object with current status
    DELETE /mesh/v1/{plural}/{namespace}/{name}    {"deleted": {kind, namespace, name}}

``plural``: inferenceservices (isvc), predictors, servingruntimes, clusterservingruntimes (these
also answer at ``/mesh/v1/clusterservingruntimes/{name}``). Routes are registered per plural, never
as a ``{plural}`` pattern, so they cannot shadow ``/mesh/v1/models`` and the other management
routes. Errors: ``{"error": message}``; bad YAML, unknown kinds and invalid specs are 400 with the
field path in the message, a missing object 404, a name conflict 409.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from kserve_mesh.api.errors import http_status, to_mesh_error
from kserve_mesh.core.limits import redacted_path
from kserve_mesh.kube import KINDS, KubeService, is_namespaced, load_documents

MAX_BODY_BYTES = 8 << 20


def _error(exc: BaseException) -> JSONResponse:
    err = to_mesh_error(exc)
    return JSONResponse({"error": err.message, "type": type(err).__name__}, status_code=http_status(err))


def shown(obj: Any) -> Any:
    """A resource as readers see it (the infer role too): no credentials in a storage URI."""
    if isinstance(obj, dict):
        return {k: (redacted_path(v) if k in ("storageUri", "path", "url") and isinstance(v, str) else shown(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [shown(v) for v in obj]
    return obj


def router(service: KubeService) -> APIRouter:
    r = APIRouter(tags=["kserve"])

    @r.post("/mesh/v1/apply")
    async def apply(request: Request) -> Any:
        try:
            body = await request.body()
            if len(body) > MAX_BODY_BYTES:
                return JSONResponse({"error": f"body larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                return JSONResponse({"error": "the body is not UTF-8 text"}, status_code=400)
            docs = load_documents(text, request.headers.get("content-type", "application/yaml"))
            return [a.to_json() for a in await service.apply(docs)]
        except Exception as exc:  # noqa: BLE001 - every failure is an answer, never a traceback
            return _error(exc)

    for kind, (_, plural, aliases) in KINDS.items():
        for name in (plural, *aliases):
            _routes(r, service, kind, name)
    return r


def _routes(r: APIRouter, service: KubeService, kind: str, plural: str) -> None:
    base = f"/mesh/v1/{plural}"

    async def list_items(namespace: str | None = None) -> Any:
        try:
            return {"kind": f"{kind}List", "items": [shown(o) for o in await service.list(kind, namespace or None)]}
        except Exception as exc:  # noqa: BLE001
            return _error(exc)

    async def get_item(namespace: str, name: str) -> Any:
        try:
            return shown(await service.get(kind, namespace, name))
        except Exception as exc:  # noqa: BLE001
            return _error(exc)

    async def delete_item(namespace: str, name: str) -> Any:
        try:
            await service.delete(kind, namespace, name)
            return {"deleted": {"kind": kind, "namespace": namespace if is_namespaced(kind) else "", "name": name}}
        except Exception as exc:  # noqa: BLE001
            return _error(exc)

    r.add_api_route(base, list_items, methods=["GET"], include_in_schema=plural == KINDS[kind][1])
    r.add_api_route(f"{base}/{{namespace}}/{{name}}", get_item, methods=["GET"],
                    include_in_schema=plural == KINDS[kind][1])
    r.add_api_route(f"{base}/{{namespace}}/{{name}}", delete_item, methods=["DELETE"],
                    include_in_schema=plural == KINDS[kind][1])
    if not is_namespaced(kind):
        async def get_cluster(name: str) -> Any:
            return await get_item("", name)

        async def delete_cluster(name: str) -> Any:
            return await delete_item("", name)

        r.add_api_route(f"{base}/{{name}}", get_cluster, methods=["GET"], include_in_schema=False)
        r.add_api_route(f"{base}/{{name}}", delete_cluster, methods=["DELETE"], include_in_schema=False)
