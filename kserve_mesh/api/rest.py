"""The REST API of an instance, assembled: V2 (``rest_v2.py``), the repository extension
(``rest_repository.py``), management under ``/mesh/v1`` (``rest_mgmt.py``), the peers' forwarding
route (``rest_peer.py``), and any extra routers (KServe resources on a standalone mesh).

Errors are ``{"error": message, "type": kind}`` with the status from ``errors.py``, answered by
one exception handler for mesh errors (and one each for FastAPI's validation errors, unknown
routes, and bugs). Inference routes are served ahead of FastAPI's middleware
(``serve_infer_first``) and answer their own errors with the same ``errors.error_response``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from kserve_mesh.api import rest_generate, rest_mgmt, rest_peer, rest_repository, rest_v2
from kserve_mesh.api.errors import error_response
from kserve_mesh.api.openapi_v2 import add_inference_routes
from kserve_mesh.api.rest_decode import JsonDecoder
from kserve_mesh.core.errors import MeshError
from kserve_mesh.mesh.dataplane import DataPlane
from kserve_mesh.mesh.management import Management
from kserve_mesh.mesh.wire import FORWARD_PATH


def build_app(plane: DataPlane, mgmt: Management, version: str, *,
              extra_status: Callable[[], dict[str, Any]] | None = None,
              routers: Sequence[APIRouter] = ()) -> FastAPI:
    decoder = JsonDecoder()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await decoder.close()

    app = FastAPI(title="kserve-mesh", version=version, docs_url="/docs", redoc_url=None, lifespan=lifespan)
    app.state.decoder = decoder
    _handle_errors(app)
    for router in routers:
        app.include_router(router)
    app.state.infer = rest_v2.InferEndpoint(plane, decoder)
    app.state.forwarded_infer = rest_peer.forwarded_endpoint(plane)
    app.router.routes[:0] = [*rest_peer.routes(app.state.forwarded_infer),
                             *rest_v2.infer_routes(app.state.infer.endpoint)]
    app.include_router(rest_v2.router(plane))
    app.include_router(rest_generate.router(plane))
    app.include_router(rest_repository.router(plane))
    app.include_router(rest_mgmt.router(mgmt, extra_status))
    add_inference_routes(app)
    return app


def _handle_errors(app: FastAPI) -> None:
    """The app's exception handlers: every error answered once, as JSON."""

    @app.exception_handler(MeshError)
    async def _mesh(request: Request, exc: MeshError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
        return JSONResponse({"error": "invalid request: " + "; ".join(parts)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404:
            message = f"no such route: {request.method} {request.url.path}"
        return JSONResponse({"error": message}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)  # logged there with its traceback; the client gets a short 500


_INFER_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/[^/]+)?/infer$")


def serve_infer_first(app: FastAPI) -> Any:
    """The ASGI app to serve: ``POST .../infer`` (and the peers' forwarding route) go straight to
    their handlers, everything else through FastAPI. Those handlers answer their own errors, so
    FastAPI's middleware layers (about a sixth of an instance's CPU per request under load,
    benchmarks/density.py) only serve the routes that need them."""
    infer = app.state.infer.serve
    forwarded_infer = app.state.forwarded_infer

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _INFER_PATH.match(scope["path"])
            if match is not None:
                await infer(match.group("name"), scope, receive, send)
                return
            if scope["path"] == FORWARD_PATH:
                response = await forwarded_infer(Request(scope, receive))
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    return asgi
