#!/usr/bin/env python3
"""What a gRPC call costs in grpcio's server modes, before any work of ours (issue 15).

    python benchmarks/grpc_front.py [--seconds 5] [--rounds 2] [--json OUT]

One unary method (``inference.GRPCInferenceService/ModelInfer``) whose handler answers 100 fixed
bytes without decoding the request, served four ways, one after the other and round after round,
each loaded by ``h2load`` (HTTP/2, a 69-byte gRPC frame) at 1 and 16 connections:

    aio          ``grpc.aio`` server on asyncio's default loop (what the mesh runs)
    aio-uvloop   the same on uvloop (left out when uvloop is not installed)
    sync         ``grpc.server`` with a pool of 8 threads, the handler in the thread
    sync-hop     the same, but each call runs a coroutine on an asyncio loop in another thread
                 (``run_coroutine_threadsafe(...).result()``): what a sync front over the mesh's
                 asyncio data plane would pay per call

Printed per mode and cell: req/s and the server's CPU per call (user + system of its process). This
is the floor under the mesh's gRPC numbers in ``peers.py``: the mesh's own work per call comes on
top. ``h2load`` is the Debian package ``nghttp2-client`` (installed with apt when missing and this
runs as root, as ``peers.py`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

MODES = ("aio", "aio-uvloop", "sync", "sync-hop")
METHOD = "/inference.GRPCInferenceService/ModelInfer"
ANSWER = b"x" * 100
READY = r"serving on (\d+)"


def _identity(b: bytes) -> bytes:
    return b


def _service(handle: object) -> object:
    """The one method, its request and answer passed as bytes."""
    import grpc

    return grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(handle, _identity, _identity)})


def serve(mode: str) -> None:
    """Serve ``mode`` on an ephemeral port of 127.0.0.1 until killed; prints the port."""
    import grpc

    if mode.startswith("aio"):
        async def handle(request: bytes, context: object) -> bytes:
            return ANSWER

        async def main() -> None:
            server = grpc.aio.server()
            server.add_generic_rpc_handlers((_service(handle),))
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            print(f"serving on {port}", flush=True)
            await server.wait_for_termination()

        if mode == "aio-uvloop":
            import uvloop
            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        else:
            runner = asyncio.Runner()
        with runner:
            runner.run(main())
        return

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def work() -> bytes:
        return ANSWER

    def handle_sync(request: bytes, context: object) -> bytes:
        if mode == "sync-hop":
            return asyncio.run_coroutine_threadsafe(work(), loop).result()
        return ANSWER

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((_service(handle_sync),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"serving on {port}", flush=True)
    server.wait_for_termination()


def measure(mode: str, seconds: float, work: Path) -> list[dict[str, object]]:
    from peers import run_h2load, tree_cpu_seconds
    from procs import Processes

    body = work / "body.bin"
    body.write_bytes(b"\x00\x00\x00\x00\x40" + bytes(64))
    cells = []
    with Processes() as procs:
        proc = procs.server(mode, [sys.executable, __file__, "--serve", mode], READY, work / f"{mode}.log")
        port = proc.wait_ready(60).group(1)
        url = f"http://127.0.0.1:{port}{METHOD}"
        run_h2load(url, body, 1, 1, work)  # warm-up
        for connections in (1, 16):
            cpu0, t0 = tree_cpu_seconds(proc.pid()), time.monotonic()
            done, errors, p50, _ = run_h2load(url, body, connections, seconds, work)
            took, cpu = min(time.monotonic() - t0, seconds), tree_cpu_seconds(proc.pid()) - cpu0
            if errors:
                raise SystemExit(f"{mode}: {errors} calls failed at c={connections}")
            cells.append({"mode": mode, "connections": connections, "calls": done, "req_s": done / took,
                          "p50_ms": p50, "cpu_us_per_call": 1e6 * cpu / done if done else float("nan")})
    return cells


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each cell (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=2, help="every mode this many times, interleaved")
    ap.add_argument("--json", type=Path, help="write the cells here")
    a = ap.parse_args(argv)
    if a.serve:
        serve(a.serve)
        return 0
    if a.seconds <= 0 or a.rounds < 1:
        ap.error("need --seconds > 0 and --rounds >= 1")
    from peers import ensure_tools
    from rich.console import Console

    ensure_tools(Console(stderr=True))
    import importlib.util

    modes = [m for m in MODES if m != "aio-uvloop" or importlib.util.find_spec("uvloop") is not None]
    if len(modes) < len(MODES):
        print("uvloop is not installed here: aio-uvloop left out (pip install uvloop)", file=sys.stderr)
    cells: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="km-grpc-front-") as tmp:
        for r in range(a.rounds):
            for mode in modes:
                cells += [{**c, "round": r + 1} for c in measure(mode, a.seconds, Path(tmp))]
    print(f"{'mode':12} {'c':>3} {'req/s':>8} {'p50 ms':>7} {'CPU us/call':>12}   (mean of {a.rounds} rounds)")
    for mode in modes:
        for connections in (1, 16):
            mine = [c for c in cells if c["mode"] == mode and c["connections"] == connections]
            mean = {k: sum(float(c[k]) for c in mine) / len(mine) for k in ("req_s", "p50_ms", "cpu_us_per_call")}
            print(f"{mode:12} {connections:>3} {mean['req_s']:>8.0f} {mean['p50_ms']:>7.2f} "
                  f"{mean['cpu_us_per_call']:>12.0f}")
    if a.json:
        a.json.write_text(json.dumps({"seconds": a.seconds, "rounds": a.rounds, "cells": cells}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
