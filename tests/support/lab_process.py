"""Start a real ``jupyter lab`` (or plain ``jupyter server``) on a loopback port with its own config,
data, runtime and settings folders, and stop it by its handle."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class JupyterProcess:
    proc: subprocess.Popen[bytes]
    url: str
    token: str
    log: Path

    def request(self, method: str, path: str, body: Any = None, *, token: bool = True,
                timeout: float = 30.0) -> tuple[int, Any]:
        """One call to the server (``path`` from its root); (status, JSON body or text)."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"token {self.token}"
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_jupyter(home: Path, root_dir: Path, env: dict[str, str], *, app: str = "lab",
                  timeout: float = 60.0, config: dict[str, Any] | None = None,
                  args: tuple[str, ...] = ()) -> JupyterProcess:
    """``jupyter lab`` / ``jupyter server`` serving ``root_dir``; ``home`` holds its own folders
    (news popup off) and ``config`` as its ``jupyter_server_config.json``. Installed extensions
    (sys.prefix) load as for a user."""
    if config:
        (home / "config").mkdir(parents=True, exist_ok=True)
        (home / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    token, port = secrets.token_hex(16), free_port()
    full_env = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        **env,
    }
    log = home / f"{app}.log"
    module = "jupyterlab" if app == "lab" else "jupyter_server"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "--allow-root", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={root_dir}", *args],
            stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=home)
    server = JupyterProcess(proc, f"http://127.0.0.1:{port}", token, log)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"jupyter {app} exited with {proc.returncode}:\n{log.read_text()}")
        try:
            status, _ = server.request("GET", "/api/status", timeout=5)
            if status == 200:
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"jupyter {app} did not start in {timeout:g} s:\n{log.read_text()}")
        time.sleep(0.2)
