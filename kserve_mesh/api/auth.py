"""Who may call what: bearer tokens and client-certificate identities, each with a role.

Roles: ``infer`` may run inference and read (model metadata and status, listings, the repository
index); ``admin`` may do everything (register, unregister, vmodels, ensureLoaded, repository
load/unload, apply/delete KServe resources). Health (``/v2/health/*``, gRPC ServerLive/ServerReady,
``grpc.health.v1.Health``) stays open so that probes need no secret; gRPC server reflection needs
``infer``.

The auth file (YAML or JSON) names the callers; it is re-read when it changes::

    tokens:                       # HTTP `Authorization: Bearer <token>`, gRPC metadata `authorization`
      - {name: alice, role: admin, token: "<the token>"}
      - {name: dashboards, role: infer, sha256: "<hex SHA-256 of the token>"}   # holds no secret
    identities:                   # verified client certificates (mTLS): CN or a SAN → role
      - {name: mesh-peers, role: admin, subject: "modelmesh-serving.ns"}

Tokens are compared by their SHA-256 digests, and neither a token nor its digest is ever logged:
a refusal logs the caller's address and the reason. A missing or unknown credential is
``Unauthenticated`` (401 / UNAUTHENTICATED); a known caller without the role is
``PermissionDenied`` (403 / PERMISSION_DENIED).

Enforcement wraps the transports from outside: :func:`guard_asgi` in front of the REST app and
:class:`GuardedServer` around gRPC handler registration, so a handler of ours never sees an
unauthenticated call and the per-call cost is one dictionary lookup.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from kserve_mesh.core.errors import InvalidArgument, MeshError, PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)


class Role(enum.IntEnum):
    INFER = 1
    ADMIN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role


_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class Credentials:
    """The parsed auth file: token digests and certificate subjects, each to a principal."""

    tokens: Mapping[bytes, Principal]
    identities: Mapping[str, Principal]

    @classmethod
    def parse(cls, text: str, where: str = "auth file") -> Credentials:
        try:
            doc = yaml.safe_load(text) if text.strip() else {}
        except yaml.YAMLError as exc:
            raise InvalidArgument(f"{where} is not valid YAML/JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise InvalidArgument(f"{where} must be a mapping with 'tokens' and/or 'identities'")
        unknown = set(doc) - {"tokens", "identities"}
        if unknown:
            raise InvalidArgument(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                                  "(allowed: tokens, identities)")
        tokens: dict[bytes, Principal] = {}
        for i, entry in enumerate(_entries(doc, "tokens", where)):
            what = f"{where}: tokens[{i}]"
            _only(entry, {"name", "role", "token", "sha256"}, what)
            principal = Principal(_name(entry, what, f"token-{i}"), _role(entry, what))
            if ("token" in entry) == ("sha256" in entry):
                raise InvalidArgument(f"{what} needs exactly one of 'token' or 'sha256'")
            if "token" in entry:
                token = entry["token"]
                if not isinstance(token, str) or len(token) < 16 or not token.isprintable() or " " in token:
                    raise InvalidArgument(f"{what}: 'token' must be a printable string of at least 16 "
                                          "characters without spaces")
                digest = token_digest(token)
            else:
                value = entry["sha256"]
                if not isinstance(value, str) or not _HEX64.match(value):
                    raise InvalidArgument(f"{what}: 'sha256' must be 64 hex digits")
                digest = bytes.fromhex(value)
            if digest in tokens:
                raise InvalidArgument(f"{what}: the same token is listed twice")
            tokens[digest] = principal
        identities: dict[str, Principal] = {}
        for i, entry in enumerate(_entries(doc, "identities", where)):
            what = f"{where}: identities[{i}]"
            _only(entry, {"name", "role", "subject"}, what)
            subject = entry.get("subject")
            if not isinstance(subject, str) or not subject:
                raise InvalidArgument(f"{what}: 'subject' (a certificate CN or SAN) is required")
            identities[subject] = Principal(_name(entry, what, subject), _role(entry, what))
        return cls(tokens, identities)

    @classmethod
    def load(cls, path: Path) -> Credentials:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidArgument(f"cannot read the auth file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise InvalidArgument(f"the auth file {path} is not UTF-8 text") from None
        return cls.parse(text, f"auth file {path}")

    def __bool__(self) -> bool:
        return bool(self.tokens or self.identities)


def _entries(doc: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    value = doc.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InvalidArgument(f"{where}: '{key}' must be a list of mappings")
    return value


def _only(entry: Mapping[str, Any], allowed: set[str], what: str) -> None:
    extra = set(entry) - allowed
    if extra:
        raise InvalidArgument(f"{what}: unknown key(s) {', '.join(sorted(map(str, extra)))} "
                              f"(allowed: {', '.join(sorted(allowed))})")


def _name(entry: Mapping[str, Any], what: str, default: str) -> str:
    name = entry.get("name", default)
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{what}: 'name' must be a non-empty string")
    return name


def _role(entry: Mapping[str, Any], what: str) -> Role:
    role = entry.get("role")
    if isinstance(role, str) and role.upper() in Role.__members__:
        return Role[role.upper()]
    raise InvalidArgument(f"{what}: 'role' must be admin or infer, got {role!r}")


# -- which calls need which role --------------------------------------------------------------------

OPEN_GRPC = frozenset({"/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady",
                       "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
ADMIN_GRPC_V2 = frozenset({"/inference.GRPCInferenceService/RepositoryModelLoad",
                           "/inference.GRPCInferenceService/RepositoryModelUnload"})
INFER_GRPC_MESH = frozenset({"/mmesh.ModelMesh/getModelStatus", "/mmesh.ModelMesh/getVModelStatus"})
# Server reflection reveals service names and message shapes, no data: readers may use it.
INFER_GRPC_REFLECTION = frozenset({"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                   "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"})
OPEN_REST = frozenset({"/v2/health/live", "/v2/health/ready"})
INFER_REST_POST = frozenset({"/v2/repository/index"})
FORWARDED = b"mm-forwarded"  # a hop from a peer: served here, never placed; only peers (admin) send it


def grpc_role(method: str) -> Role | None:
    """The role a gRPC method needs (None: open to anyone)."""
    if method in OPEN_GRPC:
        return None
    if method.startswith("/inference.GRPCInferenceService/"):
        return Role.ADMIN if method in ADMIN_GRPC_V2 else Role.INFER
    if method in INFER_GRPC_MESH or method in INFER_GRPC_REFLECTION:
        return Role.INFER
    return Role.ADMIN  # management, and anything unknown


def rest_role(method: str, path: str) -> Role | None:
    """The role a REST call needs (None: open to anyone)."""
    if method in ("GET", "HEAD"):
        return None if path in OPEN_REST else Role.INFER
    if method == "POST" and (path in INFER_REST_POST or (path.startswith("/v2/models/") and path.endswith("/infer"))):
        return Role.INFER
    return Role.ADMIN  # management, the peers' forwarding route, and anything unknown


# -- checking ---------------------------------------------------------------------------------------

def bearer(value: str | bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, else None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Authenticator:
    """Checks credentials against the auth file, which it re-reads when it changes."""

    def __init__(self, path: Path | None = None, credentials: Credentials | None = None) -> None:
        self.path = path
        self._stamp = _stamp(path)
        self.credentials = credentials if credentials is not None else (
            Credentials.load(path) if path is not None else Credentials({}, {}))
        if not self.credentials:
            where = f"the auth file {path}" if path is not None else "the auth configuration"
            raise InvalidArgument(f"{where} lists no tokens and no identities: nobody could call this instance")
        self._refusals = _RefusalLog()

    def reload_if_changed(self) -> bool:
        if self.path is None:
            return False
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            credentials = Credentials.load(self.path)
        except InvalidArgument as exc:
            log.warning("the auth file changed but was not taken (the previous one stays): %s", exc)
            return False
        if not credentials:
            log.warning("the auth file %s now lists nobody; the previous one stays", self.path)
            return False
        self.credentials = credentials
        log.info("auth file %s re-read: %d tokens, %d identities", self.path, len(credentials.tokens),
                 len(credentials.identities))
        return True

    def principal(self, authorization: str | bytes | None, identities: Iterable[str] = ()) -> Principal | None:
        token = bearer(authorization)
        if token is not None:
            digest = token_digest(token)
            # A lookup by digest: its timing says nothing about the tokens themselves.
            return self.credentials.tokens.get(digest)  # a wrong token is never rescued by a certificate
        for subject in identities:
            found = self.credentials.identities.get(subject)
            if found is not None:
                return found
        return None

    def check(self, need: Role, authorization: str | bytes | None, identities: Iterable[str], what: str,
              peer: str) -> Principal:
        """The caller, if it may do ``what``; else raises Unauthenticated / PermissionDenied."""
        principal = self.principal(authorization, identities)
        if principal is None:
            reason = ("the bearer token is not known" if bearer(authorization) is not None
                      else "the Authorization header is not 'Bearer <token>'" if authorization
                      else "no credentials")
            self._refusals.note(peer, what, reason)
            raise Unauthenticated(f"{what} needs authentication: {reason} (send 'Authorization: Bearer <token>'"
                                  " or a client certificate the auth file names)")
        if principal.role < need:
            self._refusals.note(peer, what, f"'{principal.name}' has role {principal.role.label}")
            raise PermissionDenied(f"{what} needs role {need.label}; '{principal.name}' has role "
                                   f"{principal.role.label}")
        return principal


def _stamp(path: Path | None) -> tuple[int, int, int]:
    if path is None:
        return (0, 0, 0)
    try:
        st = os.stat(path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)
    except OSError:
        return (0, 0, 0)


class _RefusalLog:
    """Refusals at WARNING, at most one line per 10 s (a flood of bad calls must not flood the log)."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last = -every_s
        self._quiet = 0

    def note(self, peer: str, what: str, reason: str) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            self._quiet += 1
            return
        more = f" ({self._quiet} more refusals since the last line)" if self._quiet else ""
        log.warning("refused %s from %s: %s%s", what, peer or "?", reason, more)
        self._last, self._quiet = now, 0


# -- REST -------------------------------------------------------------------------------------------

def tls_identities(cert: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The CNs and SANs of a verified peer certificate (``SSLObject.getpeercert()``)."""
    if not cert:
        return ()
    out: list[str] = []
    for rdn in cert.get("subject", ()):
        out.extend(value for key, value in rdn if key == "commonName")
    out.extend(value for _kind, value in cert.get("subjectAltName", ()))
    return tuple(out)


def with_tls_identity(protocol: type) -> type:
    """The HTTP protocol class ``protocol`` (uvicorn's httptools one or a subclass) that puts the
    verified client certificate's names into each request's scope (``extensions.tls``)."""

    class TlsIdentityProtocol(protocol):  # type: ignore[misc, valid-type]
        _tls_names: tuple[str, ...] = ()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self._tls_names = tls_identities(ssl_object.getpeercert())

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._tls_names:
                self.scope["extensions"] = {"tls": {"client_identities": self._tls_names}}

    TlsIdentityProtocol.__name__ = f"TlsIdentity{protocol.__name__}"
    return TlsIdentityProtocol


ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def guard_asgi(app: ASGIApp, auth: Authenticator) -> ASGIApp:
    """``app`` behind the authentication and role checks of :func:`rest_role`."""

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            need = rest_role(scope["method"], scope["path"])
            if need is not None:
                authorization = None
                for name, value in scope["headers"]:
                    if name == b"authorization":
                        authorization = authorization or value
                    elif name == FORWARDED:
                        need = Role.ADMIN  # a peer's hop: it skips routing, so only peers may say so
                names = (scope.get("extensions") or {}).get("tls", {}).get("client_identities", ())
                client = scope.get("client")
                try:
                    auth.check(need, authorization, names, f"{scope['method']} {printable(scope['path'][:200])}",
                               f"{client[0]}:{client[1]}" if client else "")
                except MeshError as exc:
                    await _refuse(send, exc)
                    return
        await app(scope, receive, send)

    return guarded


def printable(text: str) -> str:
    """``text`` with control characters escaped, so that what a caller sent cannot start a log line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


async def _refuse(send: Any, exc: MeshError) -> None:
    status = 401 if isinstance(exc, Unauthenticated) else 403
    body = json.dumps({"error": exc.message, "type": type(exc).__name__}).encode()
    # The connection closes after the answer: a refused caller's body is never read on.
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="kserve-mesh"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- gRPC -------------------------------------------------------------------------------------------

def _grpc_identities(context: grpc.aio.ServicerContext) -> tuple[str, ...]:
    ctx = context.auth_context() or {}
    names = [*ctx.get("x509_common_name", ()), *ctx.get("x509_subject_alternative_name", ())]
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)


def _guard_behavior(behavior: Callable[..., Any], need: Role, method: str, auth: Authenticator,
                    streaming_response: bool) -> Callable[..., Any]:
    def check(context: grpc.aio.ServicerContext) -> MeshError | None:
        authorization = None
        required = need
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = authorization or value
            elif key == "mm-forwarded":
                required = Role.ADMIN  # a peer's hop (see FORWARDED)
        try:
            auth.check(required, authorization, _grpc_identities(context) if authorization is None else (),
                       printable(method[:200]), context.peer())
        except MeshError as exc:
            return exc
        return None

    def code(exc: MeshError) -> grpc.StatusCode:
        return grpc.StatusCode.UNAUTHENTICATED if isinstance(exc, Unauthenticated) else grpc.StatusCode.PERMISSION_DENIED

    if streaming_response and inspect.isasyncgenfunction(behavior):
        async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            refusal = check(context)
            if refusal is not None:
                await context.abort(code(refusal), refusal.message)
            async for item in behavior(request, context):
                yield item

        return guarded_stream

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        refusal = check(context)
        if refusal is not None:
            await context.abort(code(refusal), refusal.message)
        return await behavior(request, context)

    return guarded


def _guard_handler(handler: grpc.RpcMethodHandler, method: str, auth: Authenticator) -> grpc.RpcMethodHandler:
    need = grpc_role(method)
    if need is None:
        return handler
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _guard_behavior(handler.unary_unary, need, method, auth, False),
            request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _guard_behavior(handler.unary_stream, need, method, auth, True),
            request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _guard_behavior(handler.stream_unary, need, method, auth, False),
            request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(
        _guard_behavior(handler.stream_stream, need, method, auth, True),
        request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)


class _GuardedGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, auth: Authenticator) -> None:
        self.inner = inner
        self.auth = auth
        self._cache: dict[str, grpc.RpcMethodHandler | None] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        guarded = self._cache.get(method)
        if guarded is not None:
            return guarded
        handler = self.inner.service(handler_call_details)
        if handler is None:
            return None  # not ours (UNIMPLEMENTED): nothing kept for names callers make up
        guarded = self._cache[method] = _guard_handler(handler, method, self.auth)  # wrapped once per method
        return guarded


class GuardedServer:
    """Stands in for a ``grpc.aio.Server`` while services are added: every handler is wrapped with
    the authentication and role checks of :func:`grpc_role`. Everything else passes through."""

    def __init__(self, server: grpc.aio.Server, auth: Authenticator) -> None:
        self._server = server
        self._auth = auth

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_GuardedGeneric(h, self._auth) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        self._server.add_registered_method_handlers(
            service, {name: _guard_handler(h, f"/{service}/{name}", self._auth) for name, h in handlers.items()})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)
