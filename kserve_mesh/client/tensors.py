"""numpy / pandas / lists <-> V2 REST tensors, on the client side.

The SDK speaks the Open Inference Protocol's REST form: a JSON body, or with ``binary=True`` the
binary tensor data extension (a JSON header of ``Inference-Header-Content-Length`` bytes followed by
raw little-endian tensors; BYTES elements 4-byte length-prefixed). It has its own small codec, so
that importing the client never loads the server's protobuf messages.

Inputs are named and typed from the model's V2 metadata where the caller leaves it open: a bare
array goes to the model's only input, a float64 array meant for an FP32 input is cast, and a pandas
DataFrame is one input per column when its columns are the model's input names, else one 2-D input.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kserve_mesh.client.errors import InvalidInputError

HEADER_LENGTH = "Inference-Header-Content-Length"

_TO_NUMPY: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}
_FROM_KIND = {"b": "BOOL", "U": "BYTES", "S": "BYTES", "O": "BYTES"}


def datatype_of(arr: np.ndarray) -> str:
    """The V2 datatype of a numpy array (strings and objects are BYTES)."""
    if arr.dtype.kind in _FROM_KIND:
        return _FROM_KIND[arr.dtype.kind]
    for name, np_type in _TO_NUMPY.items():
        if name != "BOOL" and np.dtype(np_type) == arr.dtype.newbyteorder("<"):
            return name
    raise InvalidInputError(f"arrays of dtype {arr.dtype} cannot be sent; use numbers, booleans or strings")


def _as_array(value: Any, name: str) -> np.ndarray:
    if _is_dataframe(value) or _is_series(value):
        value = value.to_numpy()
    try:
        arr = np.asarray(value)
    except ValueError as exc:
        raise InvalidInputError(f"input '{name}' is ragged (rows of different lengths): {exc}") from None
    if arr.dtype.kind == "O":
        flat = arr.ravel().tolist()
        if not all(isinstance(v, (str, bytes)) for v in flat):
            raise InvalidInputError(f"input '{name}' mixes strings and other values, or is ragged")
    return arr


def _is_dataframe(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and hasattr(value, "columns") and hasattr(value, "to_numpy")


def _is_series(value: Any) -> bool:
    return type(value).__name__ == "Series" and hasattr(value, "to_numpy")


def _is_v2_request(value: Any) -> bool:
    return (isinstance(value, Mapping) and isinstance(value.get("inputs"), list)
            and all(isinstance(t, Mapping) and "name" in t for t in value["inputs"]))


def named_inputs(inputs: Any, metadata: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """``inputs`` as input name -> array, named (and cast) from the model's V2 metadata."""
    meta_inputs = list((metadata or {}).get("inputs") or [])
    names = [str(m.get("name")) for m in meta_inputs]
    if isinstance(inputs, Mapping):
        out = {str(k): _as_array(v, str(k)) for k, v in inputs.items()}
    elif _is_dataframe(inputs) and names and set(names) == {str(c) for c in inputs.columns} and len(names) > 1:
        out = {n: _as_array(inputs[n], n) for n in names}
    else:
        if len(names) > 1:
            raise InvalidInputError(
                f"the model has {len(names)} inputs ({', '.join(names)}); pass a dict of input name -> array")
        out = {names[0] if names else "input-0": _as_array(inputs, names[0] if names else "input-0")}
    if names:
        unknown = sorted(set(out) - set(names))
        if unknown:
            raise InvalidInputError(f"unknown input {', '.join(map(repr, unknown))}; the model's inputs are "
                                    f"{', '.join(map(repr, names))}")
    expected = {str(m.get("name")): str(m.get("datatype", "")) for m in meta_inputs}
    for name, arr in out.items():
        want = expected.get(name, "")
        if want in _TO_NUMPY and arr.dtype.kind in "iufb" and datatype_of(arr) != want:
            out[name] = arr.astype(_TO_NUMPY[want])
    return out


def _json_data(arr: np.ndarray, datatype: str, name: str) -> list[Any]:
    flat = arr.ravel()
    if datatype != "BYTES":
        return flat.tolist()
    data = []
    for v in flat.tolist():
        if isinstance(v, bytes):
            try:
                v = v.decode()
            except UnicodeDecodeError:
                raise InvalidInputError(f"input '{name}' holds bytes that are not UTF-8; send it with binary=True") from None
        data.append(v)
    return data


def _raw(arr: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for v in arr.ravel().tolist():
            b = v if isinstance(v, bytes) else str(v).encode()
            parts.append(struct.pack("<I", len(b)) + b)
        return b"".join(parts)
    return np.ascontiguousarray(arr, dtype=_TO_NUMPY[datatype]).tobytes()


def encode_request(inputs: Mapping[str, np.ndarray], *, outputs: Sequence[str] | None = None,
                   binary: bool = False, request_id: str = "") -> tuple[bytes, dict[str, str]]:
    """The REST body and headers of a V2 inference request."""
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, arr in inputs.items():
        datatype = datatype_of(arr)
        tensor: dict[str, Any] = {"name": name, "shape": list(arr.shape), "datatype": datatype}
        if binary:
            blob = _raw(arr, datatype)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = _json_data(arr, datatype, name)
        tensors.append(tensor)
    body: dict[str, Any] = {"inputs": tensors}
    if request_id:
        body["id"] = request_id
    if outputs:
        body["outputs"] = [{"name": o, "parameters": {"binary_data": binary}} for o in outputs]
    if binary:
        body["parameters"] = {"binary_data_output": True}
    header = json.dumps(body, separators=(",", ":")).encode()
    if not binary:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def split_response(content: bytes, headers: Mapping[str, str]) -> tuple[dict[str, Any], bytes]:
    """The JSON header of a V2 response and the binary tensor data after it (if any)."""
    length = headers.get(HEADER_LENGTH) or headers.get(HEADER_LENGTH.lower())
    if length is None:
        return json.loads(content), b""
    n = int(length)
    return json.loads(content[:n]), content[n:]


def _bytes_elements(raw: bytes, count: int, name: str) -> list[bytes]:
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(raw):
            raise InvalidInputError(f"output '{name}' is truncated")
        (n,) = struct.unpack_from("<I", raw, pos)
        out.append(raw[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def _text(values: list[Any]) -> np.ndarray:
    items = []
    for v in values:
        if isinstance(v, bytes):
            try:
                v = v.decode()
            except UnicodeDecodeError:
                pass
        items.append(v)
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def decode_outputs(header: Mapping[str, Any], binary: bytes) -> dict[str, np.ndarray]:
    """Output name -> numpy array (BYTES as an object array of str, or bytes when not UTF-8)."""
    out: dict[str, np.ndarray] = {}
    pos = 0
    for t in header.get("outputs") or []:
        name, datatype, shape = t["name"], t["datatype"], [int(d) for d in t.get("shape", [])]
        count = int(np.prod(shape)) if shape else 1
        size = (t.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = binary[pos:pos + int(size)]
            pos += int(size)
            if datatype == "BYTES":
                arr = _text(_bytes_elements(raw, count, name))
            else:
                arr = np.frombuffer(raw, dtype=_TO_NUMPY[datatype]).copy()
        elif datatype == "BYTES":
            arr = _text(list(np.asarray(t.get("data", []), dtype=object).ravel()))
        else:
            arr = np.asarray(t.get("data", []), dtype=_TO_NUMPY.get(datatype, "<f8")).ravel()
        out[name] = arr.reshape(shape)
    return out


def example_request(metadata: Mapping[str, Any], rows: int = 1) -> dict[str, Any]:
    """A valid-looking V2 JSON request from a model's metadata: ``-1`` dimensions become ``rows``,
    numbers are zeros (booleans false) and BYTES are ``"text"``."""
    inputs = []
    for m in metadata.get("inputs") or []:
        shape = [rows if int(d) < 0 else int(d) for d in m.get("shape") or [rows]]
        count = int(np.prod(shape)) if shape else 1
        datatype = str(m.get("datatype", "FP64"))
        fill: Any = "text" if datatype == "BYTES" else (False if datatype == "BOOL" else
                                                          (0.0 if datatype.startswith("FP") else 0))
        inputs.append({"name": m.get("name"), "shape": shape, "datatype": datatype, "data": [fill] * count})
    return {"inputs": inputs}
