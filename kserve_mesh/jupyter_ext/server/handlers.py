"""The REST routes the JupyterLab extension calls, under ``<base_url>/kserve-mesh/``:

    GET    overview                 models, vmodels and the instance's status (one poll of the sidebar)
    PUT    models/{id}              register: {"type", "path", "key", "loadNow"}
    DELETE models/{id}              unregister
    GET    models/{name}/example    a V2 request shaped from the model's metadata
    POST   deploy                   {"path", "modelId"?, "type"?}: a file in Jupyter's root dir, loaded
    POST   apply                    {"yaml"}: InferenceService (and related) YAML
    POST   infer/{name}             {"inputs": …} (a V2 request, an array, or name -> array)

Every handler needs Jupyter's authentication (``@tornado.web.authenticated``; APIHandler checks XSRF
on cookie-authenticated writes). Mesh calls are blocking SDK calls, so they run on a worker thread.
Errors answer ``{"error": <message in full>, "type": <error class>, "meshStatus": <HTTP status of
the mesh, 0 when it was not reached>}``: the mesh's own 4xx/5xx pass through; a mesh that cannot be
reached, or that refuses the proxy's credentials (401/403), is 502; a wait that ran out is 504.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from kserve_mesh.client import InvalidInputError, LoadFailedError, LoadTimeoutError, MeshClientError, tensors
from kserve_mesh.jupyter_ext.server.config import MeshConfig
from kserve_mesh.jupyter_ext.server.paths import (
    PathRefused,
    is_storage_uri,
    model_id_of,
    model_type_of,
    resolve_in_root,
)

T = TypeVar("T")
PREFIX = "kserve-mesh"


class MeshHandler(APIHandler):
    """Shared parts: the mesh config, worker-thread calls, JSON bodies and JSON errors."""

    def initialize(self, mesh: MeshConfig, root_dir: str, allow_hidden: bool) -> None:
        self.mesh = mesh
        self.root_dir = root_dir
        self.allow_hidden = allow_hidden

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))

    def body(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.request.body or b"{}")
        except ValueError as exc:
            raise PathRefused(400, f"the request body is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise PathRefused(400, "the request body must be a JSON object")
        return doc

    def answer(self, doc: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(doc))

    def error(self, status: int, message: str, kind: str, mesh_status: int = 0) -> None:
        self.answer({"error": message, "type": kind, "meshStatus": mesh_status}, status)

    async def guarded(self, action: Callable[[], Any]) -> None:
        """Run ``action`` (a coroutine function) and turn every expected failure into a JSON error."""
        try:
            await action()
        except PathRefused as exc:
            self.error(exc.status, exc.message, "PathRefused")
        except MeshClientError as exc:
            self.error(_status_for(exc), exc.message, type(exc).__name__, exc.status)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Jupyter's own refusals (403 XSRF, 404, 500) as JSON with the same "error" key.
        exc_info = kwargs.get("exc_info")
        message = self._reason
        if exc_info and isinstance(exc_info[1], tornado.web.HTTPError) and exc_info[1].log_message:
            message = exc_info[1].log_message % exc_info[1].args if exc_info[1].args else exc_info[1].log_message
        elif exc_info and not isinstance(exc_info[1], tornado.web.HTTPError):
            message = f"{type(exc_info[1]).__name__}: {exc_info[1]}"
        self.error(status_code, str(message), "JupyterError")

    def model_path(self, path: str) -> str:
        """``path`` as the mesh should see it: a storage URI as is, a local path confined to the root dir."""
        if not path or is_storage_uri(path):
            return path
        local = path[len("file://"):] if path.lower().startswith("file://") else path
        return str(resolve_in_root(self.root_dir, local, allow_hidden=self.allow_hidden))


def _status_for(exc: MeshClientError) -> int:
    if isinstance(exc, LoadTimeoutError):
        return 504
    if exc.status == 0:  # raised on this side: bad input, a failed load seen while waiting, or no mesh
        if isinstance(exc, InvalidInputError):
            return 400
        return 422 if isinstance(exc, LoadFailedError) else 502
    if exc.status in (401, 403) or not 400 <= exc.status < 600:
        return 502  # the mesh refused *our* credentials: not the browser's fault
    return exc.status


class OverviewHandler(MeshHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        async def action() -> None:
            client = self.mesh.client()
            models = await self.run(client.models)
            vmodels, status = await asyncio.gather(self.run(client.vmodels), self.run(client.server_status))
            self.answer({"url": _without_userinfo(client.url), "models": models, "vmodels": vmodels, "status": status,
                         "time": int(time.time() * 1000)})

        await self.guarded(action)


class ModelHandler(MeshHandler):
    @tornado.web.authenticated
    async def put(self, model_id: str) -> None:
        async def action() -> None:
            body = self.body()
            path = self.model_path(str(body.get("path") or "").strip())
            status = await self.run(self.mesh.client().register, model_id, str(body.get("type") or "").strip(),
                                    path, str(body.get("key") or ""), load_now=bool(body.get("loadNow", True)))
            self.answer({"modelId": model_id, "path": path, "status": status})

        await self.guarded(action)

    @tornado.web.authenticated
    async def delete(self, model_id: str) -> None:
        async def action() -> None:
            await self.run(self.mesh.client().unregister, model_id)
            self.answer({"modelId": model_id, "deleted": True})

        await self.guarded(action)


class ExampleHandler(MeshHandler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        async def action() -> None:
            self.answer(await self.run(self.mesh.client().example_request, name))

        await self.guarded(action)


class DeployHandler(MeshHandler):
    """A model file (or folder) of Jupyter's root dir: register it and wait until it is loaded."""

    @tornado.web.authenticated
    async def post(self) -> None:
        async def action() -> None:
            body = self.body()
            real = resolve_in_root(self.root_dir, str(body.get("path") or ""), allow_hidden=self.allow_hidden)
            model_type = str(body.get("type") or "").strip() or model_type_of(real)
            if not model_type:
                raise PathRefused(400, f"cannot tell the model type of '{body.get('path')}' from its extension; "
                                       "choose one (sklearn, xgboost, lightgbm, onnx, pytorch, tensorflow, keras, "
                                       "openvino_ir, python, string)")
            model_id = str(body.get("modelId") or "").strip() or model_id_of(real)
            client = self.mesh.client()
            await self.run(client.register, model_id, model_type, str(real), load_now=True)
            status = await self.run(client.wait_until_loaded, model_id, self.mesh.load_timeout_s, poll_s=0.2)
            self.answer({"modelId": model_id, "type": model_type, "path": str(real), "status": status})

        await self.guarded(action)


class ApplyHandler(MeshHandler):
    @tornado.web.authenticated
    async def post(self) -> None:
        async def action() -> None:
            text = self.body().get("yaml")
            if not isinstance(text, str) or not text.strip():
                raise InvalidInputError("no YAML to apply (the editor is empty)")
            self.answer({"items": await self.run(self.mesh.client().apply, text)})

        await self.guarded(action)


class InferHandler(MeshHandler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        async def action() -> None:
            inputs = self.body().get("inputs")
            if inputs is None:
                raise InvalidInputError('no inputs: send {"inputs": [...]} (a V2 request\'s inputs, an array, '
                                        "or input name -> array)")
            client = self.mesh.client()
            started = time.perf_counter()
            response = await self.run(_infer, client, name, inputs)
            latency_ms = (time.perf_counter() - started) * 1000
            self.answer({"model": name, "latencyMs": round(latency_ms, 3), "response": response})

        await self.guarded(action)


def _without_userinfo(url: str) -> str:
    """The mesh's URL as the sidebar may show it: never a ``user:password@`` part."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _infer(client: Any, name: str, inputs: Any) -> dict[str, Any]:
    """One V2 JSON inference: ``inputs`` is a V2 request's tensor list, or values named (and typed)
    from the model's metadata by the SDK."""
    if isinstance(inputs, list) and inputs and all(isinstance(t, dict) and "name" in t for t in inputs):
        return client.infer_json(name, {"inputs": inputs})
    named = tensors.named_inputs(inputs, client.metadata(name))
    body, _ = tensors.encode_request(named)
    return client.infer_json(name, json.loads(body))


_NAME = r"([^/]+)"


def setup_handlers(web_app: Any, mesh: MeshConfig, contents_manager: Any) -> None:
    base = web_app.settings["base_url"]
    root_dir = str(getattr(contents_manager, "root_dir", None) or web_app.settings.get("server_root_dir") or ".")
    opts = {"mesh": mesh, "root_dir": root_dir, "allow_hidden": bool(getattr(contents_manager, "allow_hidden", False))}
    routes = [
        ("overview", OverviewHandler),
        (f"models/{_NAME}/example", ExampleHandler),
        (f"models/{_NAME}", ModelHandler),
        ("deploy", DeployHandler),
        ("apply", ApplyHandler),
        (f"infer/{_NAME}", InferHandler),
    ]
    web_app.add_handlers(".*$", [(url_path_join(base, PREFIX, path), cls, opts) for path, cls in routes])
