"""The V2 inference routes in the REST API's OpenAPI document.

``POST /v2/models/{name}[/versions/{version}]/infer`` and the peer forwarding route are plain
Starlette routes served ahead of FastAPI (``rest.serve_infer_first``), so FastAPI does not list
them. This adds them by hand, with the Open Inference Protocol's JSON request and response
shapes, so ``/openapi.json`` describes every route (and fuzzers such as schemathesis reach them).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from kserve_mesh.mesh.wire import FORWARD_PATH

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BYTES"]

_PARAMETERS = {"type": "object", "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "integer"},
                                                                    {"type": "boolean"}]}}
_SCHEMAS: dict[str, Any] = {
    "InferParameters": _PARAMETERS,
    "InferRequestInput": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string", "enum": DATATYPES},
            "parameters": {"$ref": "#/components/schemas/InferParameters"},
            "data": {"type": "array"},
        },
    },
    "InferRequestOutput": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"},
                       "parameters": {"$ref": "#/components/schemas/InferParameters"}},
    },
    "InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"$ref": "#/components/schemas/InferParameters"},
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/InferRequestInput"}},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/InferRequestOutput"}},
        },
    },
    "InferResponseOutput": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                       "datatype": {"type": "string"},
                       "parameters": {"$ref": "#/components/schemas/InferParameters"},
                       "data": {"type": "array"}},
    },
    "InferResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"},
                       "id": {"type": "string"},
                       "parameters": {"$ref": "#/components/schemas/InferParameters"},
                       "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/InferResponseOutput"}}},
    },
    "MeshError": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "type": {"type": "string"}},
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MeshError"}}}}


_ERRORS = {
    "400": _error("bad input: malformed body, unknown datatype, wrong shape or datatype for the model"),
    "404": _error("no such model or vmodel"),
    "408": _error("the body stopped arriving (--http-body-timeout-s)"),
    "413": _error("the body is larger than --rest-max-body-bytes"),
    "429": _error("too many requests in flight"),
    "503": _error("the model could not be loaded, or a dependency is unavailable"),
    "504": _error("the request's deadline passed"),
}


def _path_parameter(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"},
            "description": description}


def _infer_operation(operation_id: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "post": {
            "summary": "V2 inference (Open Inference Protocol, JSON or the binary tensor data extension)",
            "operationId": operation_id,
            "tags": ["inference"],
            "parameters": [
                *parameters,
                _header("mm-vmodel-id", "route to this vmodel (ModelMesh header)"),
                _header("mm-model-id", "route to this model (ModelMesh header)"),
            ],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}}}},
            "responses": {"200": {"description": "the model's outputs", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferResponse"}}}}, **_ERRORS},
        }
    }


def _forward_operation() -> dict[str, Any]:
    return {
        "post": {
            "summary": "internal: a V2 gRPC inference forwarded by a peer instance as a serialized "
                       "ModelInferRequest (needs the mm-forwarded and mm-model-id headers)",
            "operationId": "forwarded_infer",
            "tags": ["internal"],
            "parameters": [_header("mm-forwarded", "set by the forwarding instance"),
                           _header("mm-model-id", "the model the peer resolved")],
            "requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {"200": {"description": "a serialized ModelInferResponse", "content": {
                "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}}}}, **_ERRORS},
        }
    }


def add_inference_routes(app: FastAPI) -> None:
    """Make ``app.openapi()`` list the inference routes FastAPI does not see."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        paths = schema.setdefault("paths", {})
        paths["/v2/models/{name}/infer"] = _infer_operation("model_infer", [_path_parameter("name")])
        paths["/v2/models/{name}/versions/{version}/infer"] = _infer_operation(
            "model_version_infer", [_path_parameter("name"), _path_parameter("version")])
        paths[FORWARD_PATH] = _forward_operation()
        schema.setdefault("components", {}).setdefault("schemas", {}).update(_SCHEMAS)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
