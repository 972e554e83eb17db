"""V2 REST bodies straight to numpy arrays and back, for a runtime in the instance's own process.

The REST front door otherwise turns a body into a ``ModelInferRequest`` that the runtime turns into
arrays, and the runtime's arrays into a ``ModelInferResponse`` that the door renders as JSON: four
conversions, about a fifth of the CPU of a small request. A runtime that takes arrays
(``runtime.spi.ArrayRuntime``, the built-in one) gets them from the body directly, and its answer is
rendered from its arrays.

Nothing a client sees changes: a body is checked by the same ``rest.parse_request_parts`` (same
errors, same order), each input becomes the array the message would have decoded to, and the answer
is the same JSON (or binary) the message would have rendered to. Outputs this module does not
render itself (BYTES, objects) go through the message as before. Two differences remain, in values
no client or model should produce: an FP32 input sent as JSON integers beyond 2**53 is rounded
once here (the message rounded it twice, through a double), and a binary output keeps booleans
other than 0/1 and signalling NaNs as the model made them (a message's typed fields normalised
them; its raw contents, used when any input was binary, did not).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kserve_mesh.protocol.datatypes import DATATYPES, datatype_of, short
from kserve_mesh.protocol.rest import ResponseOptions, parse_request_parts, render_infer_response
from kserve_mesh.protocol.rest_json import BINARY_SIZE, NUMPY_JSON, finish_body
from kserve_mesh.protocol.rest_tensors import JsonTensor
from kserve_mesh.protocol.tensors import encode_response, tensor_from_raw

__all__ = ["ArrayRequest", "parse_infer_arrays", "render_arrays_response"]

_PLAIN_KINDS = frozenset("biuf")
"""Output dtypes rendered here (booleans and numbers); anything else goes through the message."""


@dataclass(slots=True)
class ArrayRequest:
    """A V2 inference request decoded to arrays."""

    request_id: str
    arrays: dict[str, np.ndarray]
    """The inputs, by name, in the order given."""
    datatypes: dict[str, str]
    """Each input's V2 datatype as the client declared it."""
    outputs: tuple[str, ...]
    """The outputs asked for, in order; empty for all."""
    options: ResponseOptions
    raw: bool
    """Whether the message would have held its tensors raw (a binary or FP16 input): its answer too."""


def _array(tensor: JsonTensor) -> np.ndarray:
    """The array a message holding ``tensor`` decodes to (``tensors.decode_inputs``)."""
    if tensor.raw is not None:
        return tensor_from_raw(tensor.datatype, tensor.shape, tensor.raw, f"input {short(tensor.name)}")
    if tensor.datatype == "BYTES":
        values = tensor.values or []
        arr = np.empty(len(values), dtype=np.object_)
        arr[:] = values
        return arr.reshape(tensor.shape)
    assert tensor.array is not None
    return tensor.array.reshape(tensor.shape)


def parse_infer_arrays(body: bytes, header_length: int | None = None) -> ArrayRequest:
    """A V2 REST inference body as arrays (``header_length``: ``Inference-Header-Content-Length``).
    Request, input and output parameters are checked as for a message; a runtime that takes arrays
    reads none of them (the built-in runtime reads none in a message either)."""
    parts = parse_request_parts(body, header_length)
    tensors = parts.tensors
    raw = any(t.raw is not None or t.datatype == "FP16" for t in tensors)
    arrays = {t.name: _array(t) for t in tensors}
    if raw:  # a message holding raw contents decodes every input to a read-only view: so do these
        for arr in arrays.values():
            arr.setflags(write=False)
    return ArrayRequest(
        request_id=parts.request_id,
        arrays=arrays,
        datatypes={t.name: t.datatype for t in tensors},
        outputs=tuple(name for name, _ in parts.outputs),
        options=parts.options,
        raw=raw,
    )


def render_arrays_response(model_name: str, outputs: Mapping[str, Any], request: ArrayRequest) -> tuple[bytes, dict[str, str]]:
    """A model's outputs (already those ``request`` asked for, in its order) as the REST body and
    headers that ``rest.render_infer_response`` gives for the same outputs in a message."""
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    is_binary = request.options.is_binary
    for name, value in outputs.items():
        arr = np.asarray(value)
        if arr.dtype.kind not in _PLAIN_KINDS:
            return _through_message(model_name, outputs, request)
        datatype = datatype_of(arr.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}  # () for a scalar
        arr = np.ascontiguousarray(arr, dtype=DATATYPES[datatype])
        if is_binary(name):
            blob = arr.tobytes()
            entry["parameters"] = {BINARY_SIZE: len(blob)}
            blobs.append(blob)
        else:
            flat = arr.reshape(-1)
            entry["data"] = flat if NUMPY_JSON else flat.tolist()
        entries.append(entry)
    doc = {"model_name": model_name, "model_version": "", "id": request.request_id, "outputs": entries}
    return finish_body(doc, blobs)


def _through_message(model_name: str, outputs: Mapping[str, Any], request: ArrayRequest) -> tuple[bytes, dict[str, str]]:
    response = encode_response(model_name, outputs, request_id=request.request_id, raw=request.raw)
    return render_infer_response(response, request.options)
