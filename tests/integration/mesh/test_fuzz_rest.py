"""schemathesis against the REST OpenAPI document of a real ``kserve-mesh up`` process: every
route (the V2 inference routes included, which ``openapi_v2.py`` adds to the document), with valid
and invalid data. No request may get a 5xx (a 503 from a readiness route is its answer, not a
failure), the process must not crash, and it must still serve afterwards. Bounded: a fixed number
of examples per route, derandomized so CI runs are reproducible."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from mesh_process import MeshProcess
from schemathesis import GenerationMode

pytestmark = pytest.mark.integration

EXAMPLES = {GenerationMode.POSITIVE: 10, GenerationMode.NEGATIVE: 6}
GOOD = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}


@pytest.fixture(scope="module")
def fuzzed(example_models: tuple[Path, dict[str, Any]]) -> Iterator[MeshProcess]:
    """A mesh of its own: fuzzing registers and deletes things."""
    proc = MeshProcess.start("--models", str(example_models[0]))
    try:
        yield proc
    finally:
        proc.stop()


def _allowed(label: str, status: int) -> bool:
    return status < 500 or (status == 503 and label.endswith("/ready"))


def _fuzz(base_url: str, operation: Any, mode: GenerationMode, examples: int, failures: list[str],
          path_parameters: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> int:
    """Run ``examples`` generated cases of ``operation``; returns how many calls were made."""
    calls = 0

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters, headers=headers))
    def exercise(case: Any) -> None:
        nonlocal calls
        response = case.call(base_url=base_url, timeout=60)
        calls += 1
        if not _allowed(operation.label, response.status_code):
            failures.append(f"{operation.label} ({mode.value}) -> {response.status_code}: {response.text[:300]} "
                            f"| path {case.path_parameters} body {str(case.body)[:200]}")

    try:
        exercise()
    except Unsatisfiable:
        pass  # nothing to make invalid (no parameters, no body): the positive run covers the route
    return calls


def test_no_route_answers_5xx_to_anything_and_the_instance_still_serves(fuzzed: MeshProcess) -> None:
    assert fuzzed.call("POST", "/v2/models/sklearn-iris/infer", GOOD)[0] == 200
    schema = schemathesis.openapi.from_url(fuzzed.rest + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    for route in ("POST /v2/models/{name}/infer", "POST /v2/models/{name}/versions/{version}/infer",
                  "PUT /mesh/v1/models/{model_id}", "PUT /mesh/v1/vmodels/{vmodel_id}", "POST /mesh/v1/apply",
                  "POST /v2/repository/models/{name}/load", "POST /mesh/v1/forward/infer"):
        assert route in labels
    failures: list[str] = []
    start = time.monotonic()
    calls = sum(_fuzz(fuzzed.rest, operation, mode, examples, failures)
                for operation in operations for mode, examples in EXAMPLES.items())
    # inference bodies again, routed to a real model (so it is the body that is fuzzed)
    routed = {"mm-vmodel-id": "", "mm-model-id": "sklearn-iris"}
    for operation in operations:
        if operation.label.startswith("POST /v2/models/{name}") and operation.label.endswith("/infer"):
            real = {"name": "sklearn-iris", "version": "1"} if "{version}" in operation.label else {"name": "sklearn-iris"}
            for mode in EXAMPLES:
                calls += _fuzz(fuzzed.rest, operation, mode, 40, failures, real, routed)
    assert not failures, "\n".join(failures[:20])
    assert calls > 3 * len(operations)
    assert time.monotonic() - start < 600
    # still alive, still serving, nothing unexpected in the log
    assert fuzzed.proc.poll() is None
    status, body = fuzzed.call("POST", "/v2/models/sklearn-iris/infer", GOOD)
    assert status == 200 and body["outputs"][0]["data"] == [0], body
    assert fuzzed.call("GET", "/v2/health/ready")[0] == 200
    log = fuzzed.log()
    assert "Traceback" not in log and "unexpected error" not in log and "Exception in ASGI" not in log, log[-3000:]
