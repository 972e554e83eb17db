"""`kserve-mesh up --instances 2`: etcd, two instances with their runtime processes, a live table;
SIGTERM stops every process it started."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from example_models import make_models_module

pytestmark = pytest.mark.e2e

READY = re.compile(r"kserve-mesh cluster ready: etcd=(\S+) (.*)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0
    except OSError:
        return False


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                child = int(entry.name)
                out |= {child} | _children(child)
    return out


def _start_up(*args: str) -> tuple[subprocess.Popen[str], list[str], list[re.Match[str]], threading.Event]:
    """``kserve-mesh up ARGS``, its output pumped into ``lines``; ``got`` is set at its cluster-ready
    line (then in ``ready``) or when it exits."""
    proc = subprocess.Popen([sys.executable, "-m", "kserve_mesh.cli", "up", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready: list[re.Match[str]] = []
    got = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = READY.search(line)
            if m:
                ready.append(m)
                got.set()
        got.set()

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines, ready, got


def _stop(proc: subprocess.Popen[str]) -> int:
    """SIGTERM ``up`` (SIGKILL if it does not exit in time); its exit code."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


def _check_stopped(code: int, lines: list[str], started: set[int]) -> None:
    """``up`` exited 0 and left none of the processes it started running."""
    assert code == 0, "".join(lines[-30:])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in started):
        time.sleep(0.2)
    assert not [p for p in started if _alive(p)], "processes left running"


def test_up_instances_serves_and_stops_everything(tmp_path: Path) -> None:
    models = tmp_path / "models"
    cases = make_models_module().make_all(models, string_models=1)
    proc, lines, ready, got = _start_up("--instances", "2", "--models", str(models), "--rest-port", "0",
                                        "--grpc-port", "0", "--metrics-port", "0")
    started: set[int] = set()
    try:
        assert got.wait(180) and ready, "".join(lines)
        rests = re.findall(r"rest=(\S+)", ready[0].group(2))
        assert len(rests) == 2
        assert "instance-0" in "".join(lines) and "ready" in "".join(lines)  # the live table
        request = json.dumps(cases["sklearn-iris"]["request"])
        for rest in rests:
            out = subprocess.run([sys.executable, "-m", "kserve_mesh.cli", "infer", "sklearn-iris", "-d", request,
                                  "--url", rest], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["outputs"][0]["data"] == cases["sklearn-iris"]["expected"]["outputs"][0]["data"]
        status = json.loads(subprocess.run([sys.executable, "-m", "kserve_mesh.cli", "status", "-o", "json", "--url",
                                            rests[0]], capture_output=True, text=True, timeout=60).stdout)
        assert len(status["instances"]) == 2 and all(i["pid"] for i in status["instances"])
        assert status["placements"]["sklearn-iris"]
        started = _children(proc.pid)
        assert len(started) >= 5  # etcd, 2 instances, 2 runtime processes
    finally:
        code = _stop(proc)
    _check_stopped(code, lines, started)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_up_workers_share_the_ports_and_each_serves(tmp_path: Path) -> None:
    """`up --workers 2`: etcd and two instances on one pair of ports, each with its runtime in
    process; a copy of a model in each serves, whichever takes the connection; SIGTERM stops all."""
    models = tmp_path / "models"
    cases = make_models_module().make_all(models, string_models=1)
    rest_port, grpc_port = _free_port(), _free_port()
    proc, lines, ready, got = _start_up("--workers", "2", "--models", str(models), "--rest-port", str(rest_port),
                                        "--grpc-port", str(grpc_port), "--metrics-port", "0")
    started: set[int] = set()
    try:
        assert got.wait(180) and ready, "".join(lines)
        shared = f"http://127.0.0.1:{rest_port}"
        assert f"rest={shared} grpc=127.0.0.1:{grpc_port}" in ready[0].group(2)
        peers = re.findall(r"peer=(\S+)", ready[0].group(2))
        assert len(peers) == 2 and shared not in peers
        for peer in peers:  # a copy in each instance, loaded through its own port
            req = urllib.request.Request(f"{peer}/v2/repository/models/sklearn-iris/load", data=b"", method="POST")
            with urllib.request.urlopen(req, timeout=120) as resp:
                assert resp.status == 200
        deadline = time.monotonic() + 20
        while True:  # a copy loaded on one instance reaches the other's view through etcd a moment later
            status = json.loads(subprocess.run([sys.executable, "-m", "kserve_mesh.cli", "status", "-o", "json",
                                                "--url", shared], capture_output=True, text=True, timeout=60).stdout)
            if len(status["placements"].get("sklearn-iris", [])) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(status["instances"]) == 2 and len(status["placements"]["sklearn-iris"]) == 2
        request = json.dumps(cases["sklearn-iris"]["request"])
        for _ in range(4):
            out = subprocess.run([sys.executable, "-m", "kserve_mesh.cli", "infer", "sklearn-iris", "-d", request,
                                  "--url", shared], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["outputs"][0]["data"] == cases["sklearn-iris"]["expected"]["outputs"][0]["data"]
        started = _children(proc.pid)
        assert len(started) >= 3  # etcd and 2 instances (their runtimes run inside them)
    finally:
        code = _stop(proc)
    _check_stopped(code, lines, started)
