"""Keep web pages from driving the mesh through their visitor's browser.

A browser lets any page send "simple" cross-site requests (a POST with ``Content-Type: text/plain``)
without asking the target first, and it attaches client certificates on its own; a page whose name
an attacker re-points at 127.0.0.1 (DNS rebinding) even talks to a loopback port as its own origin.
Against a mesh without authentication (``kserve-mesh up`` on loopback) either lets a page register
and load a model from any URL, and loading a pickled model runs its code.

So, in front of the REST app:

- a request that a browser marks as coming from another site (``Origin`` not a loopback origin, or
  ``Sec-Fetch-Site: cross-site``) is refused: no client of ours is a web page on another origin
  (the notebook and pipeline clients call from servers, which send no ``Origin``);
- on an instance bound to loopback without authentication, the ``Host`` must be an IP address,
  ``localhost``, a single-label name or a name this machine goes by: a rebound name
  (``attacker.example``) is refused.

Refusals are ``403`` with the reason; clients that are not browsers never send these headers.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

from kserve_mesh.core.net import is_ip_literal, is_loopback, split_host_port

_HOSTS_KEPT = 256
"""``Host`` values whose verdict is kept (a client's request sends the same one every time); past
this many (a client trying names) each is checked anew."""


def _origin_is_local(origin: str) -> bool:
    try:
        host = urlsplit(origin).hostname or ""
    except ValueError:
        return False
    return bool(host) and (is_loopback(host) or host.endswith(".localhost"))


def host_allowed(host_header: str, extra: Collection[str] = ()) -> bool:
    """Whether a ``Host`` names this machine in a way a web page cannot re-point: an IP address,
    ``localhost``, a single-label name (a page's own name always has a dot: ``attacker.example``), or
    a name this machine goes by."""
    host = split_host_port(host_header).rstrip(".")
    return (not host or is_ip_literal(host) or "." not in host or host.endswith(".localhost")
            or host in extra)


def guard_browsers(app: Any, *, check_host: bool, extra_hosts: Collection[str] = ()) -> Any:
    """``app`` behind the checks of the module docstring (``check_host``: the rebinding check)."""
    names = {h.lower() for h in extra_hosts if h}
    verdicts: dict[bytes, bool] = {}  # Host header -> allowed: one client sends the same one every time

    def allowed(value: bytes) -> bool:
        verdict = verdicts.get(value)
        if verdict is None:
            verdict = host_allowed(value.decode("latin-1"), names)
            if len(verdicts) < _HOSTS_KEPT:
                verdicts[value] = verdict
        return verdict

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            reason = ""
            for name, value in scope["headers"]:
                if name == b"origin":
                    origin = value.decode("latin-1")
                    if not _origin_is_local(origin):
                        reason = (f"requests from web pages on other sites are refused (Origin {origin[:100]!r}); "
                                  "call the mesh from a server or a command line, not from a browser page")
                        break
                elif name == b"sec-fetch-site" and value == b"cross-site":
                    reason = "requests a browser marks as cross-site are refused"
                    break
                elif name == b"host" and check_host and not allowed(value):
                    reason = (f"this mesh serves its loopback address only: Host {value.decode('latin-1')[:100]!r} "
                              "is not a name of this machine (use 127.0.0.1 or localhost)")
                    break
            if reason:
                body = json.dumps({"error": reason, "type": "PermissionDenied"}).encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded
