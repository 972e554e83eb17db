"""The clients of a density run: registration over gRPC, loading over REST, and wrk for latency.

- ``register_models``: ModelMesh ``registerModel`` calls through grpc.aio with many calls in flight.
  Requests are encoded before the clock starts and sent through a raw ``unary_unary`` with no
  (de)serializers, so the client spends its time on the calls, not on protobuf.
- ``load_models``: one V2 REST inference per model over keep-alive HTTP/1.1 connections (asyncio
  streams, a pre-encoded request), checking that each answer comes from the model asked for (the
  string model prefixes its text, which is the model id). The first request for a model loads it
  where placement decides.
- ``Wrk``: a ``wrk`` process (C, epoll; its own process, never a server's) driving
  ``density/wrk_infer.lua``, open loop at a fixed rate or closed loop. Its CPU time is read from
  ``getrusage(RUSAGE_CHILDREN)`` around the run, so the report can say what the generator cost.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from kserve_mesh.protos import model_mesh_pb2 as pb

REGISTER_METHOD = "/mmesh.ModelMesh/registerModel"
WRK_SCRIPT = Path(__file__).resolve().parent / "density" / "wrk_infer.lua"
INFER_BODY = b'{"inputs":[{"name":"input-0","shape":[1],"datatype":"BYTES","data":["x"]}]}'
CALL_TIMEOUT_S = 60.0


class ClientFailed(RuntimeError):
    """A client of the run could not do its job (not a counted request error)."""


@dataclass
class Outcome:
    """What one client phase did: how many calls, how long, how many failed and why."""

    calls: int = 0
    seconds: float = 0.0
    errors: int = 0
    first_error: str = ""
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    client_cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    def fail(self, message: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or message


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- registration ------------------------------------------------------------------------------------

def encode_registrations(ids: Sequence[str], paths: Sequence[str]) -> list[bytes]:
    """One serialized RegisterModelRequest per id (type ``string``, lazy: no load)."""
    out = []
    for mid, path in zip(ids, paths, strict=True):
        out.append(pb.RegisterModelRequest(modelId=mid, modelInfo=pb.ModelInfo(type="string", path=path))
                   .SerializeToString())
    return out


async def register_models(grpc_targets: Sequence[str], requests: Sequence[bytes], in_flight: int,
                          channels_per_target: int = 2) -> Outcome:
    """Send every request, request i to target ``i % len(targets)``, ``in_flight`` at a time."""
    channels = [grpc.aio.insecure_channel(t, options=[("grpc.use_local_subchannel_pool", 1)])
                for t in grpc_targets for _ in range(channels_per_target)]
    try:
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), 30)
        calls = [ch.unary_unary(REGISTER_METHOD) for ch in channels]  # bytes in, bytes out
        n_targets = len(grpc_targets)
        out = Outcome()
        latencies = out.latencies_ms
        next_index = 0

        async def worker(w: int) -> None:
            nonlocal next_index
            clock = time.perf_counter
            while next_index < len(requests):
                i = next_index
                next_index += 1
                call = calls[(i % n_targets) * channels_per_target + w % channels_per_target]
                start = clock()
                try:
                    await call(requests[i], timeout=CALL_TIMEOUT_S)
                except grpc.aio.AioRpcError as exc:
                    out.fail(f"gRPC {exc.code().name}: {exc.details()}")
                latencies.append((clock() - start) * 1000)

        cpu0 = _process_cpu()
        began = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(in_flight)))
        out.seconds = time.perf_counter() - began
        out.client_cpu_s = _process_cpu() - cpu0
        out.calls = len(requests)
        return out
    finally:
        for ch in channels:
            await ch.close()


# -- loading over REST ---------------------------------------------------------------------------------

_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3})")
_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.I)


class HttpConnection:
    """One keep-alive HTTP/1.1 connection sending pre-encoded V2 infer requests."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def infer(self, model: str) -> tuple[int, bytes]:
        """Send one request. A reused connection that the server closed while idle (keep-alive
        timeout) fails before any answer byte: reconnect and send again once, as HTTP clients do."""
        reused = self.writer is not None
        try:
            return await self._send(model)
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
            await self.close()
            return await self._send(model)

    async def _send(self, model: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(INFER_BODY)}\r\n\r\n").encode()
        self.writer.write(head + INFER_BODY)
        head_in = await self.reader.readuntil(b"\r\n\r\n")
        status = _STATUS.match(head_in)
        length = _LENGTH.search(head_in)
        if status is None or length is None:
            raise ClientFailed(f"unexpected HTTP answer: {head_in[:200]!r}")
        body = await self.reader.readexactly(int(length.group(1)))
        return int(status.group(1)), body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = None


def answered_by(model: str, body: bytes) -> bool:
    """Whether a string model's answer comes from ``model`` (its text is the model id)."""
    try:
        doc = json.loads(body)
        return doc["outputs"][0]["data"][0] == f"{model}x"
    except (ValueError, KeyError, IndexError, TypeError):
        return False


async def load_models(rest_targets: Sequence[tuple[str, int]], models: Sequence[str], in_flight: int) -> Outcome:
    """One request per model, model i sent to target ``i % len(targets)``; each answer is checked."""
    out = Outcome()
    next_index = 0

    async def worker(w: int) -> None:
        nonlocal next_index
        conns = [HttpConnection(h, p) for h, p in rest_targets]
        clock = time.perf_counter
        try:
            while next_index < len(models):
                i = next_index
                next_index += 1
                model = models[i]
                start = clock()
                try:
                    status, body = await asyncio.wait_for(conns[i % len(conns)].infer(model), CALL_TIMEOUT_S)
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ClientFailed) as exc:
                    out.fail(f"{model}: {type(exc).__name__}: {exc}")
                    await conns[i % len(conns)].close()
                    continue
                out.latencies_ms.append((clock() - start) * 1000)
                if status != 200:
                    out.fail(f"{model}: HTTP {status}: {body[:200]!r}")
                elif not answered_by(model, body):
                    out.fail(f"{model}: answered by another model: {body[:200]!r}")
        finally:
            for c in conns:
                await c.close()

    cpu0 = _process_cpu()
    began = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(in_flight)))
    out.seconds = time.perf_counter() - began
    out.client_cpu_s = _process_cpu() - cpu0
    out.calls = len(models)
    return out


# -- wrk -----------------------------------------------------------------------------------------------

def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("density.py needs wrk (HTTP load generator in C): apt-get install wrk")
    return found


@dataclass
class WrkResult:
    requests: int = 0
    seconds: float = 0.0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    late: int = 0
    late_max_ms: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    max_ms: float = 0.0
    mean_ms: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


class Wrk:
    """One ``wrk`` process, thread k sending to ``targets[k]`` (REST ``host:port``), one histogram."""

    def __init__(self, targets: Sequence[str], *, mode: str, connections: int, seconds: float,
                 rate_per_s: float, models: int, prefix: str, start_ms: int, seed: int,
                 timeout_s: float = 10.0) -> None:
        self.seconds = seconds
        self.start_ms = start_ms if rate_per_s > 0 else 0
        threads = len(targets)
        per_thread = rate_per_s / threads
        cmd = [wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", f"--timeout={timeout_s:g}s",
               "-s", str(WRK_SCRIPT), f"http://{targets[0]}", "--", mode, str(models), prefix, f"{per_thread:g}",
               str(self.start_ms), str(seed)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True, env={**os.environ, "DENSITY_TARGETS": ",".join(targets)})

    def result(self) -> WrkResult:
        try:
            out, err = self.proc.communicate(timeout=self.seconds + 60)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ClientFailed("wrk did not finish in time") from None
        line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
        if self.proc.returncode != 0 or line is None:
            raise ClientFailed(f"wrk failed (code {self.proc.returncode}): {err.strip()[-2000:]}\n{out[-2000:]}")
        d = json.loads(line.removeprefix("WRKJSON "))
        kinds = {k: d[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")}
        # The open-loop schedule starts start_ms after wrk does: the rate counts only the scheduled time.
        seconds = d["duration_us"] / 1e6 - self.start_ms / 1000
        return WrkResult(
            requests=d["requests"], seconds=seconds, errors=sum(kinds.values()),
            error_kinds={k: v for k, v in kinds.items() if v}, late=d["late"], late_max_ms=d["late_max_ms"],
            p50_ms=d["p50_us"] / 1000, p90_ms=d["p90_us"] / 1000, p99_ms=d["p99_us"] / 1000,
            p999_ms=d["p999_us"] / 1000, max_ms=d["max_us"] / 1000, mean_ms=d["mean_us"] / 1000)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def children_cpu() -> float:
    """CPU time of this process's reaped children (wrk processes once they have been waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
