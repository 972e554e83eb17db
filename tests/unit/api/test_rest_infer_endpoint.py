"""The V2 REST inference door (``rest_v2.InferEndpoint``): served as plain ASGI (``serve``, what every
inference takes) it reads and answers exactly as its Starlette endpoint does: the body however it
arrives, the length and request-id headers, the answer's headers, and every error."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response

from kserve_mesh.api.rest_v2 import InferEndpoint, _raw_headers
from kserve_mesh.core.errors import ModelNotFound
from kserve_mesh.mesh.dataplane import RestRequest
from kserve_mesh.mesh.hops import RestAnswer
from kserve_mesh.mesh.wire import MODEL_ID, Routing


class _Plane:
    """The data plane's REST call, answering with what it read (the door is what is tested)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Routing, RestRequest]] = []

    async def infer_rest(self, name: str, route: Routing, read: Any, decoder: Any) -> RestAnswer:
        if name == "missing":
            raise ModelNotFound(name)
        body = await read()
        self.seen.append((name, route, body))
        headers = {"Content-Type": "application/json", MODEL_ID: name}
        if body.header_length is not None:
            headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "2",
                       MODEL_ID: name}
        return RestAnswer(b'{"echo":' + body.data + b"}", "application/json", headers)


async def _asgi(endpoint: InferEndpoint, via: str, name: str, headers: list[tuple[bytes, bytes]],
                chunks: list[dict[str, Any]]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    messages = iter(chunks)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": f"/v2/models/{name}/infer", "headers": headers,
             "raw_path": f"/v2/models/{name}/infer".encode(), "query_string": b"", "path_params": {"name": name}}
    if via == "serve":
        await endpoint.serve(name, scope, receive, send)
    else:
        await (await endpoint.endpoint(Request(scope, receive)))(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], sent[0]["headers"], body


CASES = [
    ("m", [(b"content-type", b"application/json")], [{"type": "http.request", "body": b"[1]"}]),
    ("m", [(b"x-request-id", b"abc"), (b"mm-timeout-ms", b"250")],
     [{"type": "http.request", "body": b"[1,", "more_body": True}, {"type": "http.request", "body": b"2]"}]),
    ("m", [(b"inference-header-content-length", b"3")], [{"type": "http.request", "body": b"[3]"}]),
    ("m", [(b"inference-header-content-length", b"three")], [{"type": "http.request", "body": b"[3]"}]),
    ("m", [], [{"type": "http.request", "body": b"[1", "more_body": True}, {"type": "http.disconnect"}]),
    ("missing", [], [{"type": "http.request", "body": b"[1]"}]),
]


@pytest.mark.parametrize(("name", "headers", "chunks"), CASES)
async def test_plain_asgi_answers_as_the_starlette_endpoint(name: str, headers: list[tuple[bytes, bytes]],
                                                            chunks: list[dict[str, Any]]) -> None:
    fast, slow = _Plane(), _Plane()
    served = await _asgi(InferEndpoint(fast, None), "serve", name, headers, chunks)  # type: ignore[arg-type]
    routed = await _asgi(InferEndpoint(slow, None), "endpoint", name, headers, chunks)  # type: ignore[arg-type]
    assert served == routed
    assert fast.seen == slow.seen


async def test_what_the_door_reads_and_answers() -> None:
    plane = _Plane()
    endpoint = InferEndpoint(plane, None)  # type: ignore[arg-type]
    status, headers, body = await _asgi(endpoint, "serve", "m", [(b"x-request-id", b"r-7"), (b"mm-timeout-ms", b"90")],
                                        CASES[1][2])
    assert (status, body) == (200, b'{"echo":[1,2]}')
    assert dict(headers) == {b"content-type": b"application/json", b"content-length": b"14", b"mm-model-id": b"m"}
    name, route, request = plane.seen[0]
    assert (name, request.data, request.request_id, request.header_length) == ("m", b"[1,2]", "r-7", None)
    assert route.timeout_s(None, 60.0) == pytest.approx(0.09)
    status, headers, body = await _asgi(endpoint, "serve", "m", [(b"inference-header-content-length", b"x")],
                                        CASES[0][2])
    assert status == 400 and b"Inference-Header-Content-Length must be an integer" in body
    status, _, body = await _asgi(endpoint, "serve", "m", [], CASES[4][2])
    assert status == 499 and b"disconnected" in body
    status, _, body = await _asgi(endpoint, "serve", "missing", [], CASES[0][2])
    assert status == 404 and b"missing" in body


@pytest.mark.parametrize("answer", [
    RestAnswer(b"{}", "application/json", {"Content-Type": "application/json", MODEL_ID: "m"}),
    RestAnswer(b"{}", "application/json", {MODEL_ID: "m", "Inference-Header-Content-Length": "2"}),  # forwarded
    RestAnswer(b"ok", "text/plain", {MODEL_ID: "m"}),
    RestAnswer(b"ok", "text/plain; charset=latin-1", {}),
    RestAnswer(b"{}", "application/json", {"Content-Length": "2", MODEL_ID: "m"}),
])
def test_answer_headers_are_the_ones_starlette_sends(answer: RestAnswer) -> None:
    starlette = Response(answer.body, media_type=answer.media_type, headers=answer.headers)
    assert _raw_headers(answer) == starlette.raw_headers
