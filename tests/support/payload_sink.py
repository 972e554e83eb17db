"""A real HTTP payload sink for the payload-logging tests: its own process, every request on record.

Run as a script (``python payload_sink.py --out FILE [--mode ok|500|stall] [--cert PEM --key PEM]``)
it listens on 127.0.0.1 (an ephemeral port, printed as ``listening PORT``), keeps connections alive
(HTTP/1.1) and appends one JSON line per request it receives to ``FILE``: path, headers (names
lower-cased), body (base64), the mode it was answered in, and its arrival time. Modes:

- ``ok``: answer ``202 Accepted`` (what a Knative broker answers);
- ``500``: answer ``500``;
- ``stall``: read the request, record it, never answer (until the process ends).

``POST /__mode`` with a mode as its body switches modes (not recorded). ``SinkProcess`` starts and
stops the script from a test and reads its record.

``--light`` (for benchmarks/payloads.py) trades the record for speed, so that on a small machine the
sink takes as little CPU as it can from the mesh it measures: one asyncio protocol, no per-request
record, only the number of requests received, appended as ``{"received": N}`` every 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODES = ("ok", "500", "stall")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _SinkServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path == "/__mode":
            self.server.mode = body.decode()
            self._answer(200)
            return
        mode = self.server.mode
        self.server.record({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body_b64": base64.b64encode(body).decode(), "mode": mode, "t": time.time()})
        if mode == "stall":
            self.server.stopping.wait()  # never answer
            self.close_connection = True
            return
        self._answer(500 if mode == "500" else 202)

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class _SinkServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, out: Path, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = mode
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._out = open(out, "a")  # noqa: SIM115 - open for the life of the process

    def record(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry) + "\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()


class _LightSink(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining, reading only what it must (``content-length``)."""

    mode = "ok"
    received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            _LightSink.received += 1
            if self.mode != "stall":
                status = b"500 Internal Server Error" if self.mode == "500" else b"202 Accepted"
                self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\n\r\n")


async def _serve_light(out: Path, mode: str) -> None:
    _LightSink.mode = mode
    server = await asyncio.get_running_loop().create_server(_LightSink, "127.0.0.1", 0)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    written = -1
    with open(out, "a") as record:  # noqa: ASYNC230 - a test sink; one small write per 100 ms
        while True:
            await asyncio.sleep(0.1)
            if _LightSink.received != written:
                written = _LightSink.received
                record.write(json.dumps({"received": written}) + "\n")
                record.flush()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--mode", choices=MODES, default="ok")
    p.add_argument("--cert", type=Path)
    p.add_argument("--key", type=Path)
    p.add_argument("--light", action="store_true")
    args = p.parse_args(argv)
    if args.light:
        asyncio.run(_serve_light(args.out, args.mode))
        return
    server = _SinkServer(args.out, args.mode)
    if args.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


class SinkProcess:
    """``payload_sink.py`` as a child process of a test, with its record at ``out``."""

    def __init__(self, out: Path, mode: str = "ok", cert: Path | None = None, key: Path | None = None,
                 light: bool = False, nice: int = 0) -> None:
        """``nice``: run the sink at this niceness (a benchmark keeps it from competing with the mesh
        it measures for the CPU)."""
        self.out = out
        self.light = light
        out.touch()
        cmd = [sys.executable, __file__, "--out", str(out), "--mode", mode, *(["--light"] if light else [])]
        if nice:
            cmd = ["nice", "-n", str(nice), *cmd]
        if cert is not None and key is not None:
            cmd += ["--cert", str(cert), "--key", str(key)]
        self.scheme = "https" if cert is not None else "http"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"payload sink did not start: {line!r}")
        self.port = int(line.split()[1])

    def url(self, path: str = "/events", userinfo: str = "", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{userinfo + '@' if userinfo else ''}{host}:{self.port}{path}"

    def set_mode(self, mode: str) -> None:
        assert self.scheme == "http", "switch modes of plain-HTTP sinks only"
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/__mode", data=mode.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=5) as answer:
            answer.read()

    def received(self) -> int:
        """How many requests the sink got (so far as its record says)."""
        records = self.records()
        if self.light:
            return records[-1]["received"] if records else 0
        return len(records)

    def records(self) -> list[dict[str, Any]]:
        lines = self.out.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """The records once there are at least ``count`` (or whatever there is after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            records = self.records()
            if len(records) >= count or time.monotonic() > deadline:
                return records
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


if __name__ == "__main__":
    main()
