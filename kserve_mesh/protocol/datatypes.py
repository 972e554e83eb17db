"""The V2 datatypes and what every tensor check shares: the numpy dtype and typed contents field of
each datatype, shapes (at most ``MAX_DIMS`` dimensions, element counts), the raw form of BYTES
elements, and the short texts error messages use.

A tensor has at most ``MAX_DIMS`` dimensions (numpy's own limit), checked before anything else;
messages show a shape's first dimensions only (``shape_text``) and a name or datatype cut short
(``short``), so an error about a 20,000-dimension shape or a 1 MiB name stays small (gRPC refuses
error details over 16 KiB).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from kserve_mesh.core.errors import InvalidArgument

__all__ = [
    "CONTENTS_FIELDS",
    "DATATYPES",
    "MAX_DIMS",
    "MAX_ELEMENTS",
    "SHOWN_DIMS",
    "as_bytes",
    "check_dims",
    "datatype_of",
    "deserialize_bytes",
    "dtype_of",
    "element_count",
    "serialize_bytes",
    "shape_text",
    "short",
]

DATATYPES: Mapping[str, np.dtype] = MappingProxyType(
    {
        "BOOL": np.dtype(np.bool_),
        "UINT8": np.dtype("<u1"),
        "UINT16": np.dtype("<u2"),
        "UINT32": np.dtype("<u4"),
        "UINT64": np.dtype("<u8"),
        "INT8": np.dtype("<i1"),
        "INT16": np.dtype("<i2"),
        "INT32": np.dtype("<i4"),
        "INT64": np.dtype("<i8"),
        "FP16": np.dtype("<f2"),
        "FP32": np.dtype("<f4"),
        "FP64": np.dtype("<f8"),
        "BYTES": np.dtype(np.object_),
    }
)
"""V2 datatype name -> the numpy dtype its tensors decode to (little-endian, as on the wire)."""

CONTENTS_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "BOOL": "bool_contents",
        "UINT8": "uint_contents",
        "UINT16": "uint_contents",
        "UINT32": "uint_contents",
        "UINT64": "uint64_contents",
        "INT8": "int_contents",
        "INT16": "int_contents",
        "INT32": "int_contents",
        "INT64": "int64_contents",
        "FP32": "fp32_contents",
        "FP64": "fp64_contents",
        "BYTES": "bytes_contents",
    }
)
"""V2 datatype name -> the typed ``InferTensorContents`` field that carries it (FP16 has none)."""

_BY_KIND_SIZE = {
    (dt.kind, dt.itemsize): name for name, dt in DATATYPES.items() if name != "BYTES"
}
_LENGTH = struct.Struct("<I")


def _numpy_max_dims() -> int:
    try:
        np.empty((1,) * 64)
    except ValueError:  # numpy 1.x: 32
        return 32
    return 64


MAX_DIMS = _numpy_max_dims()
"""Most dimensions a tensor may have: 64 (numpy 2's limit; 32 under numpy 1.x, whose limit it is)."""

SHOWN_DIMS = 8
"""How many dimensions of a shape an error message shows."""


def short(value: Any, limit: int = 64) -> str:
    """``repr(value)`` cut to about ``limit`` characters for an error message."""
    text = repr(value[: limit + 1] if isinstance(value, str | bytes) else value)
    return text if len(text) <= limit else text[:limit] + "..."


def shape_text(shape: Sequence[int], limit: int = SHOWN_DIMS) -> str:
    """A shape for an error message: its first ``limit`` dimensions and how many there are."""
    if len(shape) <= limit:
        return str(list(shape))
    return "[" + ", ".join(str(dim) for dim in shape[:limit]) + f", ... ({len(shape)} dimensions)]"


def check_dims(shape: Sequence[int], what: str) -> None:
    """Refuse a shape of more than ``MAX_DIMS`` dimensions (``what`` names the tensor)."""
    if len(shape) > MAX_DIMS:
        raise InvalidArgument(f"{what}: shape {shape_text(shape)} has too many dimensions; a tensor has at "
                              f"most {MAX_DIMS}")


def datatype_of(dtype: Any) -> str:
    """The V2 datatype of a numpy dtype (or anything ``np.dtype`` accepts); strings map to BYTES."""
    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return "BYTES"
    name = _BY_KIND_SIZE.get((dt.kind, dt.itemsize))
    if name is None:
        raise InvalidArgument(f"numpy dtype {dt} has no V2 datatype")
    return name


def dtype_of(datatype: str) -> np.dtype:
    """The numpy dtype of a V2 datatype name, e.g. ``"FP32"`` -> ``float32``."""
    try:
        return DATATYPES[datatype]
    except (KeyError, TypeError):
        raise InvalidArgument(
            f"unknown datatype {short(datatype)} (V2 datatypes: {', '.join(DATATYPES)})"
        ) from None


MAX_ELEMENTS = 2**48
"""Most elements a tensor's shape may describe (counting only its non-zero dimensions, as numpy
does when it sizes an array): far beyond any message, and far inside numpy's limits."""


def element_count(shape: Sequence[int], what: str) -> int:
    """The number of elements of a shape; ``what`` names the tensor in the error message. A shape
    of more than ``MAX_DIMS`` dimensions is refused first."""
    check_dims(shape, what)
    nominal = 1
    for dim in shape:
        if dim < 0:
            raise InvalidArgument(f"{what}: shape {shape_text(shape)} has a negative dimension")
        if dim:
            nominal *= dim
    if nominal > MAX_ELEMENTS:
        raise InvalidArgument(f"{what}: shape {shape_text(shape)} describes more than {MAX_ELEMENTS} elements")
    return math.prod(shape)


def as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return str(value).encode("utf-8")


def serialize_bytes(values: Iterable[Any]) -> bytes:
    """The raw V2 form of BYTES elements: each a 4-byte little-endian length, then its bytes."""
    pack = _LENGTH.pack
    parts: list[bytes] = []
    append = parts.append
    for value in values:
        data = value if type(value) is bytes else as_bytes(value)
        append(pack(len(data)))
        append(data)
    return b"".join(parts)


def deserialize_bytes(buffer: bytes | memoryview, count: int, what: str) -> list[bytes]:
    """Split raw BYTES contents into exactly ``count`` elements (errors name ``what``)."""
    view = memoryview(buffer)
    size = len(view)
    unpack = _LENGTH.unpack_from
    items: list[bytes] = []
    offset = 0
    while offset < size:
        if offset + 4 > size:
            raise InvalidArgument(
                f"{what}: raw BYTES contents end inside an element's 4-byte length prefix"
            )
        (length,) = unpack(view, offset)
        offset += 4
        if offset + length > size:
            raise InvalidArgument(
                f"{what}: raw BYTES element {len(items)} declares {length} bytes but only "
                f"{size - offset} remain"
            )
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise InvalidArgument(
            f"{what}: raw BYTES contents hold {len(items)} elements, the shape needs {count}"
        )
    return items
