"""Numpy arrays <-> KServe V2 protobuf tensors.

Every inference the built-in runtime serves goes through here twice (decode the inputs, encode the
outputs), and clients, tests and benchmarks use the reverse direction. The V2 protocol carries a
tensor either in the typed ``contents`` fields of ``InferTensorContents`` or as little-endian bytes
in ``raw_input_contents`` / ``raw_output_contents`` (parallel to the tensor list, all or none).
Raw tensors decode with ``np.frombuffer`` (no copy: the arrays are read-only views of the message's
bytes); typed ones with ``np.fromiter``. Only BYTES tensors loop over elements in Python: in raw
form each element is a 4-byte little-endian length followed by its bytes.

BYTES tensors are numpy ``object`` arrays of ``bytes``; ``str`` / ``np.str_`` / ``np.bytes_``
arrays encode as BYTES too (strings as UTF-8). FP16 has no typed field, so a message holding an
FP16 tensor is always written in raw form.

Every malformed tensor raises ``InvalidArgument`` with a message naming the tensor. The datatypes,
the shape limits (``MAX_DIMS``), the raw BYTES form and the short texts of error messages are
``protocol/datatypes.py``'s; this module re-exports them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.protocol import v2
from kserve_mesh.protocol.datatypes import (
    CONTENTS_FIELDS,
    DATATYPES,
    MAX_DIMS,
    as_bytes,
    check_dims,
    datatype_of,
    deserialize_bytes,
    dtype_of,
    element_count,
    serialize_bytes,
    shape_text,
    short,
)

__all__ = [
    "CONTENTS_FIELDS",
    "DATATYPES",
    "MAX_DIMS",
    "check_dims",
    "check_parameters",
    "datatype_of",
    "decode_inputs",
    "decode_outputs",
    "deserialize_bytes",
    "dtype_of",
    "element_count",
    "encode_request",
    "encode_response",
    "fill_parameters",
    "parameters_to_dict",
    "raw_bytes",
    "requested_outputs",
    "select_outputs",
    "serialize_bytes",
    "shape_text",
    "short",
    "tensor_from_contents",
    "tensor_from_raw",
]

# numpy dtype of each typed contents field, used to decode it before narrowing.
_FIELD_DTYPES = {
    "bool_contents": np.dtype(np.bool_),
    "uint_contents": np.dtype("<u4"),
    "uint64_contents": np.dtype("<u8"),
    "int_contents": np.dtype("<i4"),
    "int64_contents": np.dtype("<i8"),
    "fp32_contents": np.dtype("<f4"),
    "fp64_contents": np.dtype("<f8"),
}
_NARROW = frozenset({"UINT8", "UINT16", "INT8", "INT16"})


def _object_array(items: list[Any], shape: Sequence[int]) -> np.ndarray:
    arr = np.empty(len(items), dtype=np.object_)
    arr[:] = items
    return arr.reshape(shape)


def tensor_from_raw(
    datatype: str, shape: Sequence[int], raw: bytes | memoryview, what: str
) -> np.ndarray:
    """Decode one tensor's raw contents (read-only view for fixed-size datatypes)."""
    dt = dtype_of(datatype)
    count = element_count(shape, what)
    if datatype == "BYTES":
        return _object_array(deserialize_bytes(raw, count, what), shape)
    needed = count * dt.itemsize
    if len(raw) != needed:
        raise InvalidArgument(
            f"{what}: raw contents hold {len(raw)} bytes, {datatype} shape {shape_text(shape)} "
            f"needs {needed}"
        )
    return np.frombuffer(raw, dtype=dt).reshape(shape)


def tensor_from_contents(
    datatype: str, shape: Sequence[int], contents: Any, what: str
) -> np.ndarray:
    """Decode one tensor's typed ``InferTensorContents``."""
    dt = dtype_of(datatype)
    field = CONTENTS_FIELDS.get(datatype)
    count = element_count(shape, what)
    for descriptor, _ in contents.ListFields():
        if descriptor.name != field:
            if field is None:
                raise InvalidArgument(
                    f"{what}: FP16 has no typed contents field, send it as raw contents"
                )
            raise InvalidArgument(
                f"{what}: datatype {datatype} takes {field}, got {descriptor.name}"
            )
    if field is None:  # FP16 with no contents at all
        if count:
            raise InvalidArgument(
                f"{what}: FP16 has no typed contents field, send it as raw contents"
            )
        return np.empty(shape, dtype=dt)
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidArgument(
            f"{what}: shape {shape_text(shape)} needs {count} elements, got {len(values)}"
        )
    if datatype == "BYTES":
        return _object_array(list(values), shape)
    arr = np.fromiter(values, dtype=_FIELD_DTYPES[field], count=count)
    if datatype in _NARROW and count:
        info = np.iinfo(dt)
        if arr.min() < info.min or arr.max() > info.max:
            raise InvalidArgument(
                f"{what}: values out of range for {datatype} ({info.min}..{info.max})"
            )
        arr = arr.astype(dt)
    return arr.reshape(shape)


def raw_bytes(arr: np.ndarray, datatype: str) -> bytes:
    """The raw V2 form of an array already known to be of ``datatype``."""
    if datatype == "BYTES":
        return serialize_bytes(arr.ravel().tolist())
    return np.ascontiguousarray(arr, dtype=DATATYPES[datatype]).tobytes()


def _typed_values(arr: np.ndarray, datatype: str) -> list[Any]:
    if datatype == "BYTES":
        return [as_bytes(v) for v in arr.ravel().tolist()]
    return arr.ravel().tolist()


def check_parameters(parameters: Mapping[str, Any] | None, what: str) -> None:
    """Refuse a parameter a protobuf ``InferParameter`` cannot hold (``fill_parameters`` would)."""
    for key, value in (parameters or {}).items():
        if isinstance(value, (bool, str)):
            continue
        if isinstance(value, int):
            if not -(2**63) <= value < 2**63:
                raise InvalidArgument(f"{what}: parameter '{key}' is out of the int64 range")
            continue
        raise InvalidArgument(
            f"{what}: parameter '{key}' must be a string, boolean or integer, "
            f"got {type(value).__name__}"
        )


def fill_parameters(target: Any, parameters: Mapping[str, Any] | None, what: str) -> None:
    """Copy ``{key: str | bool | int}`` into a protobuf ``map<string, InferParameter>``."""
    if not parameters:
        return
    check_parameters(parameters, what)
    for key, value in parameters.items():
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            param.int64_param = value
        else:
            param.string_param = value


def parameters_to_dict(parameters: Any) -> dict[str, Any]:
    """A protobuf ``map<string, InferParameter>`` as a plain dict (unset values are skipped)."""
    out: dict[str, Any] = {}
    for key, param in parameters.items():
        choice = param.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(param, choice)
    return out


def _decode_tensors(tensors: Any, raws: Sequence[bytes], kind: str) -> dict[str, np.ndarray]:
    if raws and len(raws) != len(tensors):
        raise InvalidArgument(
            f"{len(tensors)} {kind}s but {len(raws)} raw_{kind}_contents; raw contents must be "
            f"given for every {kind} or for none"
        )
    out: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(tensors):
        name = tensor.name
        what = f"{kind} {short(name)}"
        if not name:
            raise InvalidArgument(f"{kind} {index} has no name")
        if name in out:
            raise InvalidArgument(f"{what} is given more than once")
        if raws:
            if tensor.HasField("contents"):
                raise InvalidArgument(
                    f"{what}: has typed contents although raw_{kind}_contents are used"
                )
            out[name] = tensor_from_raw(tensor.datatype, tensor.shape, raws[index], what)
        else:
            out[name] = tensor_from_contents(
                tensor.datatype, tensor.shape, tensor.contents, what
            )
    return out


def decode_inputs(request: Any) -> dict[str, np.ndarray]:
    """The input tensors of a ``v2.ModelInferRequest`` as numpy arrays, by name, in order."""
    return _decode_tensors(request.inputs, request.raw_input_contents, "input")


def decode_outputs(response: Any) -> dict[str, np.ndarray]:
    """The output tensors of a ``v2.ModelInferResponse`` as numpy arrays, by name, in order."""
    return _decode_tensors(response.outputs, response.raw_output_contents, "output")


def _fill_tensors(
    tensors: Any, raws: Any, arrays: Mapping[str, Any], raw: bool, kind: str
) -> None:
    prepared = []
    for name, value in arrays.items():
        arr = np.asarray(value)
        prepared.append((name, arr, datatype_of(arr.dtype)))
    use_raw = raw or any(datatype == "FP16" for _, _, datatype in prepared)
    for name, arr, datatype in prepared:
        tensor = tensors.add(name=name, datatype=datatype, shape=arr.shape)
        if use_raw:
            raws.append(raw_bytes(arr, datatype))
        else:
            getattr(tensor.contents, CONTENTS_FIELDS[datatype]).extend(
                _typed_values(arr, datatype)
            )


def encode_request(
    model_name: str,
    inputs: Mapping[str, Any],
    *,
    raw: bool = False,
    model_version: str = "",
    request_id: str = "",
    outputs: Sequence[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Any:
    """A ``v2.ModelInferRequest`` holding ``inputs`` (typed contents, or raw when ``raw``).

    ``outputs`` names the outputs to ask for (all when None)."""
    request = v2.ModelInferRequest(
        model_name=model_name, model_version=model_version, id=request_id
    )
    fill_parameters(request.parameters, parameters, "request")
    _fill_tensors(request.inputs, request.raw_input_contents, inputs, raw, "input")
    for name in outputs or ():
        request.outputs.add(name=name)
    return request


def select_outputs(model_name: str, outputs: Mapping[str, Any], requested: Sequence[str] | None) -> Mapping[str, Any]:
    """The outputs a request asked for (``requested``, in its order; all when empty or None).
    Asking for an output the model lacks is an error."""
    if not requested:
        return outputs
    selected: dict[str, Any] = {}
    for name in requested:
        if name not in outputs:
            names = ", ".join(outputs) or "none"
            raise InvalidArgument(
                f"requested output {short(name)} is not an output of model {short(model_name)} "
                f"(outputs: {names if len(names) <= 512 else names[:512] + '...'})"
            )
        selected[name] = outputs[name]
    return selected


def encode_response(
    model_name: str,
    outputs: Mapping[str, Any],
    *,
    model_version: str = "",
    request_id: str = "",
    raw: bool = False,
    requested: Sequence[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Any:
    """A ``v2.ModelInferResponse`` holding ``outputs`` (typed contents, or raw when ``raw``).

    ``requested`` (the names in the request's ``outputs``) selects and orders the outputs; an
    empty or missing list returns them all. Asking for an output the model lacks is an error."""
    outputs = select_outputs(model_name, outputs, requested)
    response = v2.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request_id
    )
    fill_parameters(response.parameters, parameters, "response")
    _fill_tensors(response.outputs, response.raw_output_contents, outputs, raw, "output")
    return response


def requested_outputs(request: Any) -> list[str]:
    """The output names a ``v2.ModelInferRequest`` asks for (empty: all)."""
    return [output.name for output in request.outputs]
