"""Start a real ``kserve-mesh`` process on ephemeral loopback ports, and stop it by its handle."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

READY = re.compile(r"kserve-mesh ready: rest=(\S+) grpc=(\S+) metrics=(\S+)")


@dataclass
class MeshProcess:
    proc: subprocess.Popen[str]
    rest: str
    grpc: str
    metrics: str
    output: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    """Sent with every helper call (e.g. an ``authorization`` header for a mesh with auth on)."""
    context: ssl.SSLContext | None = None
    """Client TLS context of the helper calls, for a mesh that serves https."""

    @classmethod
    def start(cls, *args: str, timeout: float = 90.0, env: dict[str, str] | None = None,
              cwd: str | Path | None = None, command: str = "up") -> MeshProcess:
        cmd = [sys.executable, "-m", "kserve_mesh.cli", command, "--rest-port", "0", "--grpc-port", "0",
               "--metrics-port", "0", *args]
        return cls.run(cmd, timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd)

    @classmethod
    def run(cls, cmd: list[str], *, timeout: float = 90.0, env: dict[str, str] | None = None,
            cwd: str | Path | None = None) -> MeshProcess:
        """Start ``cmd`` (a mesh however it is launched, e.g. inside the image's root filesystem) and
        wait, up to ``timeout``, for its ready line."""
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
        output: list[str] = []
        found: list[re.Match[str]] = []
        done = threading.Event()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                output.append(line)
                m = READY.search(line)
                if m and not found:
                    found.append(m)
                    done.set()
            done.set()

        threading.Thread(target=pump, daemon=True).start()
        if not done.wait(timeout) or not found:
            proc.kill()
            proc.wait(10)
            raise RuntimeError("mesh did not become ready:\n" + "".join(output))
        m = found[0]
        return cls(proc, m.group(1), m.group(2), m.group(3), output)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log(self) -> str:
        return "".join(self.output)

    # -- small REST helpers ----------------------------------------------------------------------
    def call(self, method: str, path: str, body: Any = None, timeout: float = 60.0) -> tuple[int, Any]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.rest + path, data=data, method=method,
                                     headers={"content-type": "application/json", **self.headers})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.context) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                return err.code, json.loads(raw)
            except ValueError:
                return err.code, raw.decode(errors="replace")

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.metrics, timeout=10, context=self.context) as resp:
            return resp.read().decode()

    def wait_state(self, model_id: str, states: set[str], timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body: Any = None
        while time.monotonic() < deadline:
            _, body = self.call("GET", f"/mesh/v1/models/{model_id}")
            if isinstance(body, dict) and body.get("status") in states:
                return body
            time.sleep(0.05)
        raise AssertionError(f"model {model_id} never reached {states}; last status {body}")
