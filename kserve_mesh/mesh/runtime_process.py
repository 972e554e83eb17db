"""The built-in runtime as a child process of a mesh instance (``--runtime process``).

``kserve-mesh runtime`` is started with the instance's runtime settings (``args``, built by the
server from its settings), on an ephemeral loopback
port that it announces on stdout; it dies with the instance (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import signal
import sys

from kserve_mesh.core.errors import Unavailable


class RuntimeProcess:
    """``kserve-mesh runtime`` as a child process, on an ephemeral loopback port."""

    def __init__(self, args: list[str]) -> None:
        self.args = args  # flags of `kserve-mesh runtime` that carry the instance's settings
        self.proc: asyncio.subprocess.Process | None = None
        self.address = ""

    async def start(self) -> str:
        args = [sys.executable, "-m", "kserve_mesh.runtime.server", "--host", "127.0.0.1", "--port", "0",
                *self.args]
        self.proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                         preexec_fn=_die_with_parent)
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(60):
                while True:
                    line = (await self.proc.stdout.readline()).decode()
                    if not line:
                        raise Unavailable("the runtime process exited before it was ready")
                    if "listening on" in line:
                        self.address = line.rsplit(" ", 1)[-1].strip()
                        break
        except TimeoutError:
            await self.stop()
            raise Unavailable("the runtime process did not start within 60 s") from None
        asyncio.get_running_loop().create_task(_drain(self.proc.stdout))
        return self.address

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the instance dies, even by SIGKILL (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass
