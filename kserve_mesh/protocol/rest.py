"""V2 REST (JSON and the binary tensor data extension) <-> V2 protobuf messages.

The mesh's REST front door turns each ``POST /v2/models/{name}/infer`` body into the same
``ModelInferRequest`` the gRPC door receives, so the router and the runtimes see one message type,
and renders the ``ModelInferResponse`` back as JSON (for the built-in runtime in the instance's own
process, ``rest_arrays.py`` goes from the same checked body straight to arrays instead). The client
SDK uses the reverse direction (``render_infer_request`` / ``parse_infer_response``).

JSON shapes follow the Open Inference Protocol::

    {"id", "parameters", "inputs": [{"name", "shape", "datatype", "parameters", "data"}],
     "outputs": [{"name", "parameters": {"binary_data": true}}]}
    {"model_name", "model_version", "id", "parameters",
     "outputs": [{"name", "datatype", "shape", "parameters", "data"}]}

``data`` is a flat or nested (row-major) list; BYTES elements are strings. With the binary data
extension (Triton's, also spoken by KServe), the body is a JSON header of
``Inference-Header-Content-Length`` bytes followed by the tensors that carry a
``binary_data_size`` parameter, in order, each in raw V2 form (BYTES elements 4-byte
little-endian length-prefixed). A client asks for binary outputs per output
(``"binary_data": true``) or for all of them (request parameter ``"binary_data_output": true``).

A protobuf message holds its tensors either all typed or all raw, so a request with any binary or
FP16 input is converted with every input in raw form. JSON goes through orjson when it is
installed (it serializes numpy arrays natively), else the standard library.

This module converts whole messages; the body format (JSON, the binary extension's header and
parameters, ``ResponseOptions``) is ``protocol/rest_json.py`` and the tensors are
``protocol/rest_tensors.py``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kserve_mesh.core.errors import InternalError, InvalidArgument, MeshError
from kserve_mesh.protocol import v2
from kserve_mesh.protocol.rest_json import (
    BINARY_ALL,
    BINARY_CONTENT_TYPE,
    BINARY_OUTPUT,
    HEADER_LENGTH,
    JSON_CONTENT_TYPE,
    ResponseOptions,
    dumps,
    finish_body,
    json_parameters,
    loads,
    split_body,
    string_field,
)
from kserve_mesh.protocol.rest_tensors import MAX_DIM as MAX_DIM  # noqa: PLC0414 - re-exported (shape limit)
from kserve_mesh.protocol.rest_tensors import JsonTensor, NotText, fill_tensors, parse_tensors, render_tensors
from kserve_mesh.protocol.tensors import check_parameters, fill_parameters, parameters_to_dict, short

log = logging.getLogger(__name__)

__all__ = [
    "BINARY_CONTENT_TYPE",
    "HEADER_LENGTH",
    "JSON_CONTENT_TYPE",
    "RequestParts",
    "ResponseOptions",
    "dumps",
    "loads",
    "parse_infer_request",
    "parse_infer_response",
    "parse_request_parts",
    "render_error",
    "render_infer_request",
    "render_infer_response",
    "render_model_metadata",
    "render_model_ready",
    "render_server_metadata",
]


@dataclass(slots=True)
class RequestParts:
    """A V2 REST inference body, checked, before it becomes a message (``parse_infer_request``)
    or arrays (``rest_arrays.parse_infer_arrays``): both refuse the same bodies with the same
    errors, in the same order."""

    request_id: str
    parameters: dict[str, Any]
    """The request's parameters, less ``binary_data_output`` (in ``options``)."""
    tensors: list[JsonTensor]
    outputs: list[tuple[str, dict[str, Any]]]
    """The outputs asked for, in order, each with its parameters less ``binary_data``."""
    options: ResponseOptions


def parse_request_parts(body: bytes, header_length: int | None = None) -> RequestParts:
    """Check a V2 REST inference body (``header_length``: its ``Inference-Header-Content-Length``)."""
    doc, binary = split_body(body, header_length)
    request_id = string_field(doc, "id")
    parameters = json_parameters(doc.get("parameters"), "request")
    binary_default = parameters.get(BINARY_ALL, False)
    if BINARY_ALL in parameters:
        if type(binary_default) is not bool:
            raise InvalidArgument(f"request: '{BINARY_ALL}' must be a boolean")
        parameters = {k: v for k, v in parameters.items() if k != BINARY_ALL}
    check_parameters(parameters, "request")
    tensors = parse_tensors(doc.get("inputs"), "input", binary)
    for tensor in tensors:
        check_parameters(tensor.parameters, f"'{tensor.name}'")

    outputs = doc.get("outputs")
    wanted: list[tuple[str, dict[str, Any]]] = []
    per_output: dict[str, bool] = {}
    if outputs is not None:
        if not isinstance(outputs, list):
            raise InvalidArgument("'outputs' must be a list")
        for index, entry in enumerate(outputs):
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str) or not name:
                raise InvalidArgument(f"output {index}: 'name' is missing or not a string")
            what = f"output {short(name)}"
            out_params = json_parameters(entry.get("parameters"), what)
            if BINARY_OUTPUT in out_params:
                flag = out_params[BINARY_OUTPUT]
                if type(flag) is not bool:
                    raise InvalidArgument(f"{what}: '{BINARY_OUTPUT}' must be a boolean")
                per_output[name] = flag
                out_params = {k: v for k, v in out_params.items() if k != BINARY_OUTPUT}
            check_parameters(out_params, what)
            wanted.append((name, out_params))
    return RequestParts(request_id, parameters, tensors, wanted,
                        ResponseOptions(binary_default=binary_default, binary=per_output))


def parse_infer_request(
    body: bytes,
    model_name: str,
    *,
    header_length: int | None = None,
    model_version: str = "",
    raw: bool = False,
) -> tuple[Any, ResponseOptions]:
    """A V2 REST inference body as a ``v2.ModelInferRequest`` and the client's output wishes.

    ``header_length`` is the ``Inference-Header-Content-Length`` header, if sent. ``raw`` puts
    every input in ``raw_input_contents`` even for plain JSON (cheapest for the runtime)."""
    parts = parse_request_parts(body, header_length)
    request = v2.ModelInferRequest(model_name=model_name, model_version=model_version, id=parts.request_id)
    fill_parameters(request.parameters, parts.parameters, "request")
    fill_tensors(request.inputs, request.raw_input_contents, parts.tensors, raw)
    for name, out_params in parts.outputs:
        fill_parameters(request.outputs.add(name=name).parameters, out_params, f"output {short(name)}")
    return request, parts.options


def render_infer_response(
    response: Any, options: ResponseOptions | None = None
) -> tuple[bytes, dict[str, str]]:
    """A ``v2.ModelInferResponse`` as a REST body and the headers to send with it.

    A malformed response (the runtime's fault, not the client's) raises ``InternalError``."""
    options = options or ResponseOptions()
    try:
        outputs, blobs = render_tensors(
            response.outputs, response.raw_output_contents, options.is_binary, "output"
        )
    except NotText:
        raise
    except InvalidArgument as exc:
        log.warning("malformed inference response from model %s: %s", response.model_name, exc)
        raise InternalError(f"model '{response.model_name}' sent a malformed response: {exc}") from exc
    doc: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
    }
    params = parameters_to_dict(response.parameters)
    if params:
        doc["parameters"] = params
    doc["outputs"] = outputs
    return finish_body(doc, blobs)


def render_infer_request(
    request: Any, *, binary_inputs: bool = True, binary_outputs: bool = False
) -> tuple[bytes, dict[str, str]]:
    """A ``v2.ModelInferRequest`` as a REST body and headers (for clients).

    ``binary_inputs`` sends the inputs with the binary extension, ``binary_outputs`` asks for
    every output in binary."""
    inputs, blobs = render_tensors(
        request.inputs, request.raw_input_contents, lambda _name: binary_inputs, "input"
    )
    doc: dict[str, Any] = {"id": request.id} if request.id else {}
    params = parameters_to_dict(request.parameters)
    if binary_outputs and not request.outputs:
        params[BINARY_ALL] = True
    if params:
        doc["parameters"] = params
    doc["inputs"] = inputs
    if request.outputs:
        outputs = []
        for output in request.outputs:
            out_params = parameters_to_dict(output.parameters)
            if binary_outputs:
                out_params[BINARY_OUTPUT] = True
            entry: dict[str, Any] = {"name": output.name}
            if out_params:
                entry["parameters"] = out_params
            outputs.append(entry)
        doc["outputs"] = outputs
    return finish_body(doc, blobs)


def parse_infer_response(body: bytes, *, header_length: int | None = None) -> Any:
    """A V2 REST inference response body as a ``v2.ModelInferResponse`` (for clients)."""
    doc, binary = split_body(body, header_length)
    response = v2.ModelInferResponse(
        model_name=string_field(doc, "model_name"),
        model_version=string_field(doc, "model_version"),
        id=string_field(doc, "id"),
    )
    fill_parameters(
        response.parameters, json_parameters(doc.get("parameters"), "response"), "response"
    )
    tensors = parse_tensors(doc.get("outputs"), "output", binary)
    fill_tensors(response.outputs, response.raw_output_contents, tensors, False)
    return response


def _tensor_metadata(tensors: Any) -> list[dict[str, Any]]:
    return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in tensors]


def render_model_metadata(metadata: Any) -> dict[str, Any]:
    """A ``v2.ModelMetadataResponse`` as the REST ``GET /v2/models/{name}`` object."""
    return {
        "name": metadata.name,
        "versions": list(metadata.versions),
        "platform": metadata.platform,
        "inputs": _tensor_metadata(metadata.inputs),
        "outputs": _tensor_metadata(metadata.outputs),
    }


def render_server_metadata(metadata: Any) -> dict[str, Any]:
    """A ``v2.ServerMetadataResponse`` as the REST ``GET /v2`` object."""
    return {
        "name": metadata.name,
        "version": metadata.version,
        "extensions": list(metadata.extensions),
    }


def render_model_ready(name: str, ready: bool) -> dict[str, Any]:
    """The REST ``GET /v2/models/{name}/ready`` object (KServe's shape)."""
    return {"name": name, "ready": ready}


def render_error(error: MeshError | str) -> dict[str, str]:
    """The V2 REST error object ``{"error": message}``."""
    return {"error": str(error)}
