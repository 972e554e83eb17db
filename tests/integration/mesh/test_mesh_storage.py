"""Models pulled from real storage servers: S3 (a real S3-protocol server process, through boto3,
credentials from a ModelMesh-format storage-config) and plain HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mesh_process import MeshProcess
from slow_http import serve_dir
from storage_servers import S3Server, nanio  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

BUCKET = "models"


@pytest.fixture(scope="module")
def s3_mesh(nanio: S3Server, example_models: tuple[Path, dict[str, Any]],  # noqa: F811
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshProcess]:
    models_dir, _ = example_models
    s3 = nanio.client()
    s3.create_bucket(Bucket=BUCKET)
    s3.upload_file(str(models_dir / "xgboost-iris" / "model.json"), BUCKET, "xgb/iris/model.json")
    s3.upload_file(str(models_dir / "onnx-iris" / "model.onnx"), BUCKET, "onnx-iris.onnx")
    config = tmp_path_factory.mktemp("storage-config") / "storage-config.json"
    entry = {"type": "s3", "access_key_id": nanio.access_key, "secret_access_key": nanio.secret_key,
             "endpoint_url": nanio.endpoint, "region": "us-east-1", "default_bucket": BUCKET}
    bad = {**entry, "secret_access_key": "wrong-secret"}
    config.write_text(json.dumps({"localS3": json.dumps(entry), "badCreds": json.dumps(bad)}))
    proc = MeshProcess.start("--models", str(models_dir), "--storage-config", str(config))
    try:
        yield proc
    finally:
        proc.stop()


def _infer_matches(mesh: MeshProcess, model_id: str, case: dict[str, Any]) -> None:
    status, body = mesh.call("POST", f"/v2/models/{model_id}/infer", case["request"])
    assert status == 200, body
    assert body["model_name"] == model_id
    for got, want in zip(body["outputs"], case["expected"]["outputs"]):
        assert got["name"] == want["name"]
        assert got["data"] == pytest.approx(want["data"], rel=1e-5, abs=1e-6)


def test_model_from_s3_folder_with_storage_key(s3_mesh: MeshProcess, example_models: tuple[Path, dict]) -> None:
    key = json.dumps({"storage_key": "localS3", "bucket": BUCKET})
    status, body = s3_mesh.call("PUT", "/mesh/v1/models/xgb-s3",
                                {"modelInfo": {"type": "xgboost", "path": "xgb/iris", "key": key}})
    assert status == 200, body
    _infer_matches(s3_mesh, "xgb-s3", example_models[1]["xgboost-iris"])


def test_model_from_s3_uri(s3_mesh: MeshProcess, example_models: tuple[Path, dict]) -> None:
    status, body = s3_mesh.call("PUT", "/mesh/v1/models/onnx-s3",
                                {"modelInfo": {"type": "onnx", "path": f"s3://{BUCKET}/onnx-iris.onnx",
                                               "key": json.dumps({"storage_key": "localS3"})}})
    assert status == 200, body
    _infer_matches(s3_mesh, "onnx-s3", example_models[1]["onnx-iris"])


def test_s3_errors_are_clear(s3_mesh: MeshProcess) -> None:
    status, body = s3_mesh.call("PUT", "/mesh/v1/models/s3-missing",
                                {"modelInfo": {"type": "xgboost", "path": f"s3://{BUCKET}/nothing/here",
                                               "key": json.dumps({"storage_key": "localS3"})},
                                 "loadNow": True, "sync": True})
    assert status == 200 and body["status"] == "LOADING_FAILED", body
    assert "nothing/here" in body["errors"][0]
    status, body = s3_mesh.call("PUT", "/mesh/v1/models/s3-badcreds",
                                {"modelInfo": {"type": "xgboost", "path": f"s3://{BUCKET}/xgb/iris",
                                               "key": json.dumps({"storage_key": "badCreds"})},
                                 "loadNow": True, "sync": True})
    assert status == 200 and body["status"] == "LOADING_FAILED", body
    assert "denied" in body["errors"][0].lower() or "credential" in body["errors"][0].lower(), body
    status, body = s3_mesh.call("PUT", "/mesh/v1/models/s3-nokey",
                                {"modelInfo": {"type": "xgboost", "path": f"s3://{BUCKET}/xgb/iris",
                                               "key": json.dumps({"storage_key": "noSuchKey"})},
                                 "loadNow": True, "sync": True})
    assert status == 200 and body["status"] == "LOADING_FAILED" and "noSuchKey" in body["errors"][0], body


def test_model_over_http(mesh: MeshProcess, example_models: tuple[Path, dict]) -> None:
    models_dir, inputs = example_models
    with serve_dir(models_dir) as base:
        status, body = mesh.call("PUT", "/mesh/v1/models/lgb-http",
                                 {"modelInfo": {"type": "lightgbm", "path": f"{base}/lightgbm-iris/model.txt"}})
        assert status == 200, body
        _infer_matches(mesh, "lgb-http", inputs["lightgbm-iris"])
        status, body = mesh.call("PUT", "/mesh/v1/models/http-404",
                                 {"modelInfo": {"type": "lightgbm", "path": f"{base}/missing/model.txt"},
                                  "loadNow": True, "sync": True})
    assert body["status"] == "LOADING_FAILED" and "missing/model.txt" in body["errors"][0], body
    for model_id in ("lgb-http", "http-404"):
        assert mesh.call("DELETE", f"/mesh/v1/models/{model_id}")[0] == 200
