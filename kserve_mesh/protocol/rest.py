"""V2 REST (JSON and the binary tensor data extension) <-> V2 protobuf messages.

The mesh's REST front door turns each ``POST /v2/models/{name}/infer`` body into the same
``ModelInferRequest`` the gRPC door receives, so the router and the runtimes see one message type,
and renders the ``ModelInferResponse`` back as JSON. The client SDK uses the reverse direction
(``render_infer_request`` / ``parse_infer_response``).

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
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kserve_mesh.core.errors import InternalError, InvalidArgument, MeshError
from kserve_mesh.protocol import v2
from kserve_mesh.protocol.tensors import (
    CONTENTS_FIELDS,
    DATATYPES,
    MAX_DIMS,
    check_dims,
    deserialize_bytes,
    element_count,
    fill_parameters,
    parameters_to_dict,
    raw_bytes,
    serialize_bytes,
    shape_text,
    short,
    tensor_from_contents,
    tensor_from_raw,
)

try:  # orjson is optional: several times faster, and serializes numpy arrays itself
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only where orjson is missing
    _orjson = None

log = logging.getLogger(__name__)

__all__ = [
    "BINARY_CONTENT_TYPE",
    "HEADER_LENGTH",
    "JSON_CONTENT_TYPE",
    "ResponseOptions",
    "dumps",
    "loads",
    "parse_infer_request",
    "parse_infer_response",
    "render_error",
    "render_infer_request",
    "render_infer_response",
    "render_model_metadata",
    "render_model_ready",
    "render_server_metadata",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"

# Parameters that steer the REST encoding only; they are not passed on to the model.
_BINARY_SIZE = "binary_data_size"
_BINARY_OUTPUT = "binary_data"
_BINARY_ALL = "binary_data_output"

MAX_DIM = 2**63 - 1
"""Largest shape dimension (shapes are int64 in the V2 protobuf messages)."""

_INT_KINDS = "iu"
_FLOAT_KINDS = "iuf"
_KIND_NAMES = {
    "b": "booleans",
    "i": "integers",
    "u": "integers",
    "f": "non-integer numbers",
    "U": "strings",
    "O": "mixed or unsupported values",
}


if _orjson is not None:
    _OPTIONS = _orjson.OPT_SERIALIZE_NUMPY

    def dumps(obj: Any) -> bytes:
        """Serialize to compact JSON bytes (numpy arrays and scalars allowed)."""
        return _orjson.dumps(obj, option=_OPTIONS)

    def loads(data: bytes | bytearray | memoryview | str) -> Any:
        """Parse JSON (raises ValueError on malformed input)."""
        return _orjson.loads(data)

else:  # pragma: no cover - exercised only where orjson is missing

    def _default(obj: Any) -> Any:
        if isinstance(obj, (np.ndarray, np.generic)):
            return obj.tolist()
        raise TypeError(f"{type(obj).__name__} is not JSON serializable")

    def dumps(obj: Any) -> bytes:
        """Serialize to compact JSON bytes (numpy arrays and scalars allowed)."""
        return json.dumps(obj, separators=(",", ":"), default=_default).encode()

    def loads(data: bytes | bytearray | memoryview | str) -> Any:
        """Parse JSON (raises ValueError on malformed input)."""
        return json.loads(bytes(data) if isinstance(data, memoryview) else data)


@dataclass(frozen=True, slots=True)
class ResponseOptions:
    """How the client wants the response rendered: which outputs go in binary form."""

    binary_default: bool = False
    """``binary_data_output`` of the request: every output in binary unless said otherwise."""
    binary: Mapping[str, bool] = field(default_factory=dict)
    """``binary_data`` given per requested output; overrides ``binary_default``."""

    def is_binary(self, name: str) -> bool:
        return self.binary.get(name, self.binary_default)


class _NotText(InvalidArgument):
    """BYTES output values that JSON cannot carry: the client must ask for binary."""


class _Tensor:
    """One parsed JSON tensor, before it is written into a protobuf message."""

    __slots__ = ("array", "datatype", "name", "parameters", "raw", "shape", "values")

    def __init__(self, name: str, datatype: str, shape: list[int], parameters: dict) -> None:
        self.name = name
        self.datatype = datatype
        self.shape = shape
        self.parameters = parameters
        self.raw: bytes | None = None  # binary extension: the raw V2 bytes
        self.array: np.ndarray | None = None  # JSON numbers, flat, in the datatype's dtype
        self.values: list[Any] | None = None  # flat values for the typed contents field


_short = short  # ``repr(value)`` cut short for an error message


def _split_body(body: bytes, header_length: int | None) -> tuple[Any, memoryview]:
    view = memoryview(body)
    if header_length is None:
        header, binary = view, view[len(view) :]
    else:
        if not 0 < header_length <= len(view):
            raise InvalidArgument(
                f"{HEADER_LENGTH} is {header_length} but the body has {len(view)} bytes"
            )
        header, binary = view[:header_length], view[header_length:]
    try:
        doc = loads(header)
    except ValueError as exc:
        raise InvalidArgument(f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"body must be a JSON object, got {type(doc).__name__}")
    return doc, binary


def _json_parameters(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what}: 'parameters' must be an object")
    return value


def _flatten(data: list[Any], out: list[Any], what: str) -> None:
    """Append the leaves of nested lists ``data`` to ``out``, in order (iterative: lists nested
    deeper than a tensor's ``MAX_DIMS`` dimensions are refused, never a ``RecursionError``)."""
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if type(item) is list:
                if len(stack) >= MAX_DIMS:
                    raise InvalidArgument(
                        f"{what}: 'data' is nested more than {MAX_DIMS} levels deep (a tensor has "
                        f"at most {MAX_DIMS} dimensions)"
                    )
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()


def _json_bytes(tensor: _Tensor, data: list[Any], count: int, what: str) -> None:
    flat: list[Any] = []
    _flatten(data, flat, what)
    if len(flat) != count:
        raise InvalidArgument(
            f"{what}: shape {shape_text(tensor.shape)} needs {count} elements, got {len(flat)}"
        )
    try:
        tensor.values = [item.encode("utf-8") for item in flat]
    except AttributeError:
        bad = next(item for item in flat if not isinstance(item, str))
        raise InvalidArgument(
            f"{what}: datatype BYTES needs strings in 'data', got {type(bad).__name__}"
        ) from None


def _uint64_array(data: list[Any], arr: np.ndarray, what: str) -> np.ndarray:
    flat: list[Any] = []
    _flatten(data, flat, what)
    if any(type(item) is not int for item in flat):
        return arr
    try:
        return np.array(flat, dtype=np.uint64)
    except OverflowError:
        return np.array([-1])  # reported below as out of range


def _json_numbers(tensor: _Tensor, data: list[Any], count: int, what: str) -> None:
    datatype = tensor.datatype
    try:
        arr = np.array(data)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise InvalidArgument(
            f"{what}: 'data' is not a regular (non-ragged) list of at most {MAX_DIMS} dimensions"
        ) from None
    if arr.size != count:
        raise InvalidArgument(
            f"{what}: shape {shape_text(tensor.shape)} needs {count} elements, got {arr.size}"
        )
    dt = DATATYPES[datatype]
    flat = arr.ndim == 1
    if datatype == "UINT64" and arr.dtype.kind in "fO":
        arr = _uint64_array(data, arr, what)  # numpy promotes int64 + uint64 values to float64
    if count:
        kind = arr.dtype.kind
        if datatype == "BOOL":
            ok = kind == "b"
        elif dt.kind in _INT_KINDS:
            ok = kind in _INT_KINDS
        else:
            ok = kind in _FLOAT_KINDS
        if not ok:
            wanted = {"b": "booleans", "f": "numbers"}.get(dt.kind, "integers")
            raise InvalidArgument(
                f"{what}: datatype {datatype} needs {wanted} in 'data', got "
                f"{_KIND_NAMES.get(kind, str(arr.dtype))}"
            )
        if dt.kind in _INT_KINDS:
            info = np.iinfo(dt)
            if arr.min() < info.min or arr.max() > info.max:
                raise InvalidArgument(
                    f"{what}: values out of range for {datatype} ({info.min}..{info.max})"
                )
    tensor.array = arr.astype(dt, copy=False).reshape(-1)
    if flat:
        tensor.values = data  # already flat and checked: the typed field can take it as is


def _parse_tensor(
    entry: Any, index: int, kind: str, binary: memoryview, offset: int
) -> tuple[_Tensor, int]:
    if not isinstance(entry, dict):
        raise InvalidArgument(f"{kind} {index} must be a JSON object")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{kind} {index}: 'name' is missing or not a string")
    what = f"{kind} {_short(name)}"
    shape = entry.get("shape")
    if shape is None:
        raise InvalidArgument(f"{what}: 'shape' is missing")
    if not isinstance(shape, list):
        raise InvalidArgument(f"{what}: 'shape' must be a list of integers, got {type(shape).__name__}")
    if len(shape) > MAX_DIMS:  # before anything loops over it or shows it
        check_dims(shape, what)
    for dim in shape:
        if type(dim) is not int:
            raise InvalidArgument(f"{what}: 'shape' must be a list of integers, got {_short(dim)}")
        if dim < 0:
            raise InvalidArgument(f"{what}: shape {shape_text(shape)} has a negative dimension")
        if dim > MAX_DIM:
            raise InvalidArgument(f"{what}: shape dimension {dim} is out of range (0..{MAX_DIM})")
    datatype = entry.get("datatype")
    if datatype is None:
        raise InvalidArgument(f"{what}: 'datatype' is missing")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidArgument(
            f"{what}: unknown datatype {_short(datatype)} (V2 datatypes: {', '.join(DATATYPES)})"
        )
    count = element_count(shape, what)
    parameters = _json_parameters(entry.get("parameters"), what)
    tensor = _Tensor(name, datatype, shape, parameters)
    size = parameters.get(_BINARY_SIZE)
    data = entry.get("data")
    if size is not None:
        tensor.parameters = {k: v for k, v in parameters.items() if k != _BINARY_SIZE}
        if data is not None:
            raise InvalidArgument(f"{what}: has both 'data' and '{_BINARY_SIZE}'")
        if type(size) is not int or size < 0:
            raise InvalidArgument(f"{what}: '{_BINARY_SIZE}' must be a non-negative integer")
        end = offset + size
        if end > len(binary):
            raise InvalidArgument(
                f"{what}: '{_BINARY_SIZE}' is {size} but only {len(binary) - offset} bytes of "
                f"binary data remain (is {HEADER_LENGTH} right?)"
            )
        chunk = binary[offset:end]
        if datatype == "BYTES":
            deserialize_bytes(chunk, count, what)
        elif size != count * DATATYPES[datatype].itemsize:
            raise InvalidArgument(
                f"{what}: '{_BINARY_SIZE}' is {size} but {datatype} shape {shape_text(shape)} needs "
                f"{count * DATATYPES[datatype].itemsize} bytes"
            )
        tensor.raw = bytes(chunk)
        return tensor, end
    if data is None:
        raise InvalidArgument(f"{what}: 'data' is missing")
    if not isinstance(data, list):
        raise InvalidArgument(f"{what}: 'data' must be a list")
    if datatype == "BYTES":
        _json_bytes(tensor, data, count, what)
    else:
        _json_numbers(tensor, data, count, what)
    return tensor, offset


def _parse_tensors(entries: Any, kind: str, binary: memoryview) -> list[_Tensor]:
    if not isinstance(entries, list) or not entries:
        raise InvalidArgument(f"'{kind}s' is missing or not a non-empty list")
    tensors: list[_Tensor] = []
    names: set[str] = set()
    offset = 0
    for index, entry in enumerate(entries):
        tensor, offset = _parse_tensor(entry, index, kind, binary, offset)
        if tensor.name in names:
            raise InvalidArgument(f"{kind} {_short(tensor.name)} is given more than once")
        names.add(tensor.name)
        tensors.append(tensor)
    if offset != len(binary):
        raise InvalidArgument(
            f"the body has {len(binary)} bytes of binary data after the JSON header but the "
            f"{kind}s' '{_BINARY_SIZE}' add up to {offset}"
        )
    return tensors


def _fill(messages: Any, raws: Any, tensors: list[_Tensor], force_raw: bool) -> None:
    use_raw = force_raw or any(t.raw is not None or t.datatype == "FP16" for t in tensors)
    for tensor in tensors:
        message = messages.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        fill_parameters(message.parameters, tensor.parameters, f"'{tensor.name}'")
        if use_raw:
            if tensor.raw is not None:
                raws.append(tensor.raw)
            elif tensor.datatype == "BYTES":
                raws.append(serialize_bytes(tensor.values or ()))
            else:
                raws.append(tensor.array.tobytes())
        else:
            values = tensor.values
            if values is None:
                values = tensor.array.tolist()
            getattr(message.contents, CONTENTS_FIELDS[tensor.datatype]).extend(values)


def _string_field(doc: dict, key: str) -> str:
    value = doc.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"'{key}' must be a string")
    return value


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
    doc, binary = _split_body(body, header_length)
    request = v2.ModelInferRequest(
        model_name=model_name, model_version=model_version, id=_string_field(doc, "id")
    )
    parameters = _json_parameters(doc.get("parameters"), "request")
    binary_default = parameters.get(_BINARY_ALL, False)
    if _BINARY_ALL in parameters:
        if type(binary_default) is not bool:
            raise InvalidArgument(f"request: '{_BINARY_ALL}' must be a boolean")
        parameters = {k: v for k, v in parameters.items() if k != _BINARY_ALL}
    fill_parameters(request.parameters, parameters, "request")
    tensors = _parse_tensors(doc.get("inputs"), "input", binary)
    _fill(request.inputs, request.raw_input_contents, tensors, raw)

    outputs = doc.get("outputs")
    per_output: dict[str, bool] = {}
    if outputs is not None:
        if not isinstance(outputs, list):
            raise InvalidArgument("'outputs' must be a list")
        for index, entry in enumerate(outputs):
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str) or not name:
                raise InvalidArgument(f"output {index}: 'name' is missing or not a string")
            what = f"output {_short(name)}"
            out_params = _json_parameters(entry.get("parameters"), what)
            if _BINARY_OUTPUT in out_params:
                flag = out_params[_BINARY_OUTPUT]
                if type(flag) is not bool:
                    raise InvalidArgument(f"{what}: '{_BINARY_OUTPUT}' must be a boolean")
                per_output[name] = flag
                out_params = {k: v for k, v in out_params.items() if k != _BINARY_OUTPUT}
            message = request.outputs.add(name=name)
            fill_parameters(message.parameters, out_params, what)
    return request, ResponseOptions(binary_default=binary_default, binary=per_output)


def _render_tensors(
    messages: Any, raws: Any, binary_of: Any, kind: str
) -> tuple[list[dict[str, Any]], list[bytes]]:
    if raws and len(raws) != len(messages):
        raise InvalidArgument(
            f"{len(messages)} {kind}s but {len(raws)} raw_{kind}_contents; raw contents must be "
            f"given for every {kind} or for none"
        )
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for index, message in enumerate(messages):
        name = message.name
        what = f"{kind} {_short(name)}"
        datatype = message.datatype
        shape = list(message.shape)
        if raws:
            arr = tensor_from_raw(datatype, shape, raws[index], what)
        else:
            arr = tensor_from_contents(datatype, shape, message.contents, what)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        params = parameters_to_dict(message.parameters)
        if binary_of(name):
            blob = raws[index] if raws else raw_bytes(arr, datatype)
            params[_BINARY_SIZE] = len(blob)
            blobs.append(blob)
        elif datatype == "BYTES":
            try:
                entry["data"] = [item.decode("utf-8") for item in arr.reshape(-1).tolist()]
            except UnicodeDecodeError:
                raise _NotText(
                    f"{what}: BYTES values are not UTF-8 text and cannot go in JSON; ask for "
                    f"it with '{_BINARY_OUTPUT}': true"
                ) from None
        else:
            entry["data"] = arr.reshape(-1) if _orjson is not None else arr.reshape(-1).tolist()
        if params:
            entry["parameters"] = params
        entries.append(entry)
    return entries, blobs


def _finish(doc: dict[str, Any], blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    header = dumps(doc)
    if not blobs:
        return header, {"Content-Type": JSON_CONTENT_TYPE}
    return b"".join([header, *blobs]), {
        "Content-Type": BINARY_CONTENT_TYPE,
        HEADER_LENGTH: str(len(header)),
    }


def render_infer_response(
    response: Any, options: ResponseOptions | None = None
) -> tuple[bytes, dict[str, str]]:
    """A ``v2.ModelInferResponse`` as a REST body and the headers to send with it.

    A malformed response (the runtime's fault, not the client's) raises ``InternalError``."""
    options = options or ResponseOptions()
    try:
        outputs, blobs = _render_tensors(
            response.outputs, response.raw_output_contents, options.is_binary, "output"
        )
    except _NotText:
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
    return _finish(doc, blobs)


def render_infer_request(
    request: Any, *, binary_inputs: bool = True, binary_outputs: bool = False
) -> tuple[bytes, dict[str, str]]:
    """A ``v2.ModelInferRequest`` as a REST body and headers (for clients).

    ``binary_inputs`` sends the inputs with the binary extension, ``binary_outputs`` asks for
    every output in binary."""
    inputs, blobs = _render_tensors(
        request.inputs, request.raw_input_contents, lambda _name: binary_inputs, "input"
    )
    doc: dict[str, Any] = {"id": request.id} if request.id else {}
    params = parameters_to_dict(request.parameters)
    if binary_outputs and not request.outputs:
        params[_BINARY_ALL] = True
    if params:
        doc["parameters"] = params
    doc["inputs"] = inputs
    if request.outputs:
        outputs = []
        for output in request.outputs:
            out_params = parameters_to_dict(output.parameters)
            if binary_outputs:
                out_params[_BINARY_OUTPUT] = True
            entry: dict[str, Any] = {"name": output.name}
            if out_params:
                entry["parameters"] = out_params
            outputs.append(entry)
        doc["outputs"] = outputs
    return _finish(doc, blobs)


def parse_infer_response(body: bytes, *, header_length: int | None = None) -> Any:
    """A V2 REST inference response body as a ``v2.ModelInferResponse`` (for clients)."""
    doc, binary = _split_body(body, header_length)
    response = v2.ModelInferResponse(
        model_name=_string_field(doc, "model_name"),
        model_version=_string_field(doc, "model_version"),
        id=_string_field(doc, "id"),
    )
    fill_parameters(
        response.parameters, _json_parameters(doc.get("parameters"), "response"), "response"
    )
    tensors = _parse_tensors(doc.get("outputs"), "output", binary)
    _fill(response.outputs, response.raw_output_contents, tensors, False)
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
