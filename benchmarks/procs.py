"""Processes of the latency benchmark: the servers it measures and the load generators it drives.

Every process is started here with its own handle and stopped by that handle (SIGTERM, then
SIGKILL of its own process group after a grace period), also when the benchmark fails or is
interrupted: ``Processes`` is a context manager that stops whatever it started, in reverse order.
Servers run in their own session, so a Ctrl-C in the terminal reaches the benchmark only, and the
benchmark shuts them down in order (a mesh stops its own runtime child).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
STOP_GRACE_S = 20.0


class ProcessFailed(RuntimeError):
    """A benchmark process did not start, or died, or answered nonsense."""


class ServerProcess:
    """A server started from ``cmd``; ready once a stdout line matches ``ready`` (groups kept)."""

    def __init__(self, name: str, cmd: list[str], ready: str, log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_path
        self._ready = re.compile(ready)
        self._lines: list[str] = []
        self._found: list[re.Match[str]] = []
        self._event = threading.Event()
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env=env, start_new_session=True)
        threading.Thread(target=self._pump, name=f"{name}-stdout", daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)
            if not self._found:
                m = self._ready.search(line)
                if m:
                    self._found.append(m)
                    self._event.set()
        self._event.set()

    def wait_ready(self, timeout: float) -> re.Match[str]:
        if not self._event.wait(timeout) or not self._found:
            state = "exited with code %s" % self.proc.poll() if self.proc.poll() is not None else "still starting"
            raise ProcessFailed(f"{self.name} was not ready within {timeout:g} s ({state}); output:\n"
                                f"{''.join(self._lines)[-2000:]}\nlog {self.log_path}:\n{self.log_tail()}")
        return self._found[0]

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        _stop(self.proc, self.name)
        self._log.close()


class LoadGenProcess:
    """A ``loadgen.py`` client process bound to one target and transport."""

    def __init__(self, name: str, kind: str, address: str, model: str, body_file: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.proc = subprocess.Popen([sys.executable, str(LOADGEN), kind, address, model, str(body_file)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True, env={**os.environ, **(env or {})})

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise ProcessFailed(f"load generator {self.name} exited (code {self.proc.poll()})") from None
        line = self.proc.stdout.readline()
        if not line:
            raise ProcessFailed(f"load generator {self.name} exited (code {self.proc.wait(5)}) on {command}")
        answer = json.loads(line)
        if "fatal" in answer:
            raise ProcessFailed(f"load generator {self.name} failed on {command['op']}: {answer['fatal']}")
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.close()
                self.proc.wait(5)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                pass
        _stop(self.proc, self.name)


def _stop(proc: subprocess.Popen[Any], name: str) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %g s; killing its process group", name, STOP_GRACE_S)
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its own group: it was started with a new session
            except ProcessLookupError:
                pass
            proc.wait(10)
    for stream in (proc.stdout, proc.stdin):
        if stream is not None:
            stream.close()


class Processes:
    """Owns every process the benchmark starts; ``with Processes() as p:`` stops them all."""

    def __init__(self) -> None:
        self._owned: list[ServerProcess | LoadGenProcess] = []

    def server(self, name: str, cmd: list[str], ready: str, log_path: Path,
               env: dict[str, str] | None = None) -> ServerProcess:
        proc = ServerProcess(name, cmd, ready, log_path, {**os.environ, **(env or {})})
        self._owned.append(proc)
        return proc

    def loadgen(self, name: str, kind: str, address: str, model: str, body_file: Path,
                env: dict[str, str] | None = None) -> LoadGenProcess:
        proc = LoadGenProcess(name, kind, address, model, body_file, env)
        self._owned.append(proc)
        return proc

    def stop_all(self) -> None:
        while self._owned:
            proc = self._owned.pop()
            try:
                proc.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                log.warning("could not stop %s: %s", proc.name, exc)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
