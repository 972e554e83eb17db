"""V2 REST (Open Inference Protocol): inference, model metadata and readiness, server health and
metadata. Handlers convert and call ``mesh.dataplane.DataPlane``; mesh errors raised by the
metadata routes are answered by the app's one exception handler (``rest.py``).

Inference is a plain Starlette route served ahead of FastAPI (``rest.serve_infer_first``), so it
answers its own errors with the same ``errors.error_response``. Its body is read only once the
model is known, becomes a ``RestHop`` in the data plane (decoded here, large bodies by the ``JsonDecoder``'s worker
processes, or forwarded to a peer as the bytes it came with) and its answer is sent as rendered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from kserve_mesh.api.errors import error_response
from kserve_mesh.api.rest_decode import JsonDecoder
from kserve_mesh.core.errors import Cancelled, InvalidArgument
from kserve_mesh.mesh.dataplane import DataPlane, RestRequest
from kserve_mesh.mesh.wire import HEADER_LENGTH, MODEL_ID, Routing
from kserve_mesh.protocol import rest as codec

MODEL_PATHS = ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")


def route_of(request: Request) -> Routing:
    return Routing.from_http(request.scope["headers"])


async def read_body(request: Request) -> bytes:
    try:
        return await request.body()
    except ClientDisconnect:
        raise Cancelled("the client disconnected") from None


def _header_length(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        raise InvalidArgument(f"header Inference-Header-Content-Length must be an integer, got '{value[:32]}'") from None


def _raw_path(scope: dict[str, Any]) -> str:
    """The path as it came, to forward the request as it came ('' when it cannot be)."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8", "replace")
    return raw.decode("latin-1") if raw.isascii() else ""


def infer_endpoint(plane: DataPlane, decoder: JsonDecoder) -> Callable[[Request], Awaitable[Response]]:
    """``POST /v2/models/{name}[/versions/{version}]/infer``."""

    async def infer(request: Request) -> Response:
        # A plain Starlette route (no FastAPI dependency solving): ~40 us less per request.
        async def read() -> RestRequest:
            length = _header_length(request.headers.get(HEADER_LENGTH))
            body = await read_body(request)
            scope = request.scope
            return RestRequest(body, length, _raw_path(scope), scope["headers"],
                               request.headers.get("x-request-id", ""))

        try:
            answer = await plane.infer_rest(request.path_params["name"], route_of(request), read, decoder)
        except Exception as exc:  # noqa: BLE001 - served ahead of the app's exception handlers
            return error_response(exc)
        return Response(answer.body, media_type=answer.media_type, headers=answer.headers)

    return infer


def infer_routes(infer: Callable[[Request], Awaitable[Response]]) -> list[Route]:
    return [Route(path + "/infer", infer, methods=["POST"]) for path in MODEL_PATHS]


def router(plane: DataPlane) -> APIRouter:
    """Health, server metadata, model metadata and readiness."""
    api = APIRouter()

    @api.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": plane.live()}

    @api.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        ok = plane.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @api.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        meta = plane.server_metadata()
        return {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}

    async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
        model_id, meta = await plane.model_metadata(name, route_of(request))
        return JSONResponse(codec.render_model_metadata(meta), headers={MODEL_ID: model_id})

    async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
        model_id, is_ready = await plane.model_ready(name, route_of(request))
        return JSONResponse(codec.render_model_ready(model_id, is_ready), status_code=200 if is_ready else 503)

    for path in MODEL_PATHS:
        api.add_api_route(path, model_metadata, methods=["GET"])
        api.add_api_route(path + "/ready", model_ready, methods=["GET"])
    return api
