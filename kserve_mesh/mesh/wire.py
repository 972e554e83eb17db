"""The wire format of routing and forwarding: header names, the peer route, error answers.

Clients route a request with ModelMesh's headers (gRPC metadata or HTTP headers, the same names):
``mm-vmodel-id`` / ``mm-model-id`` (or their ``-bin`` forms, for ids that are not ASCII) name the
target, ``mm-balanced: true`` says the caller spreads the load itself. Instances add three when one
forwards a request to another: ``mm-forwarded`` (the peer serves locally and never forwards again,
so a request makes one hop at most), ``mm-load`` (the peer was chosen to load the model) and
``mm-timeout-ms`` (the sender's remaining time). ``Routing`` is all of them read once, whatever the
transport; the data plane (``dataplane.py``) interprets it.

A V2 REST request is forwarded to the peer's REST port as the bytes it came with (same path, the
``CARRIED`` headers); a V2 gRPC request as a serialized ``ModelInferRequest`` POSTed to
``FORWARD_PATH`` (received by ``api/rest_peer.py``). A peer's error answer is ``error_body``'s JSON,
turned back into the mesh error it was by ``error_from_answer``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import NamedTuple

from kserve_mesh.core import errors as e

MODEL_ID = "mm-model-id"
MODEL_ID_BIN = "mm-model-id-bin"
VMODEL_ID = "mm-vmodel-id"
VMODEL_ID_BIN = "mm-vmodel-id-bin"
BALANCED = "mm-balanced"
FORWARDED = "mm-forwarded"
LOAD_HERE = "mm-load"
TIMEOUT_HEADER = "mm-timeout-ms"

FORWARD_PATH = "/mesh/v1/forward/infer"  # a V2 gRPC request forwarded as a serialized ModelInferRequest
PROTOBUF = "application/x-protobuf"
HEADER_LENGTH = "inference-header-content-length"  # V2 binary tensor extension: JSON part length
CARRIED = ("content-type", HEADER_LENGTH)
"""The request headers a forwarded REST inference keeps."""

_B_CARRIED = tuple(name.encode() for name in CARRIED)


class Routing(NamedTuple):
    """The routing headers of one request, as they came (checked where they are used). A tuple:
    read on every request, so made cheaply (most requests carry none: ``NO_ROUTING``)."""

    model_id: str = ""
    vmodel_id: str = ""
    balanced: bool = False
    forwarded: bool = False
    load: bool = False
    timeout_ms: str | None = None

    @classmethod
    def from_grpc(cls, metadata: Iterable[tuple[str, str | bytes]] | None) -> Routing:
        """From gRPC invocation metadata (``-bin`` values arrive as bytes)."""
        ours = [(k, v) for k, v in metadata or () if k.startswith("mm-")]
        return _parse(ours, http=False) if ours else NO_ROUTING

    @classmethod
    def from_http(cls, raw_headers: Iterable[tuple[bytes, bytes]]) -> Routing:
        """From an ASGI scope's raw headers (``-bin`` values are base64 text, as in gRPC's HTTP/2)."""
        ours = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw_headers if k.startswith(b"mm-")]
        return _parse(ours, http=True) if ours else NO_ROUTING

    def timeout_s(self, remaining_s: float | None, default_s: float) -> float:
        """The time this request may take: the transport's deadline (``remaining_s``) or
        ``default_s``, shortened by ``mm-timeout-ms`` (a forwarded request carries the sender's
        remaining time)."""
        limit = default_s if remaining_s is None else remaining_s
        if self.timeout_ms is not None:
            try:
                limit = min(limit, int(self.timeout_ms) / 1000)
            except ValueError:
                raise e.InvalidArgument(f"header {TIMEOUT_HEADER} must be an integer number of ms, "
                                        f"got '{self.timeout_ms[:32]}'") from None
        return max(0.001, limit)


NO_ROUTING = Routing()


def _parse(pairs: Iterable[tuple[str, str | bytes]], *, http: bool) -> Routing:
    model_id = vmodel_id = ""
    balanced = forwarded = load = False
    timeout_ms = None
    for key, value in pairs:
        if key == MODEL_ID:
            model_id = _text(key, value)
        elif key == VMODEL_ID:
            vmodel_id = _text(key, value)
        elif key == MODEL_ID_BIN:
            model_id = _binary(key, value, http)
        elif key == VMODEL_ID_BIN:
            vmodel_id = _binary(key, value, http)
        elif key == BALANCED:
            balanced = value == "true"
        elif key == FORWARDED:
            forwarded = True
        elif key == LOAD_HERE:
            load = value == "1"
        elif key == TIMEOUT_HEADER:
            timeout_ms = _text(key, value)
    return Routing(model_id, vmodel_id, balanced, forwarded, load, timeout_ms)


def _text(key: str, value: str | bytes) -> str:
    if isinstance(value, str):
        return value
    return _utf8(key, value)


def _binary(key: str, value: str | bytes, http: bool) -> str:
    if http and isinstance(value, str):
        try:
            value = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise e.InvalidArgument(f"header {key} is not base64") from None
    return _utf8(key, value) if isinstance(value, bytes) else value


def _utf8(key: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise e.InvalidArgument(f"header {key} is not UTF-8 text") from None


def header_safe(text: str) -> bool:
    """Whether ``text`` can travel as an HTTP/1.1 header value as it is."""
    return text.isascii() and text.isprintable()


def id_header(model_id: str) -> tuple[str, str]:
    """The header naming ``model_id`` in an HTTP answer: ``mm-model-id``, or ``mm-model-id-bin``
    (its UTF-8 in base64, as requests may send it) for an id that cannot be a header value as it is."""
    if header_safe(model_id):
        return MODEL_ID, model_id
    return MODEL_ID_BIN, base64.b64encode(model_id.encode("utf-8")).decode("ascii")


def carried_headers(raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The ``CARRIED`` headers of a REST request (ASGI raw headers), for forwarding it."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers if k in _B_CARRIED}


def check_forwarded(route: Routing) -> None:
    """``FORWARD_PATH`` takes only requests a mesh instance forwarded (with the concrete model id)."""
    if not (route.forwarded and route.model_id):
        raise e.InvalidArgument(f"{FORWARD_PATH} takes requests forwarded by a mesh instance "
                                f"({FORWARDED} and {MODEL_ID} headers)")


def error_body(err: e.MeshError) -> dict[str, str]:
    """A mesh error as an HTTP answer's JSON body: the message, and the error's kind for peers."""
    return {"error": err.message, "type": type(err).__name__}


def error_from_answer(status: int, body: bytes, where: str) -> e.MeshError:
    """A peer's error answer (``error_body``) as the mesh error it was."""
    try:
        doc = json.loads(body)
        message, kind = str(doc.get("error", "")), str(doc.get("type", ""))
    except (ValueError, AttributeError):
        message, kind = body[:200].decode("utf-8", "replace"), ""
    cls = getattr(e, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, e.MeshError)):
        # Not a mesh instance's answer (a proxy in between?): 503 means try elsewhere.
        cls = e.Unavailable if status == 503 else e.InternalError
    message = message or f"HTTP {status} from {where}"
    if issubclass(cls, (e.ModelNotFound, e.VModelNotFound)):
        return cls("", message)  # type: ignore[call-arg]
    return cls(message)
