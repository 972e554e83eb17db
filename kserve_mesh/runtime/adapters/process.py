"""The child server process of an adapter: what MLServer's and Triton's processes have in common.

``ServerProcess`` wraps the ``Popen`` of a server the adapter started, with its endpoint and the
file its output goes to: ``pid``, ``alive()``, ``log_tail()`` and ``stop()`` (SIGTERM, then SIGKILL
once the grace period is over). ``_start_retrying`` starts one until it answers ready: the port
picked for it can be taken by another process before the server binds it, which makes the server
exit at once; it is then started again on fresh ports. Each adapter subclasses it with how to
spawn its server, how to tell it is ready and what its endpoint holds. ``free_port`` picks a loopback port for a server that cannot bind port 0 and
tell us; ``grpc_ready`` asks V2 ``ServerReady``; ``log_tail`` quotes the end of a log file.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Self

from kserve_mesh.core.errors import Unavailable

logger = logging.getLogger(__name__)

START_ATTEMPTS = 3


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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


class ServerProcess:
    """A server child process. Stop it with ``stop()``; it is killed if it ignores SIGTERM."""

    server: ClassVar[str] = "the server"  # its name in log lines
    stop_grace_s: ClassVar[float] = 10.0  # how long ``stop()`` waits after SIGTERM by default
    log: ClassVar[logging.Logger] = logger  # the adapter's logger

    def __init__(self, proc: subprocess.Popen[bytes], endpoint: Any, log_path: Path) -> None:
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

    async def stop(self, grace_s: float | None = None) -> int | None:
        """SIGTERM, wait up to ``grace_s`` (default ``stop_grace_s``), then SIGKILL. Returns the exit status."""
        grace = self.stop_grace_s if grace_s is None else grace_s
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, grace)
            except subprocess.TimeoutExpired:
                self.log.warning("%s %d ignored SIGTERM for %g s; killing it", self.server, self.proc.pid, grace)
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 10)
        return self.proc.returncode

    @classmethod
    async def _start_retrying(cls, spawn: Callable[[], Self], timeout_s: float, *, port_taken: str) -> Self:
        """``spawn()`` a server (on fresh ports each call) and wait until it is ready, within
        ``timeout_s`` in all. One that exited at once with ``port_taken`` in its error lost a port
        race: it is spawned again, up to ``START_ATTEMPTS`` times."""
        end = asyncio.get_running_loop().time() + timeout_s
        last = ""
        for attempt in range(1, START_ATTEMPTS + 1):
            server = spawn()
            try:
                await server._wait_ready(end)
            except Unavailable as exc:
                last = str(exc)
                exited = not server.alive()
                await server.stop()
                if exited and attempt < START_ATTEMPTS and port_taken in last.lower():
                    cls.log.info("%s lost a port race (attempt %d); retrying on new ports", cls.server, attempt)
                    continue
                raise
            except BaseException:
                await server.stop()
                raise
            return server
        raise Unavailable(last)  # pragma: no cover - the loop returns or raises

    async def _wait_ready(self, end: float) -> None:
        """Return once the server answers ready; ``Unavailable`` (quoting its log) if it exits or
        ``end`` (loop time) passes first."""
        raise NotImplementedError
