"""The V2 REST body format: JSON (through orjson when it is installed, which serializes numpy
arrays natively, else the standard library), the binary data extension's header and parameters,
what the client asked for in the response (``ResponseOptions``), and the checks every body shares.

A body with binary tensors is a JSON header of ``Inference-Header-Content-Length`` bytes followed
by the tensors' raw bytes (``split_body`` / ``finish_body``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kserve_mesh.core.errors import InvalidArgument

try:  # orjson is optional: several times faster, and serializes numpy arrays itself
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only where orjson is missing
    _orjson = None

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"

# Parameters that steer the REST encoding only; they are not passed on to the model.
BINARY_SIZE = "binary_data_size"
BINARY_OUTPUT = "binary_data"
BINARY_ALL = "binary_data_output"

NUMPY_JSON = _orjson is not None
"""Whether ``dumps`` takes numpy arrays as they are (orjson); else they go in as lists."""


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


def split_body(body: bytes, header_length: int | None) -> tuple[Any, memoryview]:
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


def json_parameters(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what}: 'parameters' must be an object")
    return value


def string_field(doc: dict, key: str) -> str:
    value = doc.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"'{key}' must be a string")
    return value


def finish_body(doc: dict[str, Any], blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    header = dumps(doc)
    if not blobs:
        return header, {"Content-Type": JSON_CONTENT_TYPE}
    return b"".join([header, *blobs]), {
        "Content-Type": BINARY_CONTENT_TYPE,
        HEADER_LENGTH: str(len(header)),
    }
