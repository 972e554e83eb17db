"""Where payload events go: the ``payload_processors`` setting parsed into checked sink specs.

ModelMesh's ``payloadProcessors`` is a space-separated list of URIs; kserve-mesh sends to ``http://``
and ``https://`` ones (CloudEvents, see ``payload_events``). A sink may be limited to one model::

    http://sink.example:8080/events                  every model's payloads
    http://sink.example:8080/events?modelId=ID       only model ID's (ID may also be a vmodel id:
                                                     a KServe InferenceService's name)
    http://sink.example:8080/events?ID               the same, as ModelMesh wrote it
    https://user:secret@sink.example/events          TLS (system CA bundle) and HTTP Basic auth

``*`` as the id (ModelMesh's wildcard) means every model. Other query parameters stay part of the
URL the events are posted to. Anything else is refused with an ``InvalidArgument`` that names the
URL — with its credentials replaced by ``***``, as everywhere a sink is shown (logs, counters):
a scheme other than http/https, no host, a bad port, a fragment (ModelMesh's method filter: every
payload here is a V2 inference), an empty or malformed ``modelId``, or the same sink twice.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.core.ids import check_id

MODEL_ID_PARAM = "modelId"
ANY_MODEL = "*"


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """One payload sink: where to POST, what it receives, how to authenticate."""

    name: str
    """The URL as given, credentials replaced by ``***``: safe to log and to use as a label."""
    scheme: str
    """``http`` or ``https``."""
    host: str
    """Host name or address (an IPv6 address without brackets)."""
    port: int
    target: str
    """Path and query the events are posted to (the ``modelId`` filter removed)."""
    model_id: str | None = None
    """Only this model's (or vmodel's) payloads; ``None``: every model's."""
    authorization: str = field(default="", repr=False)
    """``Basic ...`` from the URL's user info, or empty; never shown."""

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    @property
    def host_header(self) -> str:
        """The ``host`` header of the requests to this sink."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.secure else 80) else f"{host}:{self.port}"


def parse_payload_processors(text: str) -> tuple[SinkSpec, ...]:
    """The sinks of a ``payload_processors`` setting (empty text: none)."""
    specs: list[SinkSpec] = []
    seen: set[tuple[str, str, int, str, str | None]] = set()
    for url in text.split():
        spec = parse_sink(url)
        key = (spec.scheme, spec.host.lower(), spec.port, spec.target, spec.model_id)
        if key in seen:
            raise InvalidArgument(f"payload processor {spec.name!r} is given twice (each copy would get every event)")
        seen.add(key)
        specs.append(spec)
    return tuple(specs)


def redact(url: str) -> str:
    """``url`` with any user info replaced by ``***``, cut short: safe for messages and logs.

    Everything before the last ``@`` ahead of the path's query is treated as user info, so a
    password with an unencoded ``/`` in it is hidden too."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _cut(url)
    head_end = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, head_end)
    if at >= 0:
        rest = "***" + rest[at:]
    return _cut(f"{scheme}://{rest}")


def parse_sink(url: str) -> SinkSpec:
    """One sink URL, checked (``InvalidArgument`` naming the redacted URL when it is not usable)."""
    name = redact(url)

    def bad(why: str) -> InvalidArgument:
        return InvalidArgument(f"payload processor {name!r}: {why}")

    if not url.isascii() or not url.isprintable():
        raise bad("a URL must be printable ASCII (percent-encode other characters)")
    try:
        parts = urlsplit(url)
    except ValueError:  # the library's message may quote the URL, credentials included
        raise bad("not a valid URL") from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise bad("the port must be a number from 1 to 65535")
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise bad("the scheme must be http:// or https:// (CloudEvents over HTTP)")
    host = parts.hostname
    if not host:
        raise bad("the URL names no host")
    if parts.fragment:
        raise bad("a #fragment (ModelMesh's method filter) is not supported: every payload is a V2 inference")
    model_id, query = _model_filter(parts.query, bad)
    authorization = ""
    if parts.username is not None or parts.password is not None:
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    if port is None:
        port = 443 if scheme == "https" else 80
    target = (parts.path or "/") + (f"?{query}" if query else "")
    return SinkSpec(name=name, scheme=scheme, host=host, port=port, target=target, model_id=model_id,
                    authorization=authorization)


def _model_filter(query: str, bad: Callable[[str], InvalidArgument]) -> tuple[str | None, str]:
    """The model id a query limits the sink to, and the query left for the target URL."""
    if not query:
        return None, ""
    if "=" not in query and "&" not in query:  # ModelMesh's form: the whole query is the model id
        return _checked_id(unquote(query), bad), ""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise bad("the query is not name=value pairs") from None
    ids = [value for key, value in pairs if key == MODEL_ID_PARAM]
    if len(ids) > 1:
        raise bad(f"'{MODEL_ID_PARAM}' is given {len(ids)} times; a sink takes one model (list the URL once per model)")
    if not ids:
        return None, query
    rest = [(key, value) for key, value in pairs if key != MODEL_ID_PARAM]
    return _checked_id(ids[0], bad), urlencode(rest, quote_via=quote)


def _checked_id(value: str, bad: Callable[[str], InvalidArgument]) -> str | None:
    if value == ANY_MODEL:
        return None
    if not value:
        raise bad(f"'{MODEL_ID_PARAM}' is empty")
    try:
        return check_id(value, MODEL_ID_PARAM)
    except InvalidArgument as exc:
        raise bad(str(exc)) from None


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
