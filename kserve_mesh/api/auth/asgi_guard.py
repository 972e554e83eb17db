"""The REST side of authentication: :func:`guard_asgi` in front of the ASGI app (one role check per
request, before the app sees it) and the uvicorn protocol that hands a verified client
certificate's names to each request (:func:`with_tls_identity`)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kserve_mesh.api.auth.authenticator import Authenticator, printable
from kserve_mesh.api.auth.credentials import Role
from kserve_mesh.api.auth.policy import FORWARDED, rest_role
from kserve_mesh.core.errors import MeshError, Unauthenticated


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
