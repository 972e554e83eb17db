"""The runtime server as a real process (``python -m kserve_mesh.runtime.server``) driven by
GrpcRuntimeClient: load, infer every type, sizes, metadata, unload, errors, then a clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from kserve_mesh.core.errors import InvalidArgument, ModelLoadFailed, ModelNotFound, StorageNotFound, Unavailable
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.protocol import tensors, v2
from kserve_mesh.runtime.grpc_client import GrpcRuntimeClient
from kserve_mesh.runtime.spi import RuntimeState

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def runtime_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[str], int]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kserve_mesh.runtime.server", "--port", "0", "--capacity-bytes", "512Mi",
         "--model-loading-timeout-ms", "30000", "--log-level", "WARNING",
         "--allow-local-path", str(tmp_path_factory.getbasetemp())],  # the models and each test's tmp_path
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    try:
        line = _readline(proc, timeout=30)
        assert line.startswith("runtime listening on 127.0.0.1:"), line
        yield proc, int(line.rsplit(":", 1)[1])
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"runtime printed nothing within {timeout} s")
    return proc.stdout.readline().strip()


@pytest.fixture
async def client(runtime_process: tuple[subprocess.Popen[str], int]) -> AsyncIterator[GrpcRuntimeClient]:
    c = GrpcRuntimeClient(f"127.0.0.1:{runtime_process[1]}", deadline_s=10, infer_deadline_s=10)
    try:
        yield c
    finally:
        await c.close()


async def test_status_and_readiness(client: GrpcRuntimeClient) -> None:
    status = await client.wait_until_ready(timeout_s=10)
    assert status.state == RuntimeState.READY
    assert status.capacity_bytes == 512 << 20 and status.model_loading_timeout_ms == 30_000
    assert await client.server_ready()


async def test_load_infer_unload_every_type(
    client: GrpcRuntimeClient, models_dir: Path, samples: dict[str, Any], make_models: ModuleType
) -> None:
    for model_id, sample in samples.items():
        info = ModelInfo(type=sample["type"], path=str(models_dir / model_id))
        predicted = await client.predict_model_size(model_id, info)
        result = await client.load_model(model_id, info)
        assert predicted > 0 and result.size_bytes > 0
        assert await client.model_size(model_id) == result.size_bytes
        assert await client.model_ready(model_id)
        meta = await client.model_metadata(model_id)
        assert meta.name == model_id and len(meta.inputs) == 1
        request = tensors.encode_request(model_id, make_models.arrays_of(sample["request"]["inputs"]))
        response = await client.infer(request)
        assert response.model_name == model_id
        got = tensors.decode_outputs(response)
        for name, want in make_models.arrays_of(sample["expected"]["outputs"]).items():
            if want.dtype.kind == "f":
                np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6)
            else:
                assert got[name].tolist() == want.tolist()
        # the opaque path: serialized request in, serialized response out
        raw = await client.infer_bytes(request.SerializeToString(), model_id=model_id)
        assert v2.ModelInferResponse.FromString(raw) == response
    for model_id in samples:
        await client.unload_model(model_id)
        assert not await client.model_ready(model_id)


async def test_errors_come_back_as_core_errors(client: GrpcRuntimeClient, models_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="'absent' is not loaded") as not_found:
        await client.infer(tensors.encode_request("absent", {"input-0": np.ones((1, 4))}))
    assert not_found.value.model_id == "absent"
    with pytest.raises(StorageNotFound, match="does not exist"):
        await client.load_model("gone", ModelInfo(type="sklearn", path=str(tmp_path / "gone")))
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(ModelLoadFailed, match="cannot load xgboost model"):
        await client.load_model("broken", ModelInfo(type="xgboost", path=str(tmp_path)))
    await client.load_model("sk", ModelInfo(type="sklearn", path=str(models_dir / "sklearn-iris")))
    with pytest.raises(InvalidArgument, match="has 2 features; the model expects 4"):
        await client.infer(tensors.encode_request("sk", {"input-0": np.ones((1, 2))}))
    with pytest.raises(ModelNotFound):
        await client.model_size("absent")
    await client.unload_model("sk")


async def test_sigterm_stops_the_process_cleanly(models_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kserve_mesh.runtime.server", "--port", "0", "--log-level", "WARNING",
        "--allow-local-path", str(models_dir), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        port = int(line.rsplit(":", 1)[1])
        c = GrpcRuntimeClient(f"127.0.0.1:{port}", deadline_s=2)
        try:
            await c.load_model("s", ModelInfo(type="string", path=str(models_dir / "string-1")))
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
            with pytest.raises(Unavailable, match=f"runtime at 127.0.0.1:{port}"):
                await c.runtime_status()
        finally:
            await c.close()
        assert proc.stderr is not None
        stderr = (await proc.stderr.read()).decode()
        assert "Traceback" not in stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_a_taken_port_is_reported_without_a_traceback() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-m", "kserve_mesh.runtime.server", "--port", str(port)],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr
