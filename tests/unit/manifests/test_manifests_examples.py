"""The example resources in examples/isvc: InferenceServices validate against a schema derived
from the kserve wheel's model classes (KServe's CRD YAML is not installable here) plus the
ModelMesh rules that schema cannot express; the Predictor validates against our CRD; together
they cover every model format and storage kind; the local example loads without a cluster."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from example_models import make_models_module
from manifests_checks import (
    EXAMPLES,
    by_kind,
    inference_service_errors,
    inference_service_schema,
    load_yaml_docs,
    one,
    render,
    validation_errors,
)

MODES_ANNOTATION = "serving.kserve.io/deploymentMode"
FRAMEWORKS = ("sklearn", "xgboost", "lightgbm", "onnx", "tensorflow", "pytorch", "triton", "pmml",
              "paddle", "huggingface")
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


def examples_of(kind: str) -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in EXAMPLE_FILES for doc in load_yaml_docs(path)
            if doc["kind"] == kind]


def storage_secret_keys() -> set[str]:
    return set(one(render("overlays/cluster-scope"), "Secret", "storage-config")["stringData"])


def builtin_runtimes() -> list[dict]:
    objects = render("overlays/cluster-scope")
    return by_kind(objects, "ClusterServingRuntime")


def model_of(isvc: dict) -> tuple[str, dict]:
    """(format name, model-like spec) of the predictor: the model form or a framework form."""
    predictor = isvc["spec"]["predictor"]
    forms = [name for name in ("model", *FRAMEWORKS) if name in predictor]
    assert len(forms) == 1, f"predictor must hold exactly one of model / a framework: {forms}"
    if forms[0] == "model":
        return predictor["model"]["modelFormat"]["name"], predictor["model"]
    return forms[0], predictor[forms[0]]


def modelmesh_errors(isvc: dict) -> list[str]:
    """The ModelMesh rules of REFERENCE §7 that the kserve classes do not check."""
    errors = []
    if isvc.get("apiVersion") != "serving.kserve.io/v1beta1":
        errors.append("apiVersion must be serving.kserve.io/v1beta1")
    if not isvc.get("metadata", {}).get("name"):
        errors.append("metadata.name is required")
    if isvc.get("metadata", {}).get("annotations", {}).get(MODES_ANNOTATION) != "ModelMesh":
        errors.append(f"metadata.annotations[{MODES_ANNOTATION}] must be ModelMesh")
    try:
        fmt, model = model_of(isvc)
    except (AssertionError, KeyError, TypeError) as exc:
        return [*errors, f"spec.predictor: {exc}"]
    if not fmt:
        errors.append("spec.predictor.model.modelFormat.name is required")
    has_uri = bool(model.get("storageUri"))
    has_path = bool(model.get("storage", {}).get("path"))
    if has_uri == has_path:
        errors.append("exactly one of storageUri and storage.path is required")
    key = model.get("storage", {}).get("key")
    if key is not None and key not in storage_secret_keys():
        errors.append(f"storage.key {key!r} is not in the storage-config example")
    return errors


def runtime_for(fmt: str, version: str | None, explicit: str | None) -> str | None:
    """Which built-in runtime takes the model: the explicit one if it supports the format, else
    the highest-priority autoSelect runtime whose version matches."""
    candidates = []
    for runtime in builtin_runtimes():
        for supported in runtime["spec"]["supportedModelFormats"]:
            if supported["name"] != fmt or (version and supported.get("version") != version):
                continue
            if explicit == runtime["metadata"]["name"] or (not explicit and supported.get("autoSelect")):
                candidates.append((supported.get("priority", 0), runtime["metadata"]["name"]))
    return max(candidates)[1] if candidates else None


def test_every_example_file_is_a_kserve_resource():
    assert len(EXAMPLE_FILES) >= 12
    for path in EXAMPLE_FILES:
        docs = load_yaml_docs(path)
        assert docs, path.name
        for doc in docs:
            assert doc["apiVersion"].startswith("serving.kserve.io/"), path.name
            assert doc["kind"] in ("InferenceService", "Predictor"), path.name


def test_the_derived_schema_covers_the_fields_the_examples_use():
    schema = inference_service_schema()
    needed = {"V1beta1InferenceService", "V1beta1InferenceServiceSpec", "V1beta1PredictorSpec",
              "V1beta1ModelSpec", "V1beta1ModelFormat", "V1beta1ModelStorageSpec",
              "V1beta1SKLearnSpec", "V1ObjectMeta"}
    assert needed <= set(schema["$defs"])
    assert not needed & set(schema["x-unresolved"])
    model = schema["$defs"]["V1beta1ModelSpec"]["properties"]
    assert {"modelFormat", "runtime", "storageUri", "storage", "protocolVersion"} <= set(model)
    assert set(schema["$defs"]["V1beta1ModelStorageSpec"]["properties"]) == {
        "key", "path", "parameters", "schemaPath"}


@pytest.mark.parametrize("name,isvc", examples_of("InferenceService"), ids=lambda v: v if isinstance(v, str) else "")
def test_inference_service_example_is_valid(name, isvc):
    assert inference_service_errors(isvc) == [], name
    assert modelmesh_errors(isvc) == [], name
    fmt, model = model_of(isvc)
    version = model.get("modelFormat", {}).get("version")
    chosen = runtime_for(fmt, version, model.get("runtime"))
    assert chosen is not None, f"{name}: no built-in runtime takes {fmt} {version or ''}"


def test_checks_reject_broken_inference_services():
    (_, good), = [e for e in examples_of("InferenceService") if e[0] == "sklearn-s3-storage-key.yaml"]

    def broken(change) -> dict:
        isvc = copy.deepcopy(good)
        change(isvc)
        return isvc

    typo = broken(lambda i: i["spec"]["predictor"]["model"].update(storageURI="s3://b/m"))
    assert any("'storageURI' was unexpected" in e for e in inference_service_errors(typo))
    wrong_type = broken(lambda i: i["spec"]["predictor"]["model"]["modelFormat"].update(version=2))
    assert any(e.startswith("spec.predictor.model.modelFormat.version") for e in
               inference_service_errors(wrong_type))
    no_predictor = broken(lambda i: i["spec"].pop("predictor"))
    assert any("'predictor' is a required property" in e for e in inference_service_errors(no_predictor))
    both = broken(lambda i: i["spec"]["predictor"]["model"].update(storageUri="s3://b/m"))
    assert "exactly one of storageUri and storage.path is required" in modelmesh_errors(both)
    serverless = broken(lambda i: i["metadata"]["annotations"].update({MODES_ANNOTATION: "Serverless"}))
    assert any(MODES_ANNOTATION in e for e in modelmesh_errors(serverless))
    unknown_key = broken(lambda i: i["spec"]["predictor"]["model"]["storage"].update(key="nope"))
    assert any("'nope'" in e for e in modelmesh_errors(unknown_key))
    assert runtime_for("sklearn", "0", None) is None  # no runtime serves that version
    assert runtime_for("sklearn", None, None) == "kserve-mesh-python"  # priority 2 over 1
    assert runtime_for("sklearn", None, "mlserver-1.x") == "mlserver-1.x"
    assert runtime_for("onnx", None, "mlserver-1.x") is None


def test_examples_cover_every_format_and_storage_in_both_forms():
    formats = set()
    storages = set()
    for _, isvc in examples_of("InferenceService"):
        fmt, model = model_of(isvc)
        formats.add(fmt)
        uri = model.get("storageUri", "")
        key = model.get("storage", {}).get("key")
        if uri:
            kind = uri.split("://")[0] if "://" in uri else "local"
            storages.add((kind.replace("https", "http"), "storageUri"))
        if model.get("storage", {}).get("path"):
            secret_type = {"localMinIO": "s3", "httpModels": "http", "modelsPvc": "pvc"}[key]
            storages.add((secret_type, "storage.key"))
    assert {"sklearn", "xgboost", "lightgbm", "onnx"} <= formats
    for kind in ("s3", "http", "pvc"):
        assert {(kind, "storageUri"), (kind, "storage.key")} <= storages, kind
    assert ("local", "storageUri") in storages


def test_predictor_example_validates_against_the_crd():
    predictors = examples_of("Predictor")
    assert predictors
    crd = one(render("overlays/cluster-scope"), "CustomResourceDefinition",
              "predictors.serving.kserve.io")
    for name, predictor in predictors:
        assert validation_errors(crd, predictor) == [], name
        assert predictor["spec"]["storage"]["key"] in storage_secret_keys()
        assert runtime_for(predictor["spec"]["modelType"]["name"], None, None) is not None


def test_readme_lists_every_example():
    readme = (EXAMPLES / "README.md").read_text()
    for path in EXAMPLE_FILES:
        assert f"`{path.name}`" in readme, path.name


def test_local_example_loads_and_predicts_without_a_cluster(tmp_path, monkeypatch):
    """local-sklearn.yaml's storageUri, resolved as the mesh resolves it (relative to the folder
    the mesh runs in), is the sklearn model that `kserve-mesh up` trains; the built-in runtime's
    loader serves it."""
    from kserve_mesh.runtime.builtin.loaders import load_model_file
    from kserve_mesh.runtime.builtin.models import find_model_file
    from kserve_mesh.storage.config import StorageConfig
    from kserve_mesh.storage.fetcher import ModelFetcher
    from kserve_mesh.storage.policy import StoragePolicy

    (_, isvc), = [e for e in examples_of("InferenceService") if e[0] == "local-sklearn.yaml"]
    fmt, model = model_of(isvc)
    uri = model["storageUri"]
    assert not Path(uri).is_absolute() and "://" not in uri
    models_dir = tmp_path / "examples" / "models"
    entry = make_models_module().make_sklearn(models_dir)
    assert (tmp_path / uri).is_dir()
    monkeypatch.chdir(tmp_path)
    policy = StoragePolicy.of(models_dir=models_dir)  # as `kserve-mesh up --models examples/models` allows
    fetcher = ModelFetcher(StorageConfig.empty(), tmp_path / "cache", policy=policy)
    local = fetcher.fetch(isvc["metadata"]["name"], uri)
    loaded = load_model_file(fmt, find_model_file(local, fmt))
    request = entry["request"]["inputs"][0]
    features = np.asarray(request["data"], dtype=np.float64).reshape(request["shape"])
    outputs = loaded.predict({loaded.inputs[0].name: features})
    expected = entry["expected"]["outputs"][0]["data"]
    assert np.asarray(next(iter(outputs.values()))).ravel().tolist() == expected
    loaded.close()
