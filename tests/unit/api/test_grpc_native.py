"""The mesh's own gRPC server (``api/grpc_native.py``) as real gRPC clients see it: grpcio's aio
channel (the C core's HTTP/2), plain and over TLS with a client certificate. Every call shape,
statuses and messages, metadata both ways, deadlines and cancellation reaching the handler, flow
control with messages larger than every window, compression, the concurrency bound and a graceful
stop. (Malformed HTTP/2 is in ``test_grpc_native_frames.py``.)"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from kserve_mesh.api.grpc_native import NativeServer, literal, parse_timeout, status_trailers
from kserve_mesh.mesh.tls import TlsFiles, TlsMaterial
from tests.support.pki import make_pki

SVC = "test.Svc"


class Handlers:
    """The methods served: echoes, failures, waits, streams; what the handlers saw is kept."""

    def __init__(self) -> None:
        self.seen_metadata: tuple[Any, ...] = ()
        self.remaining: float | None = None
        self.cancelled = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.peer = ""
        self.auth: dict[str, Any] = {}

    async def echo(self, request: bytes, context: Any) -> bytes:
        self.seen_metadata = context.invocation_metadata()
        self.remaining = context.time_remaining()
        self.peer = context.peer()
        self.auth = context.auth_context()
        await context.send_initial_metadata((("x-initial", "yes"),))
        context.set_trailing_metadata((("x-trailer", "t"), ("x-bin", b"\x00\x01")))
        return request

    def plain(self, request: bytes, context: Any) -> Any:
        async def answer() -> bytes:
            return request[::-1]
        return answer()  # a plain function returning a coroutine, as grpc_v2.ModelInfer is

    async def fail(self, request: bytes, context: Any) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "model 'x' not found — naïve")
        return b""

    async def crash(self, request: bytes, context: Any) -> bytes:
        raise RuntimeError("a secret inside the traceback")

    async def slow(self, request: bytes, context: Any) -> bytes:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return b"done"

    async def count(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        for i in range(int(request)):
            yield str(i).encode()

    async def total(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        return str(sum([len(r) async for r in requests])).encode()

    async def chat(self, requests: AsyncIterator[bytes], context: Any) -> None:
        async for r in requests:
            await context.write(b"re:" + r)


def _serve(h: Handlers, server: NativeServer) -> None:
    u, us, su, ss = (grpc.unary_unary_rpc_method_handler, grpc.unary_stream_rpc_method_handler,
                     grpc.stream_unary_rpc_method_handler, grpc.stream_stream_rpc_method_handler)
    server.add_registered_method_handlers(SVC, {
        "Echo": u(h.echo), "Plain": u(h.plain), "Fail": u(h.fail), "Crash": u(h.crash), "Slow": u(h.slow),
        "Count": us(h.count), "Total": su(h.total), "Chat": ss(h.chat)})


def _socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
async def served() -> AsyncIterator[tuple[Handlers, NativeServer, grpc.aio.Channel]]:
    h = Handlers()
    server = NativeServer(max_message=4 << 20, max_concurrent=4, handshake_timeout_s=2.0)
    _serve(h, server)
    await server.start([_socket()])
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.ports[0]}",
                                        options=[("grpc.max_receive_message_length", 64 << 20),
                                                 ("grpc.max_send_message_length", 64 << 20)])
    try:
        yield h, server, channel
    finally:
        await channel.close()
        await server.stop(0)


def _unary(channel: grpc.aio.Channel, name: str) -> Any:
    return channel.unary_unary(f"/{SVC}/{name}")


async def test_unary_echo_with_metadata_both_ways(served: Any) -> None:
    h, _, channel = served
    call = _unary(channel, "Echo")(b"hello", metadata=(("x-user", "ann"), ("x-data-bin", b"\xff\x00")),
                                   timeout=5)
    assert await call == b"hello"
    assert ("x-initial", "yes") in tuple(await call.initial_metadata())
    trailing = tuple(await call.trailing_metadata())
    assert ("x-trailer", "t") in trailing and ("x-bin", b"\x00\x01") in trailing
    seen = dict(h.seen_metadata)
    assert seen["x-user"] == "ann" and seen["x-data-bin"] == b"\xff\x00"
    assert not any(k.startswith((":", "grpc-")) or k in ("content-type", "te") for k, _ in h.seen_metadata)
    assert h.remaining is not None and 3.0 < h.remaining <= 5.0
    assert h.peer.startswith("ipv4:127.0.0.1:")
    assert await _unary(channel, "Plain")(b"abc", timeout=5) == b"cba"


async def test_errors_keep_code_and_message_and_hide_tracebacks(served: Any) -> None:
    _, _, channel = served
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _unary(channel, "Fail")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "model 'x' not found — naïve"  # percent-encoded UTF-8 in the trailer
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _unary(channel, "Crash")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNKNOWN
    assert "secret" not in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await channel.unary_unary("/test.Svc/Nope")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_deadline_and_cancel_reach_the_handler(served: Any) -> None:
    h, server, channel = served
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _unary(channel, "Slow")(b"", timeout=0.2)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await _until(lambda: h.cancelled == 1)
    h.started.clear()
    call = _unary(channel, "Slow")(b"", timeout=5)
    await asyncio.wait_for(h.started.wait(), 5)
    call.cancel()
    await _until(lambda: h.cancelled == 2 and server.active == 0)


async def test_streams_every_shape(served: Any) -> None:
    _, _, channel = served
    got = [m async for m in channel.unary_stream(f"/{SVC}/Count")(b"5", timeout=5)]
    assert got == [b"0", b"1", b"2", b"3", b"4"]

    async def parts() -> AsyncIterator[bytes]:
        for n in (3, 0, 7):
            yield b"x" * n

    assert await channel.stream_unary(f"/{SVC}/Total")(parts(), timeout=5) == b"10"
    chat = channel.stream_stream(f"/{SVC}/Chat")(timeout=5)
    for word in (b"a", b"b"):
        await chat.write(word)
        assert await chat.read() == b"re:" + word
    await chat.done_writing()
    assert await chat.read() == grpc.aio.EOF
    assert await chat.code() == grpc.StatusCode.OK


async def test_messages_larger_than_every_window_and_the_bound(served: Any) -> None:
    _, _, channel = served
    big = bytes(range(256)) * (3 << 12)  # 3 MiB: beyond the stream (1 MiB) and default (64 KiB) windows
    assert await _unary(channel, "Echo")(big, timeout=20) == big
    many = await asyncio.gather(*(_unary(channel, "Echo")(big[: 200_000 + i], timeout=20) for i in range(3)))
    assert [len(m) for m in many] == [200_000, 200_001, 200_002]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _unary(channel, "Echo")(b"x" * (5 << 20), timeout=20)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"vs. {4 << 20}" in (err.value.details() or "")
    assert await _unary(channel, "Echo")(b"after", timeout=5) == b"after"  # the connection goes on


async def test_compressed_requests_are_inflated(served: Any) -> None:
    _, _, channel = served
    for algorithm in (grpc.Compression.Gzip, grpc.Compression.Deflate):
        data = b"ab" * 50_000
        assert await _unary(channel, "Echo")(data, timeout=5, compression=algorithm) == data


async def test_the_concurrency_bound_is_a_status_not_a_hang(served: Any) -> None:
    h, server, channel = served
    slow = [asyncio.ensure_future(_unary(channel, "Slow")(b"", timeout=10)) for _ in range(4)]
    await _until(lambda: server.active == 4)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _unary(channel, "Echo")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    h.release.set()
    assert await asyncio.gather(*slow) == [b"done"] * 4
    assert await _unary(channel, "Echo")(b"ok", timeout=5) == b"ok"


async def test_many_calls_on_one_connection(served: Any) -> None:
    h = Handlers()
    server = NativeServer(max_message=1 << 20, max_concurrent=512, handshake_timeout_s=2.0)
    _serve(h, server)
    await server.start([_socket()])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.ports[0]}") as channel:
            payloads = [str(i).encode() * (i % 50 + 1) for i in range(400)]
            answers = await asyncio.gather(*(_unary(channel, "Echo")(p, timeout=10) for p in payloads))
            assert answers == payloads
        await _until(lambda: server.active == 0)
    finally:
        await server.stop(0)


async def test_stop_lets_calls_in_flight_finish_within_grace(served: Any) -> None:
    h, server, channel = served
    call = asyncio.ensure_future(_unary(channel, "Slow")(b"", timeout=10))
    await asyncio.wait_for(h.started.wait(), 5)
    stopping = asyncio.ensure_future(server.stop(5))
    await asyncio.sleep(0.2)
    h.release.set()
    assert await call == b"done"
    await asyncio.wait_for(stopping, 5)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.ports[0] if server.ports else 1}") as late:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _unary(late, "Echo")(b"", timeout=2)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


async def test_stop_cancels_what_outlives_grace(served: Any) -> None:
    h, server, channel = served
    call = asyncio.ensure_future(_unary(channel, "Slow")(b"", timeout=10))
    await asyncio.wait_for(h.started.wait(), 5)
    await asyncio.wait_for(server.stop(0.1), 5)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    assert h.cancelled == 1


async def test_tls_with_a_client_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    h, server = await _tls_served(pki, "require")
    try:
        creds = _alice(pki)
        async with grpc.aio.secure_channel(f"127.0.0.1:{server.ports[0]}", creds) as channel:
            assert await _unary(channel, "Echo")(b"over tls", timeout=5) == b"over tls"
        assert b"alice" in h.auth.get("x509_common_name", [])
        no_cert = grpc.ssl_channel_credentials(pki.ca_pem.read_bytes())
        async with grpc.aio.secure_channel(f"127.0.0.1:{server.ports[0]}", no_cert) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _unary(channel, "Echo")(b"", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def _tls_served(pki: Any, client_auth: str) -> tuple[Handlers, NativeServer]:
    """A started server over TLS with the test PKI's certificate, client certificates ``client_auth``."""
    material = TlsMaterial(TlsFiles(pki.cert, pki.key, client_ca=pki.ca_pem, client_auth=client_auth))
    h = Handlers()
    server = NativeServer(max_message=1 << 20, max_concurrent=8, handshake_timeout_s=2.0,
                          ssl_context=material.h2_server_context())
    _serve(h, server)
    await server.start([_socket()])
    return h, server


def _alice(pki: Any) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(pki.ca_pem.read_bytes(), private_key=pki.alice_key.read_bytes(),
                                        certificate_chain=pki.alice_cert.read_bytes())


def test_header_encoding_and_timeouts() -> None:
    import hpack

    block = literal(b"x-long", b"v" * 300) + status_trailers(grpc.StatusCode.INTERNAL, "50% done\nnext")
    assert hpack.Decoder().decode(block) == [("x-long", "v" * 300), ("grpc-status", "13"),
                                             ("grpc-message", "50%25 done%0Anext")]
    assert parse_timeout(b"1500m") == pytest.approx(1.5)
    assert parse_timeout(b"2H") == 7200.0 and parse_timeout(b"7n") == pytest.approx(7e-9)
    for bad in (b"", b"m", b"123456789S", b"1x", b"-1S", b"1.5S"):
        assert parse_timeout(bad) is None


async def _until(check: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


async def test_long_messages_are_cut_at_a_character_and_big_answers_refused(served: Any) -> None:
    _, server, channel = served

    async def accents(request: bytes, context: Any) -> bytes:
        await context.abort(grpc.StatusCode.INTERNAL, "é" * 3000)
        return b""

    async def huge(request: bytes, context: Any) -> bytes:
        return b"x" * ((4 << 20) + 1)

    server.add_registered_method_handlers(SVC, {"Accents": grpc.unary_unary_rpc_method_handler(accents),
                                                "Huge": grpc.unary_unary_rpc_method_handler(huge)})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _unary(channel, "Accents")(b"", timeout=5)
    assert err.value.details() == "é" * 1024  # 2,048 bytes of UTF-8, no half character
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _unary(channel, "Huge")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"Sent message larger than max ({(4 << 20) + 1} vs. {4 << 20})" in (err.value.details() or "")


async def test_optional_client_certificates_are_checked_when_sent(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    h, server = await _tls_served(pki, "optional")
    target = f"127.0.0.1:{server.ports[0]}"
    try:
        async with grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(pki.ca_pem.read_bytes())) as channel:
            assert await _unary(channel, "Echo")(b"anonymous", timeout=5) == b"anonymous"
        assert "x509_common_name" not in h.auth
        alice = _alice(pki)
        async with grpc.aio.secure_channel(target, alice) as channel:
            assert await _unary(channel, "Echo")(b"alice", timeout=5) == b"alice"
        assert h.auth["x509_common_name"] == [b"alice"]
        stranger = pki.stranger.read_bytes()
        bad = grpc.ssl_channel_credentials(pki.ca_pem.read_bytes(), private_key=stranger, certificate_chain=stranger)
        async with grpc.aio.secure_channel(target, bad) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _unary(channel, "Echo")(b"", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # a certificate from an unknown CA: refused
    finally:
        await server.stop(0)
