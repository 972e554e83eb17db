"""One payload event and its wire form: a CloudEvent in HTTP binary mode, as KServe's logger sends it.

KServe's logger (``pkg/logger`` of the agent) posts every inference request and response to its
sink as a CloudEvents 1.0 *binary-mode* HTTP request: the payload as the body, with the request's
content type, and the event's attributes as ``ce-*`` headers. Consumers built for it (message
dumpers, Knative brokers, TrustyAI, data-drift collectors) read the same from kserve-mesh:

    ce-specversion            1.0
    ce-id                     the correlation id: request and response of one inference share it
                              (the V2 request ``id`` when the client set one, else a uuid4)
    ce-type                   org.kubeflow.serving.inference.request | ...inference.response
    ce-source                 kserve-mesh/<instance id> (KServe: the pod name)
    ce-time                   when the mesh saw the payload (RFC 3339, UTC), not when it was sent
    ce-inferenceservicename   the vmodel id when the request named one (a KServe InferenceService's
                              vmodel is its name), else the model id
    ce-namespace              the mesh's namespace
    ce-component              predictor    (what KServe's agent says for a predictor pod)
    ce-endpoint               default      (KServe: default | canary; a mesh has no canary)
    ce-metadata               {}           (KServe: the logged request headers, as JSON; none here)
    ce-modelid                the concrete model id that served it (ours: a vmodel moves between
                              model ids, and ``?modelId=`` filters on either)
    content-type              application/json; application/octet-stream with
                              ``inference-header-content-length`` for the V2 binary extension

Header values outside printable ASCII (and space, ``"``, ``%``) are percent-encoded, as the
CloudEvents HTTP binding says. The body is the V2 JSON request or response: REST bodies as they came
(bytes, never re-rendered), gRPC messages rendered to V2 JSON by the worker, off the request path
(JSON when every BYTES tensor is text, else the binary extension).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.protocol import rest

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
SPEC_VERSION = "1.0"
COMPONENT = "predictor"
ENDPOINT = "default"
JSON = rest.JSON_CONTENT_TYPE
HEADER_LENGTH = "inference-header-content-length"

Body = bytes | bytearray | memoryview | Callable[[], Any] | Any
"""Raw V2 REST bytes, a V2 protobuf message, or a callable returning bytes or (bytes, headers)."""

_ITEM_BYTES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2, "UINT32": 4,
               "INT32": 4, "FP32": 4}  # others (64-bit, BYTES): 8
_MESSAGE_OVERHEAD = 256
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


class PayloadEvent:
    """One request or response on its way to the sinks; shared by every sink it goes to, so it is
    rendered once (``wire``) however many sinks receive it."""

    __slots__ = ("body", "correlation_id", "headers", "kind", "model_id", "size", "time", "vmodel_id", "wire")

    def __init__(self, kind: str, model_id: str, vmodel_id: str, correlation_id: str, body: Body,
                 headers: Mapping[str, str] | None, time: float) -> None:
        self.kind = kind
        self.model_id = model_id
        self.vmodel_id = vmodel_id
        self.correlation_id = correlation_id
        self.body = body
        self.headers = headers
        self.time = time
        self.size = body_size(kind, body)
        self.wire: tuple[bytes, bytes] | None = None
        """The body to send and the event's header lines, once rendered."""


def body_size(kind: str, body: Body) -> int:
    """What holding ``body`` in a queue costs, in bytes: exact for bytes, from the tensor shapes for a
    protobuf message (never serializing it), nominal for a callable."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return len(body)
    if callable(body):
        return _MESSAGE_OVERHEAD
    raws = body.raw_input_contents if kind == REQUEST else body.raw_output_contents
    if raws:
        return _MESSAGE_OVERHEAD + sum(len(raw) for raw in raws)
    total = _MESSAGE_OVERHEAD
    for tensor in body.inputs if kind == REQUEST else body.outputs:
        total += max(0, math.prod(tensor.shape)) * _ITEM_BYTES.get(tensor.datatype, 8)
    return total


def render(kind: str, body: Body, headers: Mapping[str, str] | None) -> tuple[bytes, str, str | None]:
    """The body to send, its content type and its binary-header length (V2 binary extension)."""
    if callable(body) and not isinstance(body, (bytes, bytearray, memoryview)):
        body = body()
        if isinstance(body, tuple):
            body, headers = body
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body), *_content_headers(headers)
    data, headers = _render_message(kind, body)
    return data, *_content_headers(headers)


def _render_message(kind: str, message: Any) -> tuple[bytes, dict[str, str]]:
    """A V2 protobuf message as V2 REST: JSON, or the binary extension when a BYTES tensor is not text."""
    if kind == REQUEST:
        try:
            return rest.render_infer_request(message, binary_inputs=False)
        except InvalidArgument:  # BYTES values that are not UTF-8 text: JSON cannot carry them
            return rest.render_infer_request(message, binary_inputs=True)
    try:
        return rest.render_infer_response(message)
    except InvalidArgument:
        return rest.render_infer_response(message, rest.ResponseOptions(binary_default=True))


def _content_headers(headers: Mapping[str, str] | None) -> tuple[str, str | None]:
    """The content type and binary-header length among a body's headers (nothing else travels)."""
    if not headers:
        return JSON, None
    content_type, length = JSON, None
    for name, value in headers.items():
        low = name.lower()
        if low == "content-type" and value.isascii() and value.isprintable():
            content_type = value
        elif low == HEADER_LENGTH:
            length = value
    return content_type, length


def ce_headers(event: PayloadEvent, static: Mapping[str, str], content_type: str,
               header_length: str | None) -> dict[str, str]:
    """Every header of the event's HTTP request but the sink's own (authorization)."""
    headers = {
        **static,
        "ce-id": header_value(event.correlation_id),
        "ce-type": event.kind,
        "ce-time": ce_time(event.time),
        "ce-inferenceservicename": header_value(event.vmodel_id or event.model_id),
        "ce-modelid": header_value(event.model_id),
        "content-type": content_type,
    }
    if header_length is not None:
        headers[HEADER_LENGTH] = header_value(header_length)
    return headers


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """Header lines (``name: value\\r\\n`` each) for an HTTP/1.1 request head."""
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("latin-1")


def static_headers(source: str, namespace: str) -> dict[str, str]:
    """The attributes every event of one instance shares."""
    return {
        "ce-specversion": SPEC_VERSION,
        "ce-source": header_value(source),
        "ce-namespace": header_value(namespace),
        "ce-component": COMPONENT,
        "ce-endpoint": ENDPOINT,
        "ce-metadata": "{}",
    }


def header_value(text: str) -> str:
    """``text`` as a CloudEvents HTTP header value: printable ASCII but space, ``"`` and ``%`` as is,
    everything else percent-encoded (UTF-8)."""
    if text.isascii() and text.isprintable() and " " not in text and '"' not in text and "%" not in text:
        return text
    return quote(text, safe=_HEADER_SAFE)


def ce_time(epoch_s: float) -> str:
    """RFC 3339 UTC with microseconds, as ``ce-time`` carries it (the date and time of day are
    formatted once per second: a worker stamps thousands of events a second)."""
    global _second
    whole = math.floor(epoch_s)
    if _second[0] != whole:
        _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{min(999_999, round((epoch_s - whole) * 1e6)):06d}Z"


_second: tuple[int, str] = (-1, "")
