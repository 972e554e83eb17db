"""Translation of InferenceServices and Predictors to what the mesh registers: vmodel, owner,
concrete model id, and the modelInfo the built-in runtime and the storage layer accept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kube_docs_examples import PREDICTOR, QUICKSTART_STORAGE_SPEC, QUICKSTART_STORAGE_URI, TENSORFLOW_FULL

from kserve_mesh.kube.core.errors import RuntimeNotRecognized
from kserve_mesh.kube.core.manifest import load_documents
from kserve_mesh.kube.core.parse import parse
from kserve_mesh.kube.core.resources import InferenceService, ModelFormat, ModelSource, ObjectMeta, Predictor
from kserve_mesh.kube.core.runtimes import BUILTIN_RUNTIME, BUILTIN_RUNTIMES
from kserve_mesh.kube.core.translate import concrete_model_id, model_info, spec_hash, storage_location, translate
from kserve_mesh.runtime.builtin.models import resolve_model_spec
from kserve_mesh.storage import ModelFetcher, StorageConfig, StoragePolicy, parse_model_key


def res(text: str) -> InferenceService | Predictor:
    (doc,) = load_documents(text)
    out = parse(doc)
    assert isinstance(out, InferenceService | Predictor)
    return out


def source(uri: str | None = None, **kw: Any) -> ModelSource:
    return ModelSource(ModelFormat(kw.pop("fmt", "sklearn")), storage_uri=uri, **kw)


def test_quickstart_isvc_translates_like_modelmesh_serving() -> None:
    spec = translate(res(QUICKSTART_STORAGE_SPEC), BUILTIN_RUNTIMES)
    assert spec.vmodel_id == "example-sklearn-isvc" and spec.owner == "isvc"
    assert spec.model_id.startswith("example-sklearn-isvc__isvc-") and len(spec.model_id.rsplit("-", 1)[1]) == 10
    assert spec.runtime == BUILTIN_RUNTIME
    assert spec.info.type == "sklearn" and spec.info.path == "sklearn/mnist-svm.joblib"
    assert json.loads(spec.info.key) == {"model_type": {"name": "sklearn"}, "storage_key": "localMinIO"}


def test_storage_uri_becomes_path_and_parameters() -> None:
    spec = translate(res(QUICKSTART_STORAGE_URI), BUILTIN_RUNTIMES)
    assert spec.info.path == "sklearn/mnist-svm.joblib"
    assert json.loads(spec.info.key) == {
        "model_type": {"name": "sklearn"}, "storage_key": "localMinIO",
        "storage_params": {"type": "s3", "bucket": "modelmesh-example-models"}}


def test_predictor_owner_is_ksp() -> None:
    pred = res(PREDICTOR)
    spec = translate(pred, BUILTIN_RUNTIMES)
    assert spec.owner == "ksp" and spec.model_id.startswith("example-mnist-predictor__ksp-")
    assert json.loads(spec.info.key)["storage_key"] == "localMinIO"


def test_explicit_runtime_gives_an_rt_type_with_the_format_in_the_key() -> None:
    isvc = res(TENSORFLOW_FULL)
    info = model_info(isvc.model)
    assert info.type == "rt:triton-2.x"
    assert json.loads(info.key) == {
        "model_type": {"name": "tensorflow", "version": "1.15"}, "storage_key": "my_storage",
        "storage_params": {"bucket": "my_bucket"}, "schema_path": "my_schemas/mnist-schema.json"}
    with pytest.raises(RuntimeNotRecognized, match="runtime .triton-2.x. not found"):  # no triton here
        translate(isvc, BUILTIN_RUNTIMES)


@pytest.mark.parametrize(
    ("uri", "path", "params"),
    [
        ("s3://bucket/a/b.joblib", "a/b.joblib", {"type": "s3", "bucket": "bucket"}),
        ("gs://bucket/a", "a", {"type": "gcs", "bucket": "bucket"}),
        ("pvc://claim/dir/model", "dir/model", {"type": "pvc", "name": "claim"}),
        ("https://host/x/model.joblib", "", {"type": "http", "url": "https://host/x/model.joblib"}),
        ("https://acct.blob.core.windows.net/cont/dir/m", "dir/m",
         {"type": "azure", "account_name": "acct", "container": "cont"}),
        ("file:///models/m", "file:///models/m", {}),
        ("/models/m", "file:///models/m", {}),
        ("examples/models/m", "file://examples/models/m", {}),
    ],
)
def test_storage_location(uri: str, path: str, params: dict[str, str]) -> None:
    assert storage_location(source(uri)) == (path, params)


def test_uri_parameters_override_storage_parameters() -> None:
    src = source("s3://from-uri/m", parameters={"bucket": "from-params", "region": "eu"})
    assert storage_location(src) == ("m", {"bucket": "from-uri", "region": "eu", "type": "s3"})


def test_the_hash_follows_the_spec() -> None:
    a = source("s3://b/v1")
    assert spec_hash(a) == spec_hash(source("s3://b/v1"))
    assert spec_hash(a) != spec_hash(source("s3://b/v2"))
    assert spec_hash(source("s3://b/v1", parameters={"x": "1", "y": "2"})) == spec_hash(
        source("s3://b/v1", parameters={"y": "2", "x": "1"}))
    isvc = InferenceService(ObjectMeta("m", "ns"), a)
    assert concrete_model_id(isvc) == f"m__isvc-{spec_hash(a)}"
    assert concrete_model_id(Predictor(ObjectMeta("m", "ns"), a)) == f"m__ksp-{spec_hash(a)}"


@pytest.mark.parametrize("fmt", ["sklearn", "xgboost", "lightgbm", "onnx", "string"])
def test_the_builtin_runtime_accepts_the_model_info(fmt: str) -> None:
    auto = model_info(source("s3://b/m", fmt=fmt))
    named = model_info(source("s3://b/m", fmt=fmt, runtime=BUILTIN_RUNTIME))
    for info in (auto, named):
        spec = resolve_model_spec(info.type, info.key)
        assert spec.model_type == fmt


def test_the_storage_layer_resolves_the_model_info(tmp_path: Path) -> None:
    policy = StoragePolicy.of(allow_local_paths=[tmp_path, Path.cwd() / "examples" / "models"], allow_any_pvc=True)
    fetcher = ModelFetcher(StorageConfig.from_mapping({
        "localMinIO": {"type": "s3", "endpoint_url": "http://minio:9000", "bucket": "default-bucket"},
    }), tmp_path, policy=policy)
    uri = model_info(res(QUICKSTART_STORAGE_URI).model)
    src = fetcher.resolve(uri.path, uri.key)
    assert (src.kind, src.bucket, src.location) == ("s3", "modelmesh-example-models", "sklearn/mnist-svm.joblib")
    spec = model_info(res(QUICKSTART_STORAGE_SPEC).model)
    src = fetcher.resolve(spec.path, spec.key)
    assert (src.kind, src.bucket, src.location) == ("s3", "default-bucket", "sklearn/mnist-svm.joblib")
    pvc = model_info(source("pvc://claim/dir/m"))
    assert fetcher.resolve(pvc.path, pvc.key).location.endswith("claim/dir/m")
    http = model_info(source("http://host:1/m.joblib"))
    assert fetcher.resolve(http.path, http.key).location == "http://host:1/m.joblib"
    local = tmp_path / "model.joblib"
    local.write_bytes(b"x")
    info = model_info(source(str(local)))
    assert fetcher.resolve(info.path, info.key).location == str(local)
    assert parse_model_key(info.key).model_type_name == "sklearn"
    relative = model_info(source("examples/models/m"))
    assert fetcher.resolve(relative.path, relative.key).location == str(Path.cwd() / "examples/models/m")


def test_every_example_in_examples_isvc_parses_and_translates() -> None:
    folder = Path(__file__).resolve().parents[3] / "examples" / "isvc"
    files = sorted(folder.glob("*.yaml"))
    assert files, f"no examples in {folder}"
    for f in files:
        for doc in load_documents(f.read_text()):
            resource = parse(doc)
            assert isinstance(resource, InferenceService | Predictor), f.name
            spec = translate(resource, BUILTIN_RUNTIMES)
            assert spec.model_id.startswith(f"{resource.meta.name}__"), f.name
            assert resolve_model_spec(spec.info.type, spec.info.key).model_type, f.name
