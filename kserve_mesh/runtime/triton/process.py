"""Start, watch and stop a Triton Inference Server process, or describe one that already runs.

``TritonProcess.start`` prepares a work folder (``models/``: the model repository the adapter lays
models out in; ``backends/python/``: the wheel's Python backend with the stub of the backend
Python's version, as PyTriton prepares it), runs ``tritonserver`` in explicit model-control mode
with only its gRPC endpoint, on a free loopback port (HTTP and metrics off), and waits (bounded)
until it answers ready. The stub embeds the backend Python: its libpython goes on
``LD_LIBRARY_PATH`` after the wheel's libraries, and its ``bin`` first on ``PATH`` (CPython finds
its venv from there). A port taken between our pick and Triton's bind makes Triton exit at once;
the start is retried on a fresh port. Triton's output goes to ``triton.log`` in the work folder; a
failed start quotes its tail.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kserve_mesh.core.errors import Unavailable
from kserve_mesh.runtime.adapters.process import ServerProcess, free_port, grpc_ready
from kserve_mesh.runtime.triton.config import PythonEnv, TritonDist

logger = logging.getLogger(__name__)

_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class TritonEndpoint:
    """Where a Triton answers gRPC, the repository folder it loads from, and (optional) its pid,
    whose memory (with its stub processes) measures loads."""

    grpc_target: str
    repository: Path
    pid: int | None = None


def prepare_backends(dist: TritonDist, python: PythonEnv, work_dir: Path) -> Path:
    """``work_dir/backends`` holding the Python backend with the stub for ``python``'s version."""
    backends = work_dir / "backends"
    target = backends / "python"
    target.mkdir(parents=True, exist_ok=True)
    for entry in (dist.backends / "python").iterdir():
        if entry.is_file():
            shutil.copy2(entry, target / entry.name)
    shutil.copy2(dist.stubs / python.version / "triton_python_backend_stub", target / "triton_python_backend_stub")
    return backends


class TritonProcess(ServerProcess):
    """A Triton child process. Stop it with ``stop()``; it is killed if it ignores SIGTERM."""

    server = "Triton"
    stop_grace_s = 15.0
    log = logger
    endpoint: TritonEndpoint

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def errors_since(self, offset: int, name: str) -> list[str]:
        """Triton's error lines about model ``name`` logged after ``offset`` (its gRPC answer to a
        failed load can be only "failed to poll from model repository"; the log says why)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read(1 << 20).decode(errors="replace")
        except OSError:
            return []
        found = []
        for line in text.splitlines():
            if line.startswith("E") and f"'{name}'" in line:
                message = line.split("] ", 1)[-1].strip().strip('"')
                if message not in found:
                    found.append(message)
        return found

    def exit_text(self) -> str:
        code = self.proc.returncode
        if code is None:
            return "running"
        return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"

    @classmethod
    async def start(cls, dist: TritonDist, python: PythonEnv, work_dir: Path, *, timeout_s: float = 60.0,
                    exit_timeout_s: int = 5) -> TritonProcess:
        """Start Triton on ``work_dir/models`` (made if missing) with the backends of ``work_dir``."""
        repository = work_dir / "models"
        repository.mkdir(parents=True, exist_ok=True)
        backends = await asyncio.to_thread(prepare_backends, dist, python, work_dir)
        log_path = work_dir / "triton.log"

        def spawn() -> TritonProcess:
            port = free_port()
            proc = _spawn(dist, python, repository, backends, port, exit_timeout_s, log_path)
            return cls(proc, TritonEndpoint(f"127.0.0.1:{port}", repository, proc.pid), log_path)

        server = await cls._start_retrying(spawn, timeout_s, port_taken="already in use")
        logger.info("Triton %d ready: grpc=%s", server.pid, server.endpoint.grpc_target)
        return server

    async def _wait_ready(self, end: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.alive():
                raise Unavailable(f"Triton exited ({self.exit_text()}) while starting; its log ends:\n"
                                  f"{self.log_tail()}")
            if await grpc_ready(self.endpoint.grpc_target, timeout_s=1.0):
                return
            if loop.time() + _POLL_S > end:
                raise Unavailable(f"Triton did not become ready in time; its log ends:\n{self.log_tail()}")
            await asyncio.sleep(_POLL_S)


def _spawn(dist: TritonDist, python: PythonEnv, repository: Path, backends: Path, port: int, exit_timeout_s: int,
           log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # our packages stay out of the stubs
    libs = [str(dist.libs)] + ([python.libdir] if python.libdir else [])
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    env["PATH"] = os.pathsep.join([str(python.executable.parent), env.get("PATH", "")])
    cmd = [
        str(dist.tritonserver), f"--model-repository={repository}", "--model-control-mode=explicit",
        f"--backend-directory={backends}", "--allow-http=false", "--allow-metrics=false",
        "--allow-gpu-metrics=false", "--grpc-address=127.0.0.1", f"--grpc-port={port}",
        f"--exit-timeout-secs={exit_timeout_s}", "--strict-readiness=true",
    ]
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, cwd=repository.parent, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
