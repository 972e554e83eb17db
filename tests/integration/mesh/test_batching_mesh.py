"""Adaptive batching through a real mesh (issue 15): concurrent REST requests for the sklearn
example model get the same answers as the same requests sent one at a time, and the instance's
/metrics shows model calls that predicted several requests (``kserve_mesh_batch_size``), with the
built-in runtime in process and as a runtime process (read from its runtimeStatus)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mesh_process import MeshProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MODEL = "sklearn-iris"
ROWS = np.random.default_rng(7).uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(48, 4)).round(1)


@pytest.fixture(scope="module", params=["inprocess", "process"])
def batching_mesh(request: pytest.FixtureRequest, example_models: tuple[Path, dict[str, Any]]) -> Iterator[MeshProcess]:
    # A 30 ms delay makes the concurrent requests meet in batches whatever the machine's speed.
    proc = MeshProcess.start("--models", str(example_models[0]), "--runtime", request.param,
                             "--batch-max-size", "16", "--batch-max-delay-ms", "30",
                             env={"KSERVE_MESH_MEMORY_CHECK_INTERVAL_S": "0.2"})
    try:
        yield proc
    finally:
        proc.stop()


def _infer(mesh: MeshProcess, row: np.ndarray) -> list[Any]:
    body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": row.tolist()}]}
    status, answer = mesh.call("POST", f"/v2/models/{MODEL}/infer", body, timeout=30)
    assert status == 200, answer
    return answer["outputs"][0]["data"]


def _batch_histogram(mesh: MeshProcess) -> tuple[float, float]:
    """(model calls, requests) of kserve_mesh_batch_size on the instance's /metrics."""
    text = mesh.metrics_text()
    count = re.search(r"^kserve_mesh_batch_size_count (\S+)$", text, re.MULTILINE)
    total = re.search(r"^kserve_mesh_batch_size_sum (\S+)$", text, re.MULTILINE)
    return (float(count.group(1)) if count else 0.0), (float(total.group(1)) if total else 0.0)


def test_concurrent_requests_are_batched_and_answered_as_alone(batching_mesh: MeshProcess) -> None:
    alone = [_infer(batching_mesh, row) for row in ROWS[:8]]  # one at a time (also loads the model)
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda row: _infer(batching_mesh, row), ROWS))
    assert together[:8] == alone
    assert {tuple(a) for a in together} <= {(0,), (1,), (2,)} and len({tuple(a) for a in together}) > 1
    # the runtime process' numbers arrive with its next runtimeStatus (every 0.2 s here)
    for _ in range(100):
        calls, requests = _batch_histogram(batching_mesh)
        if requests >= len(ROWS) + 8:
            break
        time.sleep(0.05)
    assert requests == len(ROWS) + 8, batching_mesh.metrics_text()
    assert calls < requests  # some model calls predicted several requests
    assert "# TYPE kserve_mesh_batch_size histogram" in batching_mesh.metrics_text()
