"""End to end: the Triton adapter as its own runtime process (``python -m kserve_mesh.runtime.triton``)
behind a mesh instance (``kserve-mesh instance --runtime remote``), a real Triton behind it;
tritonclient.grpc infers through the mesh's gRPC port, a small capacity evicts (Triton's own index
shows the model unloaded), a SIGKILLed Triton comes back and serves again, a bad model fails to load
with Triton's words."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from child_process import pid_alive, readline, stop
from mesh_process import MeshProcess
from triton_models import COUNT_CONFIG, COUNT_MODEL, make_onnx_model, make_python_model

from kserve_mesh.protos import model_runtime_pb2 as pb

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
TRITON_READY = re.compile(r"Triton (\d+) ready: grpc=(\S+)")


@dataclass
class Adapter:
    proc: subprocess.Popen[str]
    address: str  # its ModelRuntime gRPC server
    log_path: Path

    def triton(self) -> tuple[int, str]:
        """(pid, gRPC target) of the Triton it started most recently."""
        found = TRITON_READY.findall(self.log_path.read_text())
        assert found, self.log_path.read_text()
        return int(found[-1][0]), found[-1][1]

    def status(self) -> pb.RuntimeStatusResponse:
        with grpc.insecure_channel(self.address) as channel:
            call = channel.unary_unary("/mmesh.ModelRuntime/runtimeStatus",
                                       request_serializer=pb.RuntimeStatusRequest.SerializeToString,
                                       response_deserializer=pb.RuntimeStatusResponse.FromString)
            return call(pb.RuntimeStatusRequest(), timeout=10)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    make_onnx_model(root, "affine")
    make_python_model(root, "py-add")
    make_python_model(root, "broken", config='backend: "python"\nmax_batch_size: [ nope\n')
    make_python_model(root, "count", COUNT_MODEL, COUNT_CONFIG)
    return root


@pytest.fixture
def adapter(triton_venv: Path, tmp_path: Path, models: Path) -> Iterator[Adapter]:
    log_path = tmp_path / "adapter.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kserve_mesh.runtime.triton", "--port", "0", "--capacity-bytes", "100Mi",
             "--triton-venv", str(triton_venv), "--allow-local-path", str(models), "--log-level", "INFO"],
            stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = readline(proc, 120, "the Triton runtime adapter")
        assert line.startswith("runtime listening on 127.0.0.1:"), line + log_path.read_text()
        yield Adapter(proc, line.rsplit(" ", 1)[1], log_path)
    finally:
        stop(proc)


@pytest.fixture
def mesh(adapter: Adapter, models: Path) -> Iterator[MeshProcess]:
    mesh = MeshProcess.start("--runtime", "remote", "--runtime-address", adapter.address,
                             "--allow-local-path", str(models), "--runtime-check-interval-s", "1",
                             command="instance", cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    try:
        yield mesh
    finally:
        mesh.stop()


def _tritonclient(*args: str) -> Any:
    done = subprocess.run([sys.executable, str(HERE / "triton_clients.py"), *args], check=False,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _infer(mesh: MeshProcess, tmp_path: Path, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    return _tritonclient("infer", mesh.grpc.removeprefix("http://"), str(path))


def _register(mesh: MeshProcess, model_id: str, model_type: str, path: Path, **extra: Any) -> dict[str, Any]:
    status, body = mesh.call("PUT", f"/mesh/v1/models/{model_id}",
                             {"modelInfo": {"type": model_type, "path": str(path)}, **extra})
    assert status == 200, body
    return body


def test_mesh_serves_triton_models_evicts_and_survives_a_killed_triton(
        adapter: Adapter, mesh: MeshProcess, models: Path, tmp_path: Path) -> None:
    _register(mesh, "affine", "onnx", models / "affine")
    _register(mesh, "py-add", "python", models / "py-add")
    triton_pid, triton_target = adapter.triton()

    # tritonclient over the mesh's gRPC port: by model name, and by the mm-model-id header.
    answers = _infer(mesh, tmp_path, [
        {"model": "affine", "inputs": {"x": [[0, 1, 2], [3, 4, 5]]}},
        {"model": "anything", "headers": {"mm-model-id": "py-add"}, "inputs": {"INPUT0": [1, 2, 3]}},
    ])
    assert answers[0] == {"model_name": "affine", "y": [[1, 3, 5], [7, 9, 11]]}, answers
    assert answers[1] == {"model_name": "py-add", "OUTPUT0": [2, 3, 4]}, answers

    # 100 MiB hold one of them (the ONNX one measures ~70 MiB, the Python one ~40 MiB): loading
    # py-add evicted affine, and Triton's own repository index says it is unloaded.
    mesh.wait_state("affine", {"NOT_LOADED"}, timeout=30)
    assert mesh.wait_state("py-add", {"LOADED"})["sizeBytes"] > 10 << 20
    deadline = time.monotonic() + 30
    while True:
        index = _tritonclient("index", triton_target)
        if index.get("affine", ["UNAVAILABLE"])[0] == "UNAVAILABLE" and index.get("py-add", [""])[0] == "READY":
            break
        assert time.monotonic() < deadline, f"Triton's index after the eviction: {index}"
        time.sleep(0.2)

    # Triton killed: the adapter says FAILING at once, restarts it, and the next inference through
    # the mesh succeeds within a bounded wait.
    os.kill(triton_pid, signal.SIGKILL)
    while pid_alive(triton_pid):
        time.sleep(0.01)
    assert adapter.status().status == pb.RuntimeStatusResponse.FAILING
    deadline = time.monotonic() + 60
    while True:
        (answer,) = _infer(mesh, tmp_path, [{"model": "py-add", "inputs": {"INPUT0": [41]}}])
        if "error" not in answer:
            break
        assert time.monotonic() < deadline, f"no answer 60 s after Triton was killed: {answer}"
        time.sleep(0.5)
    assert answer == {"model_name": "py-add", "OUTPUT0": [42]}
    assert adapter.triton()[0] != triton_pid and adapter.status().status == pb.RuntimeStatusResponse.READY
    assert "killed by SIGKILL" in adapter.log_path.read_text()

    # A model whose config.pbtxt Triton cannot read: a clear load failure in Triton's words. (The
    # mesh may still be catching up with the restart: it checks its runtime every second and takes
    # it back at the first good check.)
    deadline = time.monotonic() + 30
    while True:
        status, body = mesh.call("PUT", "/mesh/v1/models/broken", {
            "modelInfo": {"type": "triton", "path": str(models / "broken")}, "loadNow": True, "sync": True})
        if status != 503:
            break
        assert time.monotonic() < deadline and "runtime unavailable" in body["error"], body
        time.sleep(0.2)
    assert status == 200, body
    assert body["status"] == "LOADING_FAILED", body
    assert "Triton could not load model 'broken'" in body["errors"][0], body
    assert "failed to read text proto" in body["errors"][0] and "Traceback" not in body["errors"][0], body

    # A decoupled model streams through the mesh: tritonclient's start_stream/async_stream_infer get
    # every response Triton's model sent.
    _register(mesh, "count", "python", models / "count")
    path = tmp_path / "stream.json"
    path.write_text(json.dumps({"requests": [{"model": "count", "id": "r1", "inputs": {"INPUT0": [3]}}], "expect": 3}))
    streamed = _tritonclient("stream", mesh.grpc.removeprefix("http://"), str(path))
    assert streamed == [{"id": "r1", "model_name": "count", "OUTPUT0": [float(i)]} for i in range(3)], streamed

    # SIGTERM stops the adapter, and with it Triton and its stubs.
    new_pid = adapter.triton()[0]
    stubs = [int(p) for p in (Path(f"/proc/{new_pid}/task/{new_pid}/children").read_text().split())]
    mesh.stop()
    assert stop(adapter.proc) == 0
    assert not pid_alive(new_pid)
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in stubs):
        assert time.monotonic() < deadline, "Triton's stub processes outlived it"
        time.sleep(0.1)
