"""Fixtures of the pipeline end-to-end tests: a real S3-protocol server (nanio) and a real mesh
whose storage-config knows it; and ``kserve_mesh_pipelines`` importable from a plain checkout.

The mesh is started with the KServe routes (``POST /mesh/v1/apply``, ``GET
/mesh/v1/inferenceservices/...``) that every ``kserve-mesh up`` serves.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mesh_process import MeshProcess
from storage_servers import S3Server, nanio  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[3]
PIPELINES_DIR = REPO / "pipelines"
BUCKET = "models"
STORAGE_KEY = "pipelineS3"


def _ensure_importable() -> None:
    """The package is ``pipelines/`` installed as ``kserve_mesh_pipelines``; load it from the folder
    when the checkout is not installed."""
    if importlib.util.find_spec("kserve_mesh_pipelines") is not None:
        return
    spec = importlib.util.spec_from_file_location(
        "kserve_mesh_pipelines", PIPELINES_DIR / "__init__.py", submodule_search_locations=[str(PIPELINES_DIR)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kserve_mesh_pipelines"] = module
    spec.loader.exec_module(module)


_ensure_importable()


@pytest.fixture(scope="module")
def s3_mesh(nanio: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshProcess]:  # noqa: F811
    """A mesh with no models of its own whose storage-config entry ``STORAGE_KEY`` is the S3 server."""
    nanio.client().create_bucket(Bucket=BUCKET)
    base = tmp_path_factory.mktemp("pipelines-mesh")
    (base / "models").mkdir()
    entry = {"type": "s3", "access_key_id": nanio.access_key, "secret_access_key": nanio.secret_key,
             "endpoint_url": nanio.endpoint, "region": "us-east-1", "default_bucket": BUCKET}
    config = base / "storage-config.json"
    config.write_text(json.dumps({STORAGE_KEY: json.dumps(entry)}))
    args = ("--models", str(base / "models"), "--storage-config", str(config))
    proc = MeshProcess.start(*args)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def s3_model(s3_mesh: MeshProcess, nanio: S3Server, tmp_path_factory: pytest.TempPathFactory) -> str:  # noqa: F811
    """A small sklearn iris classifier uploaded to the S3 server; returns its object key."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    iris = load_iris()
    path = tmp_path_factory.mktemp("model") / "model.joblib"
    joblib.dump(LogisticRegression(max_iter=1000).fit(iris.data, iris.target), path)
    key = "smoke/model.joblib"
    nanio.client().upload_file(str(path), BUCKET, key)
    return key
