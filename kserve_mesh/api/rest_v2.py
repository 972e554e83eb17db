"""V2 REST (Open Inference Protocol): inference, model metadata and readiness, server health and
metadata. Handlers convert and call ``mesh.dataplane.DataPlane``; mesh errors raised by the
metadata routes are answered by the app's one exception handler (``rest.py``).

Inference is served ahead of FastAPI as plain ASGI (``InferEndpoint.serve``, called by
``rest.serve_infer_first``), so it answers its own errors with the same ``errors.error_response``. Its body is read only once the
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
from kserve_mesh.mesh.hops import RestAnswer
from kserve_mesh.mesh.wire import HEADER_LENGTH, Routing, id_header
from kserve_mesh.protocol import rest as codec

MODEL_PATHS = ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")
_HEADER_LENGTH = HEADER_LENGTH.lower().encode("latin-1")


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


class InferEndpoint:
    """``POST /v2/models/{name}[/versions/{version}]/infer``: as a Starlette endpoint (``endpoint``,
    for the app's routes) and as plain ASGI (``serve``, what ``rest.serve_infer_first`` calls for
    every inference): the same request read, the same data plane call, the same answer; ``serve``
    only skips Starlette's request and response objects (~20 µs a request)."""

    def __init__(self, plane: DataPlane, decoder: JsonDecoder) -> None:
        self.plane, self.decoder = plane, decoder

    async def _answer(self, name: str, scope: dict[str, Any], receive: Any) -> RestAnswer:
        headers: list[tuple[bytes, bytes]] = scope["headers"]

        async def read() -> RestRequest:
            length_value = request_id = None
            for key, value in headers:
                if key == _HEADER_LENGTH and length_value is None:
                    length_value = value.decode("latin-1")
                elif key == b"x-request-id" and request_id is None:
                    request_id = value.decode("latin-1")
            length = _header_length(length_value)
            return RestRequest(await _read_body(receive), length, _raw_path(scope), headers, request_id or "")

        return await self.plane.infer_rest(name, Routing.from_http(headers), read, self.decoder)

    async def endpoint(self, request: Request) -> Response:
        # A plain Starlette route (no FastAPI dependency solving): ~40 us less per request.
        try:
            answer = await self._answer(request.path_params["name"], request.scope, request.receive)
        except Exception as exc:  # noqa: BLE001 - served ahead of the app's exception handlers
            return error_response(exc)
        return Response(answer.body, media_type=answer.media_type, headers=answer.headers)

    async def serve(self, name: str, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            answer = await self._answer(name, scope, receive)
        except Exception as exc:  # noqa: BLE001 - served ahead of the app's exception handlers
            await error_response(exc)(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": _raw_headers(answer)})
        await send({"type": "http.response.body", "body": answer.body})


def _raw_headers(answer: RestAnswer) -> list[tuple[bytes, bytes]]:
    """The headers Starlette's ``Response(answer.body, media_type=..., headers=...)`` would send."""
    raw = [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in answer.headers.items()]
    keys = {key for key, _ in raw}
    if b"content-length" not in keys:
        raw.append((b"content-length", str(len(answer.body)).encode("latin-1")))
    if b"content-type" not in keys:
        media_type = answer.media_type
        if media_type.startswith("text/") and "charset=" not in media_type.lower():
            media_type += "; charset=utf-8"
        raw.append((b"content-type", media_type.encode("latin-1")))
    return raw


async def _read_body(receive: Any) -> bytes:
    """The whole body, as Starlette's ``Request.body`` reads it; the client leaving is ``Cancelled``."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Cancelled("the client disconnected")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


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
        return JSONResponse(codec.render_model_metadata(meta), headers=dict([id_header(model_id)]))

    async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
        model_id, is_ready = await plane.model_ready(name, route_of(request))
        return JSONResponse(codec.render_model_ready(model_id, is_ready), status_code=200 if is_ready else 503)

    for path in MODEL_PATHS:
        api.add_api_route(path, model_metadata, methods=["GET"])
        api.add_api_route(path + "/ready", model_ready, methods=["GET"])
    return api
