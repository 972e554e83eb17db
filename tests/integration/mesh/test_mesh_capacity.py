"""Capacity: with room for N models, 3N distinct models requested over and over never push used
bytes above capacity, the least recently used go first, and every request succeeds."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mesh_process import MeshProcess

pytestmark = pytest.mark.integration

N = 4
MODELS = [f"m{i:02d}" for i in range(3 * N)]
USED = re.compile(r"^modelmesh_instance_used_bytes(?:\{[^}]*\})? (\S+)$", re.M)
CAPACITY = re.compile(r"^modelmesh_instance_capacity_bytes(?:\{[^}]*\})? (\S+)$", re.M)


def _request(model_id: str) -> dict:
    return {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("string-models")
    for model_id in MODELS:
        (root / model_id).mkdir()
        # Same length for all: every model has the same size, so capacity = N sizes fits exactly N.
        (root / model_id / "model.string").write_text(f"{model_id}:" + "z" * 1000)
    return root


@pytest.fixture(scope="module")
def model_size(model_dir: Path) -> int:
    """The size the mesh accounts for one of these models, read from a mesh with plenty of room."""
    proc = MeshProcess.start("--models", str(model_dir))
    try:
        status, body = proc.call("POST", f"/v2/models/{MODELS[0]}/infer", _request(MODELS[0]))
        assert status == 200, body
        size = proc.wait_state(MODELS[0], {"LOADED"})["sizeBytes"]
        assert size > 0
        return size
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def small_mesh(model_dir: Path, model_size: int, example_models: tuple[Path, dict]) -> Iterator[MeshProcess]:
    # The example models (the too-big onnx model) are allowed besides the --models folder.
    proc = MeshProcess.start("--models", str(model_dir), "--capacity-bytes", str(N * model_size),
                             "--allow-local-path", str(example_models[0]))
    try:
        yield proc
    finally:
        proc.stop()


def _loaded(mesh: MeshProcess) -> set[str]:
    _, body = mesh.call("GET", "/mesh/v1/models")
    return {m["modelId"] for m in body["models"] if m["status"] == "LOADED"}


def test_used_bytes_never_exceed_capacity_under_churn(small_mesh: MeshProcess, model_size: int) -> None:
    capacity = N * model_size
    observations: list[tuple[int, int]] = []  # (used from status, used from metrics)
    stop = threading.Event()

    def observe() -> None:
        while not stop.is_set():
            _, st = small_mesh.call("GET", "/mesh/v1/status")
            text = small_mesh.metrics_text()
            m = USED.search(text)
            assert m is not None, "modelmesh_instance_used_bytes missing from /metrics"
            c = CAPACITY.search(text)
            assert c is not None and int(float(c.group(1))) == capacity
            observations.append((st["usedBytes"], int(float(m.group(1)))))
            time.sleep(0.005)

    failures: list[str] = []

    def client(offset: int) -> int:
        ok = 0
        for r in range(5):
            for i in range(len(MODELS)):
                model_id = MODELS[(i + offset) % len(MODELS)]
                status, body = small_mesh.call("POST", f"/v2/models/{model_id}/infer", _request(model_id))
                if status != 200 or body["outputs"][0]["data"] != [f"{model_id}:" + "z" * 1000 + "x"]:
                    failures.append(f"{model_id}: {status} {body}")
                else:
                    ok += 1
        return ok

    watcher = threading.Thread(target=observe)
    watcher.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            served = sum(pool.map(client, [0, 3, 6, 9]))
    finally:
        stop.set()
        watcher.join(10)
    assert not failures, failures[:5]
    assert served == 4 * 5 * len(MODELS)
    assert len(observations) > 10
    assert max(u for u, _ in observations) <= capacity
    assert max(m for _, m in observations) <= capacity
    assert max(u for u, _ in observations) > 0
    _, st = small_mesh.call("GET", "/mesh/v1/status")
    assert st["modelsLoaded"] <= N


def test_least_recently_used_is_evicted_first(small_mesh: MeshProcess) -> None:
    # Fill the cache in a known order of last use: m00 (oldest) .. m03 (newest).
    for model_id in MODELS[:N]:
        status, body = small_mesh.call("POST", f"/v2/models/{model_id}/infer", _request(model_id))
        assert status == 200, body
        time.sleep(0.01)
    # Touch m00 again: now m01 is the least recently used.
    assert small_mesh.call("POST", f"/v2/models/{MODELS[0]}/infer", _request(MODELS[0]))[0] == 200
    loaded = _loaded(small_mesh)
    assert set(MODELS[:N]) <= loaded
    for newcomer, expected_victim in ((MODELS[N], MODELS[1]), (MODELS[N + 1], MODELS[2])):
        time.sleep(0.01)
        status, body = small_mesh.call("POST", f"/v2/models/{newcomer}/infer", _request(newcomer))
        assert status == 200, body
        small_mesh.wait_state(expected_victim, {"NOT_LOADED"}, timeout=10)
        loaded = _loaded(small_mesh)
        assert newcomer in loaded and expected_victim not in loaded
        assert MODELS[0] in loaded  # touched recently: kept


def test_model_larger_than_capacity_fails_clearly(small_mesh: MeshProcess, example_models: tuple[Path, dict]) -> None:
    path = str(example_models[0] / "onnx-iris")
    status, body = small_mesh.call("PUT", "/mesh/v1/models/too-big",
                                   {"modelInfo": {"type": "onnx", "path": path}, "loadNow": True, "sync": True})
    assert status == 200
    assert body["status"] == "LOADING_FAILED"
    assert "capacity" in body["errors"][0] and "too-big" in body["errors"][0]
    request = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]}
    status, body = small_mesh.call("POST", "/v2/models/too-big/infer", request)
    assert status in (503, 507), body
    assert "capacity" in body["error"], body
    assert "Traceback" not in str(body)
