"""The generate extension (Triton's, as KServe serves it): ``POST /v2/models/{name}/generate`` and
``/generate_stream`` (server-sent events), for models that answer once or stream several answers.

The request is a JSON object whose keys are the model's input names (a string, number, boolean or
array each; a string becomes a BYTES tensor) plus optional ``parameters``; each answer is a JSON
object with ``model_name``, ``model_version`` and one key per output (a one-element output as its
value, else a list). ``generate`` is one inference (a model's ``predict``); ``generate_stream`` sends
each answer as a ``data:`` event as soon as the
model gives it (``DataPlane.infer_stream``: routed like any inference, forwarded to the holder, loaded
on demand). An error before the first answer is the usual HTTP error; after it, an event
``{"error": ...}`` ends the stream. A client that goes away cancels the request, down to the model.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from kserve_mesh.api.errors import to_mesh_error
from kserve_mesh.api.rest_v2 import read_body, route_of
from kserve_mesh.core.errors import InvalidArgument, MeshError
from kserve_mesh.core.limits import loads_json
from kserve_mesh.mesh.dataplane import DataPlane
from kserve_mesh.protocol import tensors, v2

QUEUED_ANSWERS = 16  # answers a slow client may leave unread before the model waits for it
_END = object()


def request_from_json(model: str, body: bytes) -> v2.ModelInferRequest:
    """A generate request's JSON as a V2 request; ``InvalidArgument`` naming what is wrong."""
    try:
        doc = loads_json(body, "the generate request")
    except ValueError:
        raise InvalidArgument("the generate request is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("a generate request is a JSON object of input names to values")
    parameters = doc.get("parameters", {})
    if not isinstance(parameters, dict) or not all(isinstance(v, (str, int, float, bool)) for v in parameters.values()):
        raise InvalidArgument("'parameters' must be an object of strings, numbers and booleans")
    arrays = {name: _array(name, value) for name, value in doc.items() if name != "parameters"}
    if not arrays:
        raise InvalidArgument("the generate request names no input")
    return tensors.encode_request(model, arrays, parameters=parameters)


def _array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, str):
        return np.array([value.encode()], dtype=object)
    if isinstance(value, (bool, int, float)):
        return np.array([value])
    if isinstance(value, list):
        try:
            arr = np.asarray(value)
        except ValueError:
            raise InvalidArgument(f"input '{name[:64]}' is a ragged array") from None
        if arr.dtype.kind == "U":
            return np.vectorize(lambda s: s.encode(), otypes=[object])(arr)
        if arr.dtype.kind in "biuf":
            return arr
    raise InvalidArgument(f"input '{name[:64]}' must be a string, number, boolean or array of them")


def answer_json(response: v2.ModelInferResponse) -> dict[str, Any]:
    out: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    for name, arr in tensors.decode_outputs(response).items():
        values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in arr.ravel().tolist()]
        out[name] = values[0] if len(values) == 1 else np.asarray(values, dtype=object).reshape(arr.shape).tolist()
    return out


def router(plane: DataPlane) -> APIRouter:
    r = APIRouter()

    @r.post("/v2/models/{name}/generate", include_in_schema=False)
    @r.post("/v2/models/{name}/versions/{version}/generate", include_in_schema=False)
    async def generate(name: str, request: Request) -> JSONResponse:
        v2_request = request_from_json(name, await read_body(request))
        response = await plane.infer(v2_request.SerializeToString(), route_of(request))  # predict: one answer
        return JSONResponse(answer_json(response))

    @r.post("/v2/models/{name}/generate_stream", include_in_schema=False)
    @r.post("/v2/models/{name}/versions/{version}/generate_stream", include_in_schema=False)
    async def generate_stream(name: str, request: Request) -> StreamingResponse:
        v2_request = request_from_json(name, await read_body(request))
        queue: asyncio.Queue[Any] = asyncio.Queue(QUEUED_ANSWERS)

        async def send(response: v2.ModelInferResponse) -> None:
            await queue.put(answer_json(response))

        async def run() -> None:
            try:
                await plane.infer_stream(v2_request, route_of(request), send)
            except Exception as exc:  # noqa: BLE001 - handed to the client: as the HTTP error or the last event
                await queue.put(to_mesh_error(exc))
            finally:
                await queue.put(_END)

        task = asyncio.create_task(run(), name="generate-stream")
        first = await queue.get()
        if isinstance(first, MeshError):  # nothing sent yet: the usual HTTP error
            await task
            raise first

        async def events() -> AsyncIterator[str]:
            item = first
            try:
                while item is not _END:
                    doc = {"error": item.message} if isinstance(item, MeshError) else item
                    yield f"data: {json.dumps(doc)}\n\n"
                    item = await queue.get()
            finally:  # done, or the client went away: the request is cancelled down to the model
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        return StreamingResponse(events(), media_type="text/event-stream; charset=utf-8")

    return r
