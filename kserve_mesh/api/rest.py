"""KServe V2 REST and the management REST API, served natively (no proxy sidecar).

V2 routes follow the Open Inference Protocol, including the binary tensor data extension and the
repository extension. Errors are ``{"error": "<message>"}`` with the status from ``errors.py``.
Management routes live under ``/mesh/v1`` and mirror ``mmesh.ModelMesh`` one to one.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from google.protobuf.message import DecodeError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from kserve_mesh.api.errors import http_status, to_mesh_error
from kserve_mesh.api.grpc_v2 import (
    EXTENSIONS,
    INFER_METHOD,
    SERVER_NAME,
    check_routing,
    raise_load_failed,
    repository_state,
)
from kserve_mesh.api.openapi_v2 import add_inference_routes
from kserve_mesh.api.rest_decode import OFFLOAD_BYTES, JsonDecoder
from kserve_mesh.api.telemetry import Telemetry
from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.core.ids import ModelId, VModelId, check_id
from kserve_mesh.core.limits import loads_json, redacted_key, redacted_path
from kserve_mesh.core.records import InstanceRecord, ModelInfo
from kserve_mesh.core.vmodel import SetVModel
from kserve_mesh.mesh.http_peer import FORWARD_PATH, FORWARDED, PROTOBUF, TIMEOUT_HEADER, carried_headers, header_safe
from kserve_mesh.mesh.instance import Instance, ModelStatus, VModelStatus
from kserve_mesh.protocol import rest as codec
from kserve_mesh.protocol import v2

log = logging.getLogger(__name__)

HEADER_LENGTH = "inference-header-content-length"
REST_INFER_METHOD = "POST /v2/models/{name}/infer"
DEFAULT_TIMEOUT_S = 60.0
HTTP_CODES = {200: "OK", 400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "FAILED_PRECONDITION",
              429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
              507: "RESOURCE_EXHAUSTED"}


def error_response(exc: BaseException) -> JSONResponse:
    if isinstance(exc, ClientDisconnect):  # nobody to answer (the client left, or a body limit closed it)
        return JSONResponse({"error": "the client disconnected"}, status_code=499)
    err = to_mesh_error(exc)
    return JSONResponse({"error": err.message, "type": type(err).__name__}, status_code=http_status(err))


def model_status_json(s: ModelStatus) -> dict[str, Any]:
    out: dict[str, Any] = {
        "modelId": s.model_id,
        "status": s.state.name,
        "errors": list(s.errors),
        "modelCopyInfos": [{"location": c.location, "copyStatus": c.state.name, "time": c.time_ms}
                           for c in s.copies],
        "sizeBytes": s.size_bytes,
        "lastUsedTime": s.last_used_ms,
        "copies": sum(1 for c in s.copies if c.state.name == "LOADED"),
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


def _timeout_s(headers: Any) -> float:
    """The time a request may take: a forwarded one carries the sender's remaining time."""
    value = headers.get(TIMEOUT_HEADER)
    if value is None:
        return DEFAULT_TIMEOUT_S
    try:
        return min(DEFAULT_TIMEOUT_S, max(0.001, int(value) / 1000))
    except ValueError:
        raise InvalidArgument(f"header {TIMEOUT_HEADER} must be an integer number of ms, got '{value}'") from None


class RestHop:
    """A V2 REST inference as the router moves it: decoded and run here, or forwarded as raw bytes
    over HTTP to a peer's REST port (no decoding here at all); the gRPC hop is the fallback when
    the model id cannot travel in an HTTP header."""

    __slots__ = ("body", "carried", "decoder", "instance", "length", "model_id", "options", "path", "req")

    def __init__(self, instance: Instance, model_id: ModelId, body: bytes, length: int | None, request: Request,
                 decoder: JsonDecoder) -> None:
        self.instance, self.model_id, self.body, self.length = instance, model_id, body, length
        self.decoder = decoder
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        self.path = raw_path.decode("latin-1") if raw_path.isascii() else ""
        self.carried = carried_headers(request.headers)
        self.req: Any = None
        self.options: Any = None

    def prepare(self) -> None:
        """Decode a small body now (so a bad request fails before it causes a load); a large one
        is decoded by ``run`` in a decoding process, never on the event loop (``rest_decode.py``)."""
        if self.req is None and len(self.body) < OFFLOAD_BYTES:
            self.req, self.options = codec.parse_infer_request(self.body, self.model_id, header_length=self.length)

    async def _decode(self) -> None:
        self.prepare()
        if self.req is None:
            self.req, self.options = await self.decoder.decode(self.body, self.model_id, self.length)

    def _render(self, resp: Any) -> Response:
        payload, headers = codec.render_infer_response(resp, self.options)
        headers = {**headers, "mm-model-id": self.model_id}
        media = headers.pop("content-type", "application/json")
        return Response(payload, media_type=media, headers=headers)

    async def run(self, timeout_s: float) -> Response:
        if self.req is None:
            self.prepare()
            if self.req is None:
                await self._decode()
        self.req.model_name = self.model_id
        return self._render(await self.instance.runtime.infer(self.req, timeout=timeout_s))

    async def forward(self, peer: InstanceRecord, load: bool, timeout_s: float) -> Response:
        peers = self.instance.peers
        assert peers is not None
        if not (self.path and header_safe(self.model_id)):
            if self.req is None:
                await self._decode()
            return self._render(await peers.infer(peer.endpoint, self.model_id, self.req, timeout_s, load=load))
        answer = await peers.infer_http(peer, self.model_id, self.path, self.body, self.carried, timeout_s, load=load)
        headers = {"mm-model-id": self.model_id}
        if (length := answer.headers.get(HEADER_LENGTH)) is not None:
            headers[HEADER_LENGTH] = length
        return Response(answer.body, media_type=answer.headers.get("content-type", "application/json"), headers=headers)


def build_app(instance: Instance, version: str, *, extra_status: Any = None,
              telemetry: Telemetry | None = None, routers: Sequence[APIRouter] = ()) -> FastAPI:
    decoder = JsonDecoder()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await decoder.close()

    app = FastAPI(title="kserve-mesh", version=version, docs_url="/docs", redoc_url=None, lifespan=lifespan)
    app.state.decoder = decoder
    for router in routers:
        app.include_router(router)

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
    async def _any(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    # -- health and server metadata --------------------------------------------------------------
    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        ok = instance.serving_ready
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": version, "extensions": EXTENSIONS}

    async def target(request: Request, name: str, *, forwarded: bool = False) -> ModelId:
        h = request.headers
        model_id, vmodel_id = h.get("mm-model-id", ""), h.get("mm-vmodel-id", "")
        check_routing(name, model_id, vmodel_id)
        return await instance.lookup(name, model_id=model_id, vmodel_id=vmodel_id, forwarded=forwarded)

    # -- models ----------------------------------------------------------------------------------
    async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
        try:
            model_id = await target(request, name)
            meta = await instance.model_metadata(model_id)
            return JSONResponse(codec.render_model_metadata(meta), headers={"mm-model-id": model_id})
        except Exception as exc:  # noqa: BLE001
            return error_response(exc)

    async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
        try:
            model_id = await target(request, name)
            is_ready = instance.is_loaded(model_id)
            return JSONResponse({"name": model_id, "ready": is_ready}, status_code=200 if is_ready else 503)
        except Exception as exc:  # noqa: BLE001
            return error_response(exc)

    async def infer(request: Request) -> Response:
        # A plain Starlette route (no FastAPI dependency solving): ~40 us less per request.
        name = request.path_params["name"]
        start = time.perf_counter()
        response = await _infer(request, name)
        if telemetry is not None:
            telemetry.request(REST_INFER_METHOD, HTTP_CODES.get(response.status_code, str(response.status_code)),
                              time.perf_counter() - start, name)
        return response

    async def _infer(request: Request, name: str) -> Response:
        try:
            h = request.headers
            forwarded = FORWARDED in h
            model_id = await target(request, name, forwarded=forwarded)
            body = await request.body()
            header_length = h.get(HEADER_LENGTH)
            try:
                length = int(header_length) if header_length is not None else None
            except ValueError:
                raise InvalidArgument(f"header Inference-Header-Content-Length must be an integer, got '{header_length}'") from None
            hop = RestHop(instance, model_id, body, length, request, decoder)
            return await instance.dispatch(model_id, hop, _timeout_s(h), forwarded=forwarded,
                                           balanced=h.get("mm-balanced") == "true")
        except Exception as exc:  # noqa: BLE001
            return error_response(exc)

    async def forwarded_infer(request: Request) -> Response:
        """A V2 gRPC inference forwarded by a peer as a serialized ``ModelInferRequest``
        (``PeerPool.infer_proto``): served here, never forwarded again."""
        start = time.perf_counter()
        model_id = ""
        try:
            h = request.headers
            if FORWARDED not in h or not h.get("mm-model-id"):
                raise InvalidArgument(f"{FORWARD_PATH} takes requests forwarded by a mesh instance "
                                      "(mm-forwarded and mm-model-id headers)")
            model_id = await instance.lookup(model_id=check_id(h["mm-model-id"], "header mm-model-id"), forwarded=True)
            try:
                req = v2.ModelInferRequest.FromString(await request.body())
            except DecodeError as exc:
                raise InvalidArgument(f"body is not a serialized ModelInferRequest: {exc}") from None
            resp = await instance.infer(model_id, req, _timeout_s(h), forwarded=True)
            response: Response = Response(resp.SerializeToString(), media_type=PROTOBUF,
                                          headers={"mm-model-id": model_id})
        except Exception as exc:  # noqa: BLE001
            response = error_response(exc)
        if telemetry is not None:
            telemetry.request(INFER_METHOD, HTTP_CODES.get(response.status_code, str(response.status_code)),
                              time.perf_counter() - start, model_id)
        return response

    app.router.routes.insert(0, Route(FORWARD_PATH, forwarded_infer, methods=["POST"]))
    app.state.forwarded_infer = forwarded_infer

    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_api_route(prefix, model_metadata, methods=["GET"])
        app.add_api_route(prefix + "/ready", model_ready, methods=["GET"])
        app.router.routes.insert(0, Route(prefix + "/infer", infer, methods=["POST"]))
    app.state.infer = infer

    # -- repository extension --------------------------------------------------------------------
    @app.post("/v2/repository/index")
    async def repository_index(request: Request) -> Response:
        raw = await request.body()
        ready_only = False
        if raw.strip():
            try:
                body = loads_json(raw, "the repository index body")
            except InvalidArgument as exc:
                return error_response(exc)
            except ValueError:
                return error_response(InvalidArgument("repository index body must be JSON"))
            ready_only = bool(body.get("ready", False)) if isinstance(body, dict) else False
        out = []
        for s in instance.list_models():
            if ready_only and s.state.name != "LOADED":
                continue
            item = {"name": s.model_id, "state": repository_state(s.state.name)}
            if s.errors:
                item["reason"] = "; ".join(s.errors)
            out.append(item)
        return JSONResponse(out)

    @app.post("/v2/repository/models/{name}/load")
    async def repository_load(request: Request, name: str) -> Response:
        try:
            model_id = await target(request, name)
            status = await instance.ensure_loaded(model_id, sync=True)
            if status.state.name != "LOADED":
                raise_load_failed(model_id, status.errors)
            return JSONResponse({"name": model_id, "load": True})
        except Exception as exc:  # noqa: BLE001
            return error_response(exc)

    @app.post("/v2/repository/models/{name}/unload")
    async def repository_unload(request: Request, name: str) -> Response:
        try:
            model_id = await target(request, name)
            await instance.unload_copy(model_id)
            return JSONResponse({"name": model_id, "unload": True})
        except Exception as exc:  # noqa: BLE001
            return error_response(exc)

    # -- management (mirrors mmesh.ModelMesh) ----------------------------------------------------
    @app.get("/mesh/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"models": [model_status_json(s) for s in instance.list_models()]}

    @app.put("/mesh/v1/models/{model_id}")
    async def register(model_id: str, body: RegisterBody) -> Response:
        try:
            info = ModelInfo(body.modelInfo.type, body.modelInfo.path, body.modelInfo.key)
            status = await instance.register(model_id, info, load_now=body.loadNow, sync=body.sync,
                                             last_used_ms=body.lastUsedTime, auto_delete=body.autoDelete,
                                             min_copies=body.minCopies, max_copies=body.maxCopies)
            return JSONResponse(model_status_json(status))
        except Exception as exc:  # noqa: BLE001
            return error_response(exc)

    @app.get("/mesh/v1/models/{model_id}")
    async def get_model(model_id: str) -> Response:
        try:
            check_id(model_id)
        except InvalidArgument as exc:
            return error_response(exc)
        status = instance.model_status(model_id)
        code = 404 if status.state.name == "NOT_FOUND" else 200
        body = model_status_json(status)
        if code == 404:
            body["error"] = f"model '{model_id}' not found"
        return JSONResponse(body, status_code=code)

    @app.delete("/mesh/v1/models/{model_id}")
    async def unregister(model_id: str) -> Response:
        try:
            await instance.unregister(check_id(model_id))
            return JSONResponse({})
        except Exception as exc:  # noqa: BLE001
            return error_response(exc)

    @app.post("/mesh/v1/models/{model_id}/ensure-loaded")
    async def ensure_loaded(model_id: str, body: EnsureLoadedBody | None = None) -> Response:
        body = body or EnsureLoadedBody()
        try:
            status = await instance.ensure_loaded(check_id(model_id), last_used_ms=body.lastUsedTime, sync=body.sync)
            return JSONResponse(model_status_json(status))
        except Exception as exc:  # noqa: BLE001
            return error_response(exc)

    @app.get("/mesh/v1/vmodels")
    async def list_vmodels() -> dict[str, Any]:
        return {"vmodels": [vmodel_status_json(instance.vmodel_status(v)) for v in sorted(instance.registry.vmodels)]}

    @app.put("/mesh/v1/vmodels/{vmodel_id}")
    async def set_vmodel(vmodel_id: str, body: SetVModelBody) -> Response:
        try:
            req = SetVModel(VModelId(vmodel_id), ModelId(body.targetModelId), owner=body.owner,
                            update_only=body.updateOnly, force=body.force,
                            expected_target=body.expectedTargetModelId)
            info = ModelInfo(body.modelInfo.type, body.modelInfo.path, body.modelInfo.key) if body.modelInfo else None
            status = await instance.set_vmodel(req, model_info=info, auto_delete=body.autoDeleteTargetModel,
                                               load_now=body.loadNow, sync=body.sync)
            return JSONResponse(vmodel_status_json(status))
        except Exception as exc:  # noqa: BLE001
            return error_response(exc)

    @app.get("/mesh/v1/vmodels/{vmodel_id}")
    async def get_vmodel(vmodel_id: str, owner: str = "") -> Response:
        try:
            check_id(vmodel_id, "vmodel id")
        except InvalidArgument as exc:
            return error_response(exc)
        status = instance.vmodel_status(vmodel_id, owner)
        body = vmodel_status_json(status)
        if status.state.name == "NOT_FOUND":
            body["error"] = f"vmodel '{vmodel_id}' not found"
            return JSONResponse(body, status_code=404)
        return JSONResponse(body)

    @app.delete("/mesh/v1/vmodels/{vmodel_id}")
    async def delete_vmodel(vmodel_id: str, owner: str = "") -> Response:
        try:
            await instance.delete_vmodel(check_id(vmodel_id, "vmodel id"), owner)
            return JSONResponse({})
        except Exception as exc:  # noqa: BLE001
            return error_response(exc)

    @app.get("/mesh/v1/status")
    async def status() -> dict[str, Any]:
        return extra_status() if extra_status is not None else {}

    add_inference_routes(app)
    return app


_INFER_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/[^/]+)?/infer$")


def serve_infer_first(app: FastAPI) -> Any:
    """The ASGI app to serve: ``POST .../infer`` goes straight to its handler, everything else
    through FastAPI. The inference handler catches its own errors, so FastAPI's middleware layers
    (about a sixth of an instance's CPU per request under load, benchmarks/density.py) only serve
    the routes that need them."""
    infer = app.state.infer
    forwarded_infer = app.state.forwarded_infer

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _INFER_PATH.match(scope["path"])
            if match is not None:
                scope["path_params"] = {"name": match.group("name")}
                response = await infer(Request(scope, receive))
                await response(scope, receive, send)
                return
            if scope["path"] == FORWARD_PATH:
                response = await forwarded_infer(Request(scope, receive))
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    return asgi
