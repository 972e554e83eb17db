"""``deploy_inference_service`` -> ``smoke_test`` as a pipeline with kfp's local runner, against a
real mesh's ``POST /mesh/v1/apply`` and a model in a real S3-protocol server; and the deploy step's
failures: an InferenceService whose model cannot load, one the mesh refuses, and invalid YAML."""

import json  # no `from __future__ import annotations`: kfp reads the pipeline's annotations as types
import re
from pathlib import Path
from typing import Any

import pytest
from kfp import dsl, local
from kserve_mesh_pipelines import deploy_inference_service, smoke_test
from mesh_process import MeshProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

STORAGE_KEY = "pipelineS3"  # the mesh's storage-config entry for the S3 server (conftest.py)
ISVC = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {name}
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn
      storage:
        key: {key}
        path: {path}
"""
REQUEST = json.dumps({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [3, 4],
                                  "data": [5.1, 3.5, 1.4, 0.2, 7.0, 3.2, 4.7, 1.4, 6.3, 3.3, 6.0, 2.5]}]})
EXPECTED = json.dumps({"outputs": [{"name": "output-0", "shape": [3], "data": [0, 1, 2]}]})


@dsl.pipeline(name="deploy-and-smoke-test")
def deploy_and_smoke_test(mesh_url: str, isvc_yaml: str, request_json: str, expected_json: str):
    service = deploy_inference_service(mesh_url=mesh_url, isvc_yaml=isvc_yaml, timeout_s=30.0)
    smoke_test(mesh_url=service.outputs["url"], model_name=service.outputs["model_name"],
               request_json=request_json, expected_json=expected_json, tolerance=0.0)


@pytest.fixture
def pipeline_root(tmp_path: Path) -> Path:
    root = tmp_path / "pipeline-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


def test_deployed_inference_service_is_smoke_tested_through_its_rest_url(
        s3_mesh: MeshProcess, s3_model: str, pipeline_root: Path) -> None:
    isvc = ISVC.format(name="iris-isvc", key=STORAGE_KEY, path=s3_model)
    deploy_and_smoke_test(mesh_url=s3_mesh.rest, isvc_yaml=isvc, request_json=REQUEST, expected_json=EXPECTED)

    (deployed,) = [json.loads(p.read_text()) for p in pipeline_root.glob("*/deploy-inference-service/executor_output.json")]
    status, obj = s3_mesh.call("GET", "/mesh/v1/inferenceservices/default/iris-isvc")
    assert status == 200 and obj["status"]["modelStatus"]["states"]["activeModelState"] == "Loaded", obj
    assert deployed["parameterValues"] == {"url": obj["status"]["components"]["predictor"]["restUrl"],
                                           "model_name": "iris-isvc"}
    (smoke,) = [json.loads(p.read_text()) for p in pipeline_root.glob("*/smoke-test/executor_output.json")]
    assert smoke["artifacts"]["metrics"]["artifacts"][0]["metadata"]["outputs_checked"] == 1


def _fails(capsys: pytest.CaptureFixture[str], run: Any, expected: str) -> None:
    with pytest.raises(RuntimeError, match=r"finished with status \S*FAILURE"):
        run()
    log = capsys.readouterr().out
    assert re.search(expected, log), f"expected /{expected}/ in the step's log:\n{log[-3000:]}"


def test_an_inference_service_whose_model_cannot_load_fails_with_the_reason(
        s3_mesh: MeshProcess, pipeline_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    isvc = ISVC.format(name="missing-isvc", key=STORAGE_KEY, path="nothing/here.joblib")
    _fails(capsys, lambda: deploy_inference_service(mesh_url=s3_mesh.rest, isvc_yaml=isvc, timeout_s=30.0),
           r"RuntimeError: InferenceService default/missing-isvc failed to load \(ModelLoadFailed\): "
           r".*nothing/here.joblib")


def test_an_inference_service_the_mesh_refuses_fails_with_its_message(
        s3_mesh: MeshProcess, pipeline_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_storage = ISVC.format(name="bad-isvc", key=STORAGE_KEY, path="x").replace(
        "      storage:\n        key: pipelineS3\n        path: x\n", "")
    _fails(capsys, lambda: deploy_inference_service(mesh_url=s3_mesh.rest, isvc_yaml=no_storage, timeout_s=10.0),
           r"RuntimeError: apply InferenceService default/bad-isvc failed: .*storage.* \(HTTP 400 from ")


def test_invalid_yaml_fails_before_reaching_the_mesh(
        s3_mesh: MeshProcess, pipeline_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(capsys, lambda: deploy_inference_service(mesh_url=s3_mesh.rest, isvc_yaml="kind: [oops", timeout_s=10.0),
           r"ValueError: isvc_yaml is not valid YAML: ")
