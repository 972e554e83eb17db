"""Web pages cannot drive the mesh through a browser (api/browser_guard.py), and the auth guard's
own edges (api/auth.py): a peer's hop needs admin, refusals close the connection, request paths are
logged without control characters. ASGI apps are called directly."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kserve_mesh.api import browser_guard
from kserve_mesh.api.auth import Authenticator, Credentials, guard_asgi, printable
from kserve_mesh.api.browser_guard import guard_browsers, host_allowed

INFER = "infer-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
AUTH = Authenticator(credentials=Credentials.parse(
    f"tokens: [{{name: ops, role: admin, token: {ADMIN}}}, {{name: dash, role: infer, token: {INFER}}}]"))


async def call(app: Any, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any], dict]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "client": ("127.0.0.1", 5),
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    await app(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), json.loads(body) if body else {}


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


@pytest.mark.parametrize(("headers", "allowed"), [
    ({}, True),
    ({"origin": "http://localhost:8888"}, True),            # a local notebook page
    ({"origin": "http://127.0.0.1:3000"}, True),
    ({"origin": "https://attacker.example"}, False),
    ({"origin": "null"}, False),                            # sandboxed frames, file:// pages
    ({"sec-fetch-site": "cross-site"}, False),
    ({"sec-fetch-site": "same-origin"}, True),
    ({"host": "127.0.0.1:8008"}, True),
    ({"host": "localhost:8008"}, True),
    ({"host": "[::1]:8008"}, True),
    ({"host": "10.1.2.3"}, True),                           # an address cannot be re-pointed by DNS
    ({"host": "attacker.example:8008"}, False),             # DNS rebinding
    ({"host": "t"}, True),                                  # single-label names cannot be a page's
    ({"host": "laptop.corp.example:8008"}, True),           # a name this machine gave
    ({"host": "attacker.example.:8008"}, False),
])
async def test_browser_requests_from_elsewhere_are_refused(headers: dict[str, str], allowed: bool) -> None:
    app = guard_browsers(ok_app, check_host=True, extra_hosts=["laptop.corp.example"])
    status, raw, body = await call(app, "POST", "/mesh/v1/apply", headers)
    assert (status == 200) is allowed, body
    if not allowed:
        assert status == 403 and body["type"] == "PermissionDenied" and raw[b"connection"] == b"close"


async def test_host_verdicts_kept_stay_right_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser_guard, "_HOSTS_KEPT", 3)
    app = guard_browsers(ok_app, check_host=True)
    for _ in range(3):  # asked again and again, a kept verdict answers as the first check did
        for n in range(6):  # more names than are kept: those past the bound are checked anew each time
            assert (await call(app, "POST", "/mesh/v1/apply", {"host": f"evil{n}.example"}))[0] == 403
            assert (await call(app, "POST", "/mesh/v1/apply", {"host": f"127.0.0.{n}:8008"}))[0] == 200
    calls: list[str] = []
    monkeypatch.setattr(browser_guard, "host_allowed", lambda host, extra: calls.append(host) or True)
    fresh = guard_browsers(ok_app, check_host=True)
    for _ in range(4):
        await call(fresh, "GET", "/v2", {"host": "a.example"})
        await call(fresh, "GET", "/v2", {"host": "b.example"})
    assert calls == ["a.example", "b.example"]  # each checked once, then kept


async def test_the_host_check_is_only_for_a_loopback_mesh_without_auth() -> None:
    app = guard_browsers(ok_app, check_host=False)
    assert (await call(app, "GET", "/v2", {"host": "mesh.internal:8008"}))[0] == 200
    assert (await call(app, "GET", "/v2", {"host": "mesh.internal", "origin": "https://a.example"}))[0] == 403
    assert host_allowed("") and not host_allowed("evil.example")


async def test_a_peers_hop_needs_the_admin_role_and_refusals_close_the_connection() -> None:
    app = guard_asgi(ok_app, AUTH)
    reader = {"authorization": f"Bearer {INFER}"}
    assert (await call(app, "POST", "/v2/models/m/infer", reader))[0] == 200
    status, raw, body = await call(app, "POST", "/v2/models/m/infer", {**reader, "mm-forwarded": "1"})
    assert status == 403 and "needs role admin" in body["error"] and raw[b"connection"] == b"close"
    assert (await call(app, "POST", "/mesh/v1/forward/infer", reader))[0] == 403
    assert (await call(app, "POST", "/mesh/v1/forward/infer", {"authorization": f"Bearer {ADMIN}"}))[0] == 200
    status, raw, _ = await call(app, "GET", "/mesh/v1/models", {})
    assert status == 401 and raw[b"connection"] == b"close"


def test_what_a_caller_sent_is_logged_without_control_characters() -> None:
    assert printable("/mesh/v1/models/x") == "/mesh/v1/models/x"
    forged = printable("/x\n2031-01-01 WARNING forged\r\x1b[31m")
    assert "\n" not in forged and "\r" not in forged and "\x1b" not in forged and "\\n2031" in forged
