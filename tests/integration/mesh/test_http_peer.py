"""HttpPeers, the raw REST forwarding client, against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kserve_mesh.core import errors as e
from kserve_mesh.mesh.http_peer import HttpPeers

pytestmark = pytest.mark.integration


async def _echo(request: Request) -> Response:
    body = await request.body()
    if request.headers.get("x-sleep"):
        await asyncio.sleep(float(request.headers["x-sleep"]))
    answer = {"port": request.client.port if request.client else 0, "body": body.decode(),
              "path": request.url.path, "timeout_ms": request.headers.get("mm-timeout-ms"),
              "model": request.headers.get("mm-model-id"), "length": request.headers.get("content-length")}
    return JSONResponse(answer, headers={"inference-header-content-length": "7"})


async def _fail(request: Request) -> Response:
    kind = request.path_params["kind"]
    if kind == "invalid":
        return JSONResponse({"error": "input 'x' has no data", "type": "InvalidArgument"}, status_code=400)
    if kind == "load":
        return JSONResponse({"error": "model 'm' failed to load: boom", "type": "ModelLoadFailed"}, status_code=503)
    if kind == "missing":
        return JSONResponse({"error": "model 'm' not found", "type": "ModelNotFound"}, status_code=404)
    return Response(b"<html>bad gateway</html>", status_code=502, media_type="text/html")


APP = Starlette(routes=[Route("/v2/models/{name}/infer", _echo, methods=["POST"]),
                        Route("/fail/{kind}", _fail, methods=["POST"])])


@asynccontextmanager
async def _server(keep_alive_s: float = 5.0) -> AsyncIterator[str]:
    config = uvicorn.Config(APP, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                            timeout_keep_alive=keep_alive_s)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def _json(answer) -> dict:  # type: ignore[no-untyped-def]
    assert answer.status == 200, answer
    return json.loads(answer.body)


async def test_forwards_bytes_and_headers_and_reuses_the_connection() -> None:
    async with _server() as url:
        peers = HttpPeers()
        try:
            body = b'{"inputs": []}'
            first = await peers.post(url, "/v2/models/m%201/infer", body, {"mm-model-id": "m 1"}, 5.0)
            doc = _json(first)
            assert doc["body"] == body.decode() and doc["path"] == "/v2/models/m 1/infer"
            assert doc["model"] == "m 1" and doc["length"] == str(len(body))
            assert 4000 <= int(doc["timeout_ms"]) <= 5000  # the remaining time travels along
            assert first.headers["inference-header-content-length"] == "7"
            second = _json(await peers.post(url, "/v2/models/m/infer", b"x" * 100_000, {}, 5.0))
            assert second["port"] == doc["port"]  # the same keep-alive connection
            assert len(second["body"]) == 100_000
            peers.drop(url)  # the peer left the mesh: its idle connections are closed
            third = _json(await peers.post(url, "/v2/models/m/infer", b"3", {}, 5.0))
            assert third["port"] != doc["port"]
        finally:
            peers.close()


async def test_a_connection_closed_by_the_peer_is_replaced() -> None:
    async with _server(keep_alive_s=0.2) as url:
        peers = HttpPeers()
        try:
            one = _json(await peers.post(url, "/v2/models/m/infer", b"1", {}, 5.0))
            await asyncio.sleep(0.5)  # uvicorn closes the idle connection
            two = _json(await peers.post(url, "/v2/models/m/infer", b"2", {}, 5.0))
            assert two["body"] == "2" and two["port"] != one["port"]
        finally:
            peers.close()


async def test_concurrency_is_capped_per_peer_and_every_caller_is_answered() -> None:
    async with _server() as url:
        peers = HttpPeers(max_connections=2)
        try:
            answers = await asyncio.gather(*(peers.post(url, "/v2/models/m/infer", str(i).encode(),
                                                        {"x-sleep": "0.05"}, 10.0) for i in range(8)))
            docs = [_json(a) for a in answers]
            assert sorted(d["body"] for d in docs) == [str(i) for i in range(8)]
            assert len({d["port"] for d in docs}) <= 2
        finally:
            peers.close()


async def test_deadline_unreachable_peer_and_error_answers() -> None:
    async with _server() as url:
        peers = HttpPeers()
        try:
            began = time.monotonic()
            with pytest.raises(e.DeadlineExceeded, match="did not answer"):
                await peers.post(url, "/v2/models/m/infer", b"", {"x-sleep": "2"}, 0.2)
            assert time.monotonic() - began < 1.5
            # The connection of the timed-out call is dropped; the next call still works.
            assert _json(await peers.post(url, "/v2/models/m/infer", b"ok", {}, 5.0))["body"] == "ok"

            cases = {"invalid": (e.InvalidArgument, "no data"), "load": (e.ModelLoadFailed, "boom"),
                     "missing": (e.ModelNotFound, "not found"), "html": (e.InternalError, "bad gateway")}
            for kind, (cls, text) in cases.items():
                answer = await peers.post(url, f"/fail/{kind}", b"", {}, 5.0)
                err = peers.error(answer, url)
                assert type(err) is cls and text in err.message, (kind, err)
        finally:
            peers.close()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    peers = HttpPeers()
    with pytest.raises(e.Unavailable, match="unavailable"):
        await peers.post(f"http://127.0.0.1:{free}", "/v2/models/m/infer", b"", {}, 2.0)
    peers.close()
