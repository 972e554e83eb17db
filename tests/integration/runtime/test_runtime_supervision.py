"""A supervised runtime child (``kserve-mesh up --runtime process``) in real processes: ``kill -9``
of the child under REST and gRPC load, and a SIGSTOPped (hung) child. Readiness drops, the child
restarts, serving resumes within seconds, no request hangs (every client call has a timeout and
all return), a crash is never the model's load failure, and the restart is logged at WARNING. The
child listens on a Unix socket in a private folder, not on a TCP port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import grpc
import pytest
from mesh_process import MeshProcess

from kserve_mesh.protocol import v2

pytestmark = pytest.mark.integration

CHECK_FLAGS = ("--runtime-check-interval-s", "0.5", "--runtime-check-timeout-s", "3")  # exits are seen at once
# A stopped child is found hung after two checks of 1 + 2 s: the deadline errors come first.
SLOW_CHECK_FLAGS = ("--runtime-check-interval-s", "1", "--runtime-check-timeout-s", "2")
ENV = {"KSERVE_MESH_RUNTIME_RESTART_BACKOFF_MAX_S": "2"}
CLIENT_TIMEOUT_S = 10.0  # no client call may take longer: a hang fails the test
RECOVERY_S = 30.0  # generous: the machine is shared


@pytest.fixture()
def mesh(models_dir: Path, request: pytest.FixtureRequest) -> Iterator[MeshProcess]:
    flags = getattr(request, "param", CHECK_FLAGS)
    proc = MeshProcess.start("--models", str(models_dir), "--runtime", "process", *flags, env=ENV)
    stopped: list[int] = []
    proc.stopped_pids = stopped  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        for pid in stopped:  # a child the test stopped: let it go, whatever the supervisor did
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        proc.stop()


# -- helpers -------------------------------------------------------------------------------------
def runtime_pid(mesh: MeshProcess) -> int:
    code, body = mesh.call("GET", "/mesh/v1/status", timeout=CLIENT_TIMEOUT_S)
    assert code == 200, body
    return int(body["runtimePid"])


def ready(mesh: MeshProcess) -> int:
    code, _ = mesh.call("GET", "/v2/health/ready", timeout=CLIENT_TIMEOUT_S)
    return code


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = RECOVERY_S) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)
    return time.monotonic() - start


def rest_infer(mesh: MeshProcess, model_id: str, request: dict[str, Any], timeout_ms: int) -> tuple[int, str]:
    req = urllib.request.Request(f"{mesh.rest}/v2/models/{model_id}/infer", data=json.dumps(request).encode(),
                                 method="POST", headers={"content-type": "application/json",
                                                         "mm-timeout-ms": str(timeout_ms)})
    try:
        with urllib.request.urlopen(req, timeout=CLIENT_TIMEOUT_S) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def string_request(model_id: str) -> v2.ModelInferRequest:
    req = v2.ModelInferRequest(model_name=model_id)
    req.inputs.add(name="input-0", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"hi")
    return req


class GrpcInfer:
    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.call = self.channel.unary_unary(v2.method("ModelInfer"),
                                             request_serializer=v2.ModelInferRequest.SerializeToString,
                                             response_deserializer=v2.ModelInferResponse.FromString)

    def __call__(self, model_id: str, timeout_s: float) -> tuple[str, str]:
        try:
            self.call(string_request(model_id), timeout=timeout_s)
            return "OK", ""
        except grpc.RpcError as err:
            return err.code().name, err.details() or ""  # type: ignore[attr-defined]

    def close(self) -> None:
        self.channel.close()


@dataclass
class Outcome:
    kind: str
    started: float
    took: float
    status: str
    detail: str


class Load:
    """A few client threads sending REST and gRPC inference until stopped; every call bounded."""

    def __init__(self, mesh: MeshProcess, samples: dict[str, Any]) -> None:
        self.mesh = mesh
        self.samples = samples
        self.stop = threading.Event()
        self.outcomes: list[Outcome] = []
        self.crashes: list[Exception] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(kind, model), daemon=True)
                        for kind, model in (("rest", "string-2"), ("rest", "sklearn-iris"),
                                            ("grpc", "string-1"), ("grpc", "string-2"))]

    def _run(self, kind: str, model_id: str) -> None:
        client = GrpcInfer(self.mesh.grpc) if kind == "grpc" else None
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                if client is not None:
                    status, detail = client(model_id, 5.0)
                else:
                    code, detail = rest_infer(self.mesh, model_id, self.samples[model_id]["request"], 5000)
                    status = str(code)
                with self._lock:
                    self.outcomes.append(Outcome(f"{kind}:{model_id}", started, time.monotonic() - started,
                                                 status, detail))
                if status not in ("OK", "200"):
                    time.sleep(0.05)
        except Exception as exc:  # noqa: BLE001 - a client timeout (a hang) or anything unexpected
            self.crashes.append(exc)
        finally:
            if client is not None:
                client.close()

    def __enter__(self) -> Self:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(CLIENT_TIMEOUT_S + 5)

    def ok_since(self, since: float) -> set[str]:
        with self._lock:
            return {o.kind for o in self.outcomes if o.started >= since and o.status in ("OK", "200")}


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[len("socket:["):-1])
    return inodes


def _tcp_listening_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    inodes.add(fields[9])
    return inodes


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


# -- tests ---------------------------------------------------------------------------------------
def test_the_child_listens_on_a_private_unix_socket(mesh: MeshProcess) -> None:
    pid = runtime_pid(mesh)
    assert _parent_of(pid) == mesh.proc.pid
    with open(f"/proc/{pid}/cmdline") as f:
        argv = f.read().split("\0")
    listen = argv[argv.index("--listen") + 1]
    assert listen.startswith("unix:"), argv
    sock = Path(listen[len("unix:"):])
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert not _socket_inodes(pid) & _tcp_listening_inodes(), "the runtime child listens on a TCP port"


def test_kill_9_of_the_child_under_load(mesh: MeshProcess, samples: dict[str, Any]) -> None:
    old = runtime_pid(mesh)
    with Load(mesh, samples) as load:
        wait_until("clients served before the kill", lambda: len(load.ok_since(0)) == 4)
        killed_at = time.monotonic()
        os.kill(old, signal.SIGKILL)
        wait_until("readiness false after the kill", lambda: ready(mesh) == 503, timeout=10)
        wait_until("a new runtime child", lambda: runtime_pid(mesh) not in (0, old))
        back_after = wait_until("readiness back", lambda: ready(mesh) == 200)
        wait_until("every client served again", lambda: len(load.ok_since(time.monotonic() - 0.1)) == 4
                   or len(load.ok_since(killed_at + back_after)) == 4)
        recovered = time.monotonic() - killed_at
    assert not any(t.is_alive() for t in load.threads), "a client thread hangs"
    assert not load.crashes, load.crashes
    slowest = max(o.took for o in load.outcomes)
    assert slowest < 7.0, f"a call took {slowest:.1f} s"  # bounded by its own deadline (5 s)
    failed = [o for o in load.outcomes if o.status not in ("OK", "200")]
    assert failed, "the kill went unnoticed by every client"
    assert {o.status for o in failed} <= {"503", "504", "UNAVAILABLE", "DEADLINE_EXCEEDED"}, failed
    assert recovered < RECOVERY_S

    pid = runtime_pid(mesh)
    assert pid != old and _parent_of(pid) == mesh.proc.pid
    for model_id in ("string-1", "string-2", "sklearn-iris"):
        code, body = mesh.call("GET", f"/mesh/v1/models/{model_id}")
        assert code == 200 and body["status"] == "LOADED" and body["errors"] == [], body
    log = mesh.log()
    assert f"WARNING kserve_mesh.mesh.runtime_process: the runtime process (pid {old}) exited " \
           "(killed by signal SIGKILL); restarting it in" in log, log[-3000:]
    assert "the runtime process restarted" in log


@pytest.mark.parametrize("mesh", [SLOW_CHECK_FLAGS], indirect=True, ids=["slow-checks"])
def test_a_stopped_child_is_killed_and_restarted(mesh: MeshProcess, samples: dict[str, Any]) -> None:
    grpc_infer = GrpcInfer(mesh.grpc)
    try:
        assert grpc_infer("string-1", 10.0)[0] == "OK"  # loaded before the stop
        old = runtime_pid(mesh)
        os.kill(old, signal.SIGSTOP)
        mesh.stopped_pids.append(old)  # type: ignore[attr-defined]

        # Requests that need a load get a deadline error (REST: naming the model), in their own time.
        results: dict[str, Any] = {}

        def rest() -> None:
            results["rest"] = rest_infer(mesh, "sklearn-iris", samples["sklearn-iris"]["request"], 1500)

        def grpc_call() -> None:
            results["grpc"] = grpc_infer("string-2", 1.5)

        started = time.monotonic()
        threads = [threading.Thread(target=rest), threading.Thread(target=grpc_call)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(CLIENT_TIMEOUT_S + 5)
        took = time.monotonic() - started
        code, body = results["rest"]
        assert code == 504 and "sklearn-iris" in body, body
        assert results["grpc"][0] == "DEADLINE_EXCEEDED", results["grpc"]
        assert took < 5.0, took

        # Two failed health checks later the child is killed and restarted.
        wait_until("readiness false for a hung child", lambda: ready(mesh) == 503, timeout=RECOVERY_S)
        wait_until("a new runtime child", lambda: runtime_pid(mesh) not in (0, old))
        wait_until("readiness back", lambda: ready(mesh) == 200)
        with open(f"/proc/{old}/stat") if os.path.exists(f"/proc/{old}") else contextlib.nullcontext("") as f:
            state = f.read().rsplit(")", 1)[1].split()[0] if f else ""
        assert state in ("", "Z"), f"the hung child {old} is still there (state {state})"

        code, body = rest_infer(mesh, "sklearn-iris", samples["sklearn-iris"]["request"], 20_000)
        assert code == 200, body
        assert grpc_infer("string-2", 20.0)[0] == "OK"
        assert grpc_infer("string-1", 20.0)[0] == "OK"  # lost with the old child, loaded again
        for model_id in ("sklearn-iris", "string-1", "string-2"):
            _, status_body = mesh.call("GET", f"/mesh/v1/models/{model_id}")
            assert status_body["status"] == "LOADED" and status_body["errors"] == [], status_body
    finally:
        grpc_infer.close()
    log = mesh.log()
    assert f"the runtime process (pid {old}) was hung" in log and "restarting it in" in log, log[-3000:]
    assert "WARNING kserve_mesh.mesh.runtime_process" in log


# -- a remote runtime (not our process): lost and back -----------------------------------------
def _start_runtime(listen: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "kserve_mesh.runtime.server", "--listen", listen,
                             "--log-level", "WARNING"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # bounded: the process prints it or exits (then the line is "")
    assert line.startswith(f"runtime listening on {listen}"), line
    return proc


def _end(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def test_a_remote_runtime_that_fails_and_returns(tmp_path: Path) -> None:
    folder = tmp_path / "rt"
    folder.mkdir(mode=0o700)
    listen = f"unix:{folder}/runtime.sock"
    first = _start_runtime(listen)
    second: subprocess.Popen[str] | None = None
    mesh = MeshProcess.start("--runtime", "remote", "--runtime-address", listen, *CHECK_FLAGS, command="instance")
    try:
        assert ready(mesh) == 200 and runtime_pid(mesh) == 0
        first.kill()
        wait_until("readiness false without the runtime", lambda: ready(mesh) == 503)
        second = _start_runtime(listen)
        wait_until("readiness back with the runtime", lambda: ready(mesh) == 200)
    finally:
        mesh.stop()
        _end(first)
        if second is not None:
            _end(second)
    log = mesh.log()
    assert "WARNING kserve_mesh.mesh.runtime_process: the runtime is unavailable" in log, log[-3000:]
    assert "the runtime answers again" in log
