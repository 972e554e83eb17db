"""Start, watch and stop an MLServer process, or describe one that already runs.

``MLServerProcess.start`` writes ``settings.json`` into a work folder, runs ``<venv>/bin/mlserver
start <work folder>`` on two free loopback ports, and waits (bounded) until both its REST and gRPC
endpoints answer ready. MLServer cannot bind port 0 and tell us the port, so free ports are picked by
binding and releasing them; if another process takes one in between, MLServer exits at once and the
start is retried with fresh ports. MLServer's output goes to ``mlserver.log`` in the work folder;
a failed start quotes its tail.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

from kserve_mesh.core.errors import Unavailable
from kserve_mesh.runtime.mlserver.model_settings import server_settings, write_json

logger = logging.getLogger(__name__)

START_ATTEMPTS = 3
_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class MLServerEndpoint:
    """Where an MLServer answers, and the repository folder it reads model settings from.

    ``pid`` (optional) is the process whose memory (with its children) measures loads.
    """

    http_url: str  # e.g. http://127.0.0.1:8080
    grpc_target: str  # e.g. 127.0.0.1:8081
    repository: Path
    pid: int | None = None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class MLServerProcess:
    """An MLServer child process. Stop it with ``stop()``; it is killed if it ignores SIGTERM."""

    def __init__(self, proc: subprocess.Popen[bytes], endpoint: MLServerEndpoint, log_path: Path) -> None:
        self.proc = proc
        self.endpoint = endpoint
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)

    @classmethod
    async def start(
        cls, venv: Path, work_dir: Path, *, parallel_workers: int = 0, max_message_bytes: int = 16 << 20,
        timeout_s: float = 120.0,
    ) -> MLServerProcess:
        """Start MLServer from ``venv`` with its settings and repository under ``work_dir``."""
        mlserver = venv / "bin" / "mlserver"
        if not mlserver.is_file():
            raise Unavailable(f"{mlserver} does not exist: create the venv with scripts/mlserver-venv.sh")
        repository = work_dir / "models"
        repository.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        last = ""
        for attempt in range(1, START_ATTEMPTS + 1):
            http_port, grpc_port = free_port(), free_port()
            while grpc_port == http_port:
                grpc_port = free_port()
            write_json(work_dir / "settings.json", server_settings(
                http_port=http_port, grpc_port=grpc_port, parallel_workers=parallel_workers,
                max_message_bytes=max_message_bytes, repository=repository))
            log_path = work_dir / "mlserver.log"
            proc = _spawn(mlserver, work_dir, log_path)
            endpoint = MLServerEndpoint(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", repository,
                                        proc.pid)
            server = cls(proc, endpoint, log_path)
            try:
                await server._wait_ready(end)
            except Unavailable as exc:
                last = str(exc)
                exited = not server.alive()
                await server.stop()
                if exited and attempt < START_ATTEMPTS and "address already in use" in last.lower():
                    logger.info("MLServer lost a port race (attempt %d); retrying on new ports", attempt)
                    continue
                raise
            except BaseException:
                await server.stop()
                raise
            logger.info("MLServer %d ready: rest=%s grpc=%s", proc.pid, endpoint.http_url, endpoint.grpc_target)
            return server
        raise Unavailable(last)  # pragma: no cover - the loop returns or raises

    async def _wait_ready(self, end: float) -> None:
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(base_url=self.endpoint.http_url, timeout=2.0) as http:
            while True:
                if not self.alive():
                    raise Unavailable(
                        f"MLServer exited with status {self.proc.returncode} while starting; "
                        f"its log ends:\n{self.log_tail()}"
                    )
                if await _ready(http) and await grpc_ready(self.endpoint.grpc_target):
                    return
                if loop.time() + _POLL_S > end:
                    raise Unavailable(f"MLServer did not become ready in time; its log ends:\n{self.log_tail()}")
                await asyncio.sleep(_POLL_S)

    async def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, grace_s)
            except subprocess.TimeoutExpired:
                logger.warning("MLServer %d ignored SIGTERM for %g s; killing it", self.proc.pid, grace_s)
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 10)
        return self.proc.returncode


def _spawn(mlserver: Path, work_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    # MLServer reads MLSERVER_* variables and a .env in its working directory: give it a clean set.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER")}
    env.pop("PYTHONPATH", None)  # our packages must not leak into MLServer's interpreter
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [str(mlserver), "start", str(work_dir)], cwd=work_dir, env=env, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


async def _ready(http: httpx.AsyncClient) -> bool:
    try:
        resp = await http.get("/v2/health/ready")
    except httpx.HTTPError:
        return False
    return resp.status_code == 200


async def grpc_ready(target: str, timeout_s: float = 2.0) -> bool:
    """V2 ServerReady over gRPC (MLServer starts its gRPC server after its REST app)."""
    import grpc

    from kserve_mesh.protocol import v2

    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(v2.method("ServerReady"), request_serializer=v2.ServerReadyRequest.SerializeToString,
                                   response_deserializer=v2.ServerReadyResponse.FromString)
        try:
            resp = await call(v2.ServerReadyRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return False
    return bool(resp.ready)


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
