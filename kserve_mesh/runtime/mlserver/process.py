"""Start, watch and stop an MLServer process, or describe one that already runs.

``MLServerProcess.start`` writes ``settings.json`` into a work folder, runs ``<venv>/bin/mlserver
start <work folder>`` on two free loopback ports, and waits (bounded) until both its REST and gRPC
endpoints answer ready. MLServer cannot bind port 0 and tell us the port, so free ports are picked by
binding and releasing them; if another process takes one in between, MLServer exits at once and the
start is retried with fresh ports (``runtime.adapters.process``). MLServer's output goes to ``mlserver.log`` in the work folder;
a failed start quotes its tail.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

from kserve_mesh.core.errors import Unavailable
from kserve_mesh.runtime.adapters.process import ServerProcess, free_port, grpc_ready
from kserve_mesh.runtime.mlserver.model_settings import server_settings, write_json

logger = logging.getLogger(__name__)

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


class MLServerProcess(ServerProcess):
    """An MLServer child process. Stop it with ``stop()``; it is killed if it ignores SIGTERM."""

    server = "MLServer"
    stop_grace_s = 10.0
    log = logger
    endpoint: MLServerEndpoint

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
        log_path = work_dir / "mlserver.log"

        def spawn() -> MLServerProcess:
            http_port, grpc_port = free_port(), free_port()
            while grpc_port == http_port:
                grpc_port = free_port()
            write_json(work_dir / "settings.json", server_settings(
                http_port=http_port, grpc_port=grpc_port, parallel_workers=parallel_workers,
                max_message_bytes=max_message_bytes, repository=repository))
            proc = _spawn(mlserver, work_dir, log_path)
            endpoint = MLServerEndpoint(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", repository,
                                        proc.pid)
            return cls(proc, endpoint, log_path)

        server = await cls._start_retrying(spawn, timeout_s, port_taken="address already in use")
        logger.info("MLServer %d ready: rest=%s grpc=%s", server.pid, server.endpoint.http_url,
                    server.endpoint.grpc_target)
        return server

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
