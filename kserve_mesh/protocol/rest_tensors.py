"""V2 REST tensors (JSON, or raw bytes of the binary data extension) <-> the tensors of the V2
protobuf messages.

``parse_tensors`` checks a body's ``inputs`` / ``outputs`` entries (name, shape, datatype, data or
``binary_data_size``) into ``JsonTensor``s and ``fill_tensors`` writes them into a message: typed
contents, or raw contents for every tensor when any is binary or FP16 (a message holds its tensors
all typed or all raw). ``render_tensors`` is the reverse, for a response or a client's request.
Every malformed tensor raises ``InvalidArgument`` naming it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.protocol.datatypes import (
    CONTENTS_FIELDS,
    DATATYPES,
    MAX_DIMS,
    check_dims,
    deserialize_bytes,
    element_count,
    serialize_bytes,
    shape_text,
    short,
)
from kserve_mesh.protocol.rest_json import BINARY_OUTPUT, BINARY_SIZE, HEADER_LENGTH, NUMPY_JSON, json_parameters
from kserve_mesh.protocol.tensors import (
    fill_parameters,
    parameters_to_dict,
    raw_bytes,
    tensor_from_contents,
    tensor_from_raw,
)

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


class NotText(InvalidArgument):
    """BYTES output values that JSON cannot carry: the client must ask for binary."""


class JsonTensor:
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


def _json_bytes(tensor: JsonTensor, data: list[Any], count: int, what: str) -> None:
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


def _json_numbers(tensor: JsonTensor, data: list[Any], count: int, what: str) -> None:
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


def parse_tensor(
    entry: Any, index: int, kind: str, binary: memoryview, offset: int
) -> tuple[JsonTensor, int]:
    if not isinstance(entry, dict):
        raise InvalidArgument(f"{kind} {index} must be a JSON object")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{kind} {index}: 'name' is missing or not a string")
    what = f"{kind} {short(name)}"
    shape = entry.get("shape")
    if shape is None:
        raise InvalidArgument(f"{what}: 'shape' is missing")
    if not isinstance(shape, list):
        raise InvalidArgument(f"{what}: 'shape' must be a list of integers, got {type(shape).__name__}")
    if len(shape) > MAX_DIMS:  # before anything loops over it or shows it
        check_dims(shape, what)
    for dim in shape:
        if type(dim) is not int:
            raise InvalidArgument(f"{what}: 'shape' must be a list of integers, got {short(dim)}")
        if dim < 0:
            raise InvalidArgument(f"{what}: shape {shape_text(shape)} has a negative dimension")
        if dim > MAX_DIM:
            raise InvalidArgument(f"{what}: shape dimension {dim} is out of range (0..{MAX_DIM})")
    datatype = entry.get("datatype")
    if datatype is None:
        raise InvalidArgument(f"{what}: 'datatype' is missing")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidArgument(
            f"{what}: unknown datatype {short(datatype)} (V2 datatypes: {', '.join(DATATYPES)})"
        )
    count = element_count(shape, what)
    parameters = json_parameters(entry.get("parameters"), what)
    tensor = JsonTensor(name, datatype, shape, parameters)
    size = parameters.get(BINARY_SIZE)
    data = entry.get("data")
    if size is not None:
        if data is not None:
            raise InvalidArgument(f"{what}: has both 'data' and '{BINARY_SIZE}'")
        return tensor, _binary_tensor(tensor, size, binary, offset, count, what)
    if data is None:
        raise InvalidArgument(f"{what}: 'data' is missing")
    if not isinstance(data, list):
        raise InvalidArgument(f"{what}: 'data' must be a list")
    if datatype == "BYTES":
        _json_bytes(tensor, data, count, what)
    else:
        _json_numbers(tensor, data, count, what)
    return tensor, offset


def _binary_tensor(tensor: JsonTensor, size: Any, binary: memoryview, offset: int, count: int, what: str) -> int:
    """Take a tensor's ``binary_data_size`` bytes from ``binary`` at ``offset``; returns where the
    next tensor's bytes start."""
    tensor.parameters = {k: v for k, v in tensor.parameters.items() if k != BINARY_SIZE}
    if type(size) is not int or size < 0:
        raise InvalidArgument(f"{what}: '{BINARY_SIZE}' must be a non-negative integer")
    end = offset + size
    if end > len(binary):
        raise InvalidArgument(
            f"{what}: '{BINARY_SIZE}' is {size} but only {len(binary) - offset} bytes of "
            f"binary data remain (is {HEADER_LENGTH} right?)"
        )
    chunk = binary[offset:end]
    datatype = tensor.datatype
    if datatype == "BYTES":
        deserialize_bytes(chunk, count, what)
    elif size != count * DATATYPES[datatype].itemsize:
        raise InvalidArgument(
            f"{what}: '{BINARY_SIZE}' is {size} but {datatype} shape {shape_text(tensor.shape)} needs "
            f"{count * DATATYPES[datatype].itemsize} bytes"
        )
    tensor.raw = bytes(chunk)
    return end


def parse_tensors(entries: Any, kind: str, binary: memoryview) -> list[JsonTensor]:
    if not isinstance(entries, list) or not entries:
        raise InvalidArgument(f"'{kind}s' is missing or not a non-empty list")
    tensors: list[JsonTensor] = []
    names: set[str] = set()
    offset = 0
    for index, entry in enumerate(entries):
        tensor, offset = parse_tensor(entry, index, kind, binary, offset)
        if tensor.name in names:
            raise InvalidArgument(f"{kind} {short(tensor.name)} is given more than once")
        names.add(tensor.name)
        tensors.append(tensor)
    if offset != len(binary):
        raise InvalidArgument(
            f"the body has {len(binary)} bytes of binary data after the JSON header but the "
            f"{kind}s' '{BINARY_SIZE}' add up to {offset}"
        )
    return tensors


def fill_tensors(messages: Any, raws: Any, tensors: list[JsonTensor], force_raw: bool) -> None:
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


def render_tensors(
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
        what = f"{kind} {short(name)}"
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
            params[BINARY_SIZE] = len(blob)
            blobs.append(blob)
        elif datatype == "BYTES":
            try:
                entry["data"] = [item.decode("utf-8") for item in arr.reshape(-1).tolist()]
            except UnicodeDecodeError:
                raise NotText(
                    f"{what}: BYTES values are not UTF-8 text and cannot go in JSON; ask for "
                    f"it with '{BINARY_OUTPUT}': true"
                ) from None
        else:
            entry["data"] = arr.reshape(-1) if NUMPY_JSON else arr.reshape(-1).tolist()
        if params:
            entry["parameters"] = params
        entries.append(entry)
    return entries, blobs
