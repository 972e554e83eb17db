"""The load generator of ``latency.py``: one client process per target, driven over stdin/stdout.

It lives in its own process so that it never shares an interpreter (or a GIL) with a server it
measures, and it keeps its own cost per request low: the request is encoded once by the parent
and sent as opaque bytes (a raw gRPC ``unary_unary`` with identity (de)serializers, or an
``http.client`` keep-alive connection with a pre-encoded body). It imports only ``grpc`` and the
standard library, so it never loads a second set of ``inference.*`` protos.

Started as ``python benchmarks/loadgen.py grpc|rest ADDRESS MODEL BODY_FILE``; then each line on
stdin is one JSON command, answered by one JSON line on stdout:

    {"op": "seq", "n": 500, "warmup": 50}         -> {"samples_ns": [...], "errors": 0, "error": ""}
    {"op": "tput", "concurrency": 4, "seconds": 3} -> {"count": N, "seconds": S, "errors": 0, "error": ""}
    {"op": "quit"}                                 -> (exits)

``seq``: one client, ``n`` requests one after the other (after ``warmup`` unmeasured ones), each
timed with ``perf_counter_ns``. ``tput``: ``concurrency`` clients (threads, each with its own
connection), each sending back to back for ``seconds``; the answer counts completed requests.
A failed request counts as an error; the first error's message comes back in ``error``.
"""

from __future__ import annotations

import gc
import http.client
import json
import os
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
CALL_TIMEOUT_S = 30.0

Send = Callable[[], None]


# TLS and authentication of the target, from the environment (benchmarks/tls.py sets them):
# LOADGEN_CA (PEM bundle to trust), LOADGEN_CERT (PEM client certificate + key), LOADGEN_TOKEN.
CA = os.environ.get("LOADGEN_CA", "")
CLIENT_CERT = os.environ.get("LOADGEN_CERT", "")
TOKEN = os.environ.get("LOADGEN_TOKEN", "")


def _pem_parts(path: str) -> tuple[bytes, bytes]:
    """(certificate chain, private key) from one PEM file holding both."""
    blocks = [(m.group(1), m.group(0)) for m in
              re.finditer(rb"-----BEGIN ([A-Z ]+)-----.*?-----END \1-----\n?", Path(path).read_bytes(), re.DOTALL)]
    cert = b"".join(block for kind, block in blocks if kind.endswith(b"CERTIFICATE"))
    key = b"".join(block for kind, block in blocks if kind.endswith(b"PRIVATE KEY"))
    return cert, key


class GrpcClient:
    """One gRPC channel (its own HTTP/2 connection) sending the pre-encoded request."""

    def __init__(self, address: str, body: bytes) -> None:
        # A local subchannel pool gives every client its own connection, as separate clients have.
        options = [("grpc.use_local_subchannel_pool", 1)]
        if CA:
            cert, key = _pem_parts(CLIENT_CERT) if CLIENT_CERT else (None, None)
            creds = grpc.ssl_channel_credentials(Path(CA).read_bytes(), private_key=key, certificate_chain=cert)
            self.channel = grpc.secure_channel(address, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self._call = self.channel.unary_unary(INFER_METHOD)  # no serializers: bytes in, bytes out
        self._body = body
        self._metadata = (("authorization", f"Bearer {TOKEN}"),) if TOKEN else None

    def send(self) -> None:
        self._call(self._body, timeout=CALL_TIMEOUT_S, metadata=self._metadata)

    def reset(self) -> None:
        """Nothing to do: a gRPC channel reconnects by itself."""

    def close(self) -> None:
        self.channel.close()


class RestClient:
    """One keep-alive HTTP/1.1 connection posting the pre-encoded JSON body."""

    def __init__(self, address: str, model: str, body: bytes) -> None:
        secure = address.startswith("https://")
        host, port = address.removeprefix("https://" if secure else "http://").rsplit(":", 1)
        if secure:
            ctx = ssl.create_default_context(cafile=CA or None)
            if CLIENT_CERT:
                ctx.load_cert_chain(CLIENT_CERT)
            self.conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, int(port), timeout=CALL_TIMEOUT_S, context=ctx)
        else:
            self.conn = http.client.HTTPConnection(host, int(port), timeout=CALL_TIMEOUT_S)
        self._path = f"/v2/models/{model}/infer"
        self._body = body
        self._headers = {"content-type": "application/json"}
        if TOKEN:
            self._headers["authorization"] = f"Bearer {TOKEN}"

    def send(self) -> None:
        self.conn.request("POST", self._path, self._body, self._headers)
        resp = self.conn.getresponse()
        payload = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {payload[:200]!r}")

    def reset(self) -> None:
        """Drop the connection (the server closes idle keep-alive ones); the next request reopens it."""
        self.conn.close()

    def close(self) -> None:
        self.conn.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        return f"gRPC {exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
    return f"{type(exc).__name__}: {exc}"


class LoadGen:
    def __init__(self, kind: str, address: str, model: str, body: bytes) -> None:
        if kind not in ("grpc", "rest"):
            raise SystemExit(f"loadgen: unknown transport {kind!r} (grpc or rest)")
        self.kind, self.address, self.model, self.body = kind, address, model, body
        self.client = self.new_client()

    def new_client(self) -> GrpcClient | RestClient:
        if self.kind == "grpc":
            return GrpcClient(self.address, self.body)
        return RestClient(self.address, self.model, self.body)

    def sequential(self, n: int, warmup: int) -> dict[str, object]:
        send = self.client.send
        errors, first_error = 0, ""
        self.client.reset()
        for _ in range(max(1, warmup)):  # at least one, so a reconnect is never timed
            send()
        samples = [0] * n
        clock = time.perf_counter_ns
        gc.disable()
        try:
            for i in range(n):
                start = clock()
                try:
                    send()
                except Exception as exc:  # noqa: BLE001 - counted and reported, not fatal
                    errors += 1
                    first_error = first_error or _describe(exc)
                samples[i] = clock() - start
        finally:
            gc.enable()
        return {"samples_ns": samples, "errors": errors, "error": first_error}

    def throughput(self, concurrency: int, seconds: float) -> dict[str, object]:
        clients = [self.new_client() for _ in range(concurrency)]
        for c in clients:  # connect and warm each connection before the clock starts
            c.send()
        counts = [0] * concurrency
        errors = [0] * concurrency
        first_error: list[str] = []
        start_gate = threading.Barrier(concurrency + 1)
        deadline = [0.0]

        def worker(index: int) -> None:
            send = clients[index].send
            start_gate.wait()
            end = deadline[0]
            done = 0
            while time.perf_counter() < end:
                try:
                    send()
                    done += 1
                except Exception as exc:  # noqa: BLE001
                    errors[index] += 1
                    if not first_error:
                        first_error.append(_describe(exc))
            counts[index] = done

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
        for t in threads:
            t.start()
        began = time.perf_counter()
        deadline[0] = began + seconds
        start_gate.wait()
        for t in threads:
            t.join(seconds + CALL_TIMEOUT_S + 5)
        elapsed = time.perf_counter() - began
        for c in clients:
            c.close()
        return {"count": sum(counts), "seconds": elapsed, "errors": sum(errors),
                "error": first_error[0] if first_error else ""}


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: loadgen.py grpc|rest ADDRESS MODEL BODY_FILE", file=sys.stderr)
        return 2
    kind, address, model, body_file = argv
    gen = LoadGen(kind, address, model, Path(body_file).read_bytes())
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.get("op")
        if op == "quit":
            break
        try:
            if op == "seq":
                answer = gen.sequential(int(cmd["n"]), int(cmd.get("warmup", 0)))
            elif op == "tput":
                answer = gen.throughput(int(cmd["concurrency"]), float(cmd["seconds"]))
            else:
                answer = {"fatal": f"unknown command {op!r}"}
        except Exception as exc:  # noqa: BLE001 - the parent shows it and stops
            answer = {"fatal": _describe(exc)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    gen.client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
