"""Fixtures of the controller integration tests: an in-memory Kubernetes API (kmock, a process),
a real mesh, the example models, and helpers to start ``kserve-mesh controller`` against them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from example_models import make_models_module
from mesh_process import MeshProcess

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
READY = re.compile(r"kmock ready: (\S+)")


def _pump(proc: subprocess.Popen[str], output: list[str], pattern: re.Pattern[str] | None,
          found: list[re.Match[str]], done: threading.Event) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        output.append(line)
        m = pattern.search(line) if pattern else None
        if m and not found:
            found.append(m)
            done.set()
    done.set()


def _stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


@dataclass
class Kube:
    """The kmock process and a tiny JSON client for it."""

    proc: subprocess.Popen[str]
    url: str
    output: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        ctype = "application/merge-patch+json" if method == "PATCH" else "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={"content-type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def get(self, path: str) -> Any:
        status, body = self.call("GET", path)
        return body if status == 200 else None

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, out = self.call("POST", path, body)
        assert status in (200, 201), (status, out)
        return out

    def namespace(self, name: str, enabled: bool) -> None:
        labels = {"modelmesh-enabled": "true"} if enabled else {}
        self.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": name, "labels": labels}})


@dataclass
class Controller:
    proc: subprocess.Popen[str]
    output: list[str]

    def log(self) -> str:
        return "".join(self.output)


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2,
             log: Callable[[], str] | None = None) -> Any:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    extra = f"\n--- controller log ---\n{log()[-6000:]}" if log else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}{extra}")


@pytest.fixture(scope="module")
def kube(request: pytest.FixtureRequest) -> Iterator[Kube]:
    """kmock for the module; a module's ``KMOCK_ARGS`` are extra arguments of its server."""
    extra = list(getattr(request.module, "KMOCK_ARGS", ()))
    proc = subprocess.Popen([sys.executable, str(HERE / "controller_kmock_server.py"), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    found: list[re.Match[str]] = []
    done = threading.Event()
    threading.Thread(target=_pump, args=(proc, output, READY, found, done), daemon=True).start()
    if not done.wait(60) or not found:
        _stop(proc)
        raise RuntimeError("kmock did not start:\n" + "".join(output))
    k = Kube(proc, found[0].group(1), output)
    try:
        # The built-in ClusterServingRuntime, exactly as the manifests ship it.
        csr = yaml.safe_load((ROOT / "manifests/base/runtimes/kserve-mesh-python.yaml").read_text())
        k.create("/apis/serving.kserve.io/v1alpha1/clusterservingruntimes", csr)
        yield k
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def kubeconfig(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": kube.url}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
        "users": [{"name": "test", "user": {"token": "kmock-does-not-check"}}],
    }))
    return path


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("controller-models")
    make_models_module().make_sklearn(out)
    return out


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshProcess]:
    """A real mesh with no models of its own: the controller registers them (local paths under the
    test's temporary folders; a mesh reads no other local path)."""
    proc = MeshProcess.start("--models", str(tmp_path_factory.mktemp("no-models")),
                             "--allow-local-path", str(tmp_path_factory.getbasetemp()))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def start_controller(kubeconfig: Path, mesh: MeshProcess) -> Iterator[Callable[..., Controller]]:
    """Start ``kserve-mesh controller`` (a process) with extra flags; every one is stopped at the end."""
    started: list[Controller] = []

    def start(*flags: str, env: dict[str, str] | None = None,
              started_when: str = "Initial authentication has finished") -> Controller:
        """``started_when``: the log line that says it runs (kopf's login; a follower of a leader
        election never starts kopf, so its tests wait for another line)."""
        cmd = [sys.executable, "-m", "kserve_mesh.cli", "controller", "--kubeconfig", str(kubeconfig),
               "--mesh-address", mesh.grpc, "--status-interval", "0.5", *flags]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        output: list[str] = []
        done = threading.Event()
        threading.Thread(target=_pump, args=(proc, output, None, [], done), daemon=True).start()
        ctl = Controller(proc, output)
        started.append(ctl)
        wait_for("the controller to start", lambda: started_when in ctl.log()
                 or proc.poll() is not None, timeout=60, log=ctl.log)
        assert proc.poll() is None, ctl.log()
        return ctl

    try:
        yield start
    finally:
        for ctl in started:
            if ctl.proc.poll() is None:
                ctl.proc.send_signal(signal.SIGCONT)  # a test may have frozen it (SIGSTOP)
            _stop(ctl.proc)
