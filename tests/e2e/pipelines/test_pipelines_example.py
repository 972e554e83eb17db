"""The example pipeline, end to end, with kfp's local runner: a real mesh process, a real
S3-protocol server (nanio, which checks credentials), every step run as its own Python process.

Then the mesh components alone, with bad input: an unreachable mesh, a model that cannot load, an
unknown model, a wrong input shape and a wrong expected answer each fail the step with a message
that says what was wrong.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from kfp import local
from kserve_mesh_pipelines import register_model, smoke_test
from kserve_mesh_pipelines.example_pipeline import example_pipeline
from mesh_process import MeshProcess
from storage_servers import S3Server, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

BUCKET = "models"  # created by the s3_mesh fixture (conftest.py)
STORAGE_KEY = "pipelineS3"  # the mesh's storage-config entry for the S3 server
OBJECT_KEY = "kfp-example/iris/model.joblib"
ROW = [5.1, 3.5, 1.4, 0.2]
SMOKE_URI = f"s3://{BUCKET}/smoke/model.joblib"


@pytest.fixture
def pipeline_root(tmp_path: Path) -> Path:
    """kfp's local runner, each step a subprocess of this interpreter, outputs under ``tmp_path``."""
    root = tmp_path / "pipeline-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


def _executor_outputs(root: Path, step: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in root.glob(f"*/{step}/executor_output.json")]


def test_example_pipeline_trains_uploads_serves_and_smoke_tests(
        s3_mesh: MeshProcess, nanio: S3Server, pipeline_root: Path) -> None:
    example_pipeline(mesh_url=s3_mesh.rest, s3_endpoint=nanio.endpoint, s3_access_key=nanio.access_key,
                     s3_secret_key=nanio.secret_key, bucket=BUCKET, object_key=OBJECT_KEY,
                     storage_key=STORAGE_KEY, model_id="iris-kfp", timeout_s=30.0)

    head = nanio.client().head_object(Bucket=BUCKET, Key=OBJECT_KEY)
    assert head["ContentLength"] > 100
    status, body = s3_mesh.call("GET", "/mesh/v1/models/iris-kfp")
    assert status == 200 and body["status"] == "LOADED", body
    assert body["modelInfo"] == {"type": "sklearn", "path": f"s3://{BUCKET}/{OBJECT_KEY}",
                                 "key": json.dumps({"storage_key": STORAGE_KEY})}

    (registered,) = _executor_outputs(pipeline_root, "register-model")
    assert registered["parameterValues"] == {"model_id": "iris-kfp",
                                             "endpoint": f"{s3_mesh.rest}/v2/models/iris-kfp"}
    (smoke,) = _executor_outputs(pipeline_root, "smoke-test")
    metrics = smoke["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert metrics["outputs_checked"] == 1 and metrics["max_abs_error"] == 0
    assert 0 < metrics["latency_ms"] < 30_000

    # the served model answers as the trained one did (one iris row of each class)
    status, answer = s3_mesh.call("POST", "/v2/models/iris-kfp/infer", {"inputs": [
        {"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": ROW}]})
    assert status == 200 and answer["outputs"][0]["data"] == [0], answer


def _fails(capsys: pytest.CaptureFixture[str], run: Any, expected: str) -> None:
    """Run one component locally; it must fail, and its log must hold ``expected`` (a regex)."""
    with pytest.raises(RuntimeError, match=r"finished with status \S*FAILURE"):
        run()
    log = capsys.readouterr().out
    assert re.search(expected, log), f"expected /{expected}/ in the step's log:\n{log[-3000:]}"


def test_register_on_an_unreachable_mesh_fails_clearly(pipeline_root: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    _fails(capsys, lambda: register_model(mesh_url=url, model_id="m", model_format="sklearn",
                                          storage_uri="s3://models/m.joblib", timeout_s=5.0),
           rf"RuntimeError: register model 'm' failed: cannot reach the mesh at {url}")


def test_register_of_a_missing_object_fails_with_the_load_error(
        s3_mesh: MeshProcess, pipeline_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(capsys, lambda: register_model(mesh_url=s3_mesh.rest, model_id="missing", model_format="sklearn",
                                          storage_uri=f"s3://{BUCKET}/nothing/here.joblib",
                                          storage_key=STORAGE_KEY, timeout_s=20.0),
           r"RuntimeError: model 'missing' failed to load: .*nothing/here.joblib")


@pytest.fixture(scope="module")
def loaded_model(s3_mesh: MeshProcess, s3_model: str) -> str:
    """The S3 model registered and Loaded on the mesh: what the smoke-test failures talk to."""
    status, body = s3_mesh.call("PUT", "/mesh/v1/models/smoke-iris", {
        "modelInfo": {"type": "sklearn", "path": SMOKE_URI, "key": json.dumps({"storage_key": STORAGE_KEY})},
        "loadNow": True, "sync": True})
    assert status == 200 and body["status"] == "LOADED", body
    return "smoke-iris"


def test_register_again_is_a_no_op_and_a_conflicting_one_is_refused(
        s3_mesh: MeshProcess, loaded_model: str, pipeline_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    again = register_model(mesh_url=s3_mesh.rest, model_id=loaded_model, model_format="sklearn",
                           storage_uri=SMOKE_URI, storage_key=STORAGE_KEY, timeout_s=20.0)
    assert again.outputs == {"model_id": loaded_model, "endpoint": f"{s3_mesh.rest}/v2/models/{loaded_model}"}
    _fails(capsys, lambda: register_model(mesh_url=s3_mesh.rest, model_id=loaded_model, model_format="sklearn",
                                          storage_uri=f"s3://{BUCKET}/other.joblib", storage_key=STORAGE_KEY),
           rf"RuntimeError: register model '{loaded_model}' failed: model '{loaded_model}' is already registered "
           r"with different type/path/key \(HTTP 409 from ")


def _request(shape: list[int], data: list[float]) -> str:
    return json.dumps({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": shape, "data": data}]})


EXPECTED = json.dumps({"outputs": [{"name": "output-0", "data": [0]}]})


@pytest.mark.parametrize(("model", "request_json", "expected_json", "message"), [
    ("no-such-model", _request([1, 4], ROW), EXPECTED,
     r"RuntimeError: inference on model 'no-such-model' failed: .*no-such-model.* \(HTTP 404 from "),
    (None, _request([1, 3], ROW[:3]), EXPECTED,
     r"RuntimeError: inference on model 'smoke-iris' failed: input 'input-0' of model 'smoke-iris' .*"
     r" \(HTTP 400 from "),
    (None, _request([1, 4], ROW), json.dumps({"outputs": [{"name": "output-0", "data": [2]}]}),
     r"RuntimeError: smoke test failed: output 'output-0': 1 of 1 values differ: \[0\] got 0, expected 2"),
    (None, _request([1, 4], ROW), json.dumps({"outputs": [{"name": "scores", "data": [0]}]}),
     r"RuntimeError: smoke test failed: output 'scores' is missing \(the model returned: output-0\)"),
], ids=["unknown-model", "wrong-input-shape", "wrong-answer", "missing-output"])
def test_smoke_test_failures_name_what_was_wrong(
        s3_mesh: MeshProcess, loaded_model: str, pipeline_root: Path, capsys: pytest.CaptureFixture[str],
        model: str | None, request_json: str, expected_json: str, message: str) -> None:
    _fails(capsys, lambda: smoke_test(mesh_url=s3_mesh.rest, model_name=model or loaded_model,
                                      request_json=request_json, expected_json=expected_json, tolerance=0.0),
           message)
