"""Parsing and validation of KServe resources: the docs' examples parse; every refusal names the
field path."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kube_docs_examples import (
    EXAMPLE_MNIST_ISVC,
    LEGACY_FRAMEWORK,
    MLSERVER_RUNTIME,
    PREDICTOR,
    QUICKSTART_STORAGE_SPEC,
    QUICKSTART_STORAGE_URI,
    SKLEARN_PVC,
    TENSORFLOW_FULL,
)

from kserve_mesh.kube.core.errors import InvalidSpec
from kserve_mesh.kube.core.manifest import load_documents
from kserve_mesh.kube.core.parse import parse
from kserve_mesh.kube.core.resources import (
    InferenceService,
    ModelFormat,
    Predictor,
    ServingRuntime,
    is_modelmesh,
    kind_of_plural,
)


def one(text: str) -> dict[str, Any]:
    (doc,) = load_documents(text)
    return doc


def isvc_doc(**model: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "m", "annotations": {"serving.kserve.io/deploymentMode": "ModelMesh"}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, **model}}},
    }


def refused(doc: Any) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as info:
        parse(doc)
    return info.value


# -- the documentation's examples ----------------------------------------------------------------
def test_quickstart_storage_spec() -> None:
    res = parse(one(QUICKSTART_STORAGE_SPEC))
    assert isinstance(res, InferenceService)
    assert res.meta.name == "example-sklearn-isvc" and res.meta.namespace == "default"
    assert res.model.format == ModelFormat("sklearn")
    assert (res.model.storage_key, res.model.path, res.model.storage_uri) == (
        "localMinIO", "sklearn/mnist-svm.joblib", None)


def test_quickstart_storage_uri_takes_the_secret_key_annotation() -> None:
    res = parse(one(QUICKSTART_STORAGE_URI))
    assert isinstance(res, InferenceService)
    assert res.model.storage_uri == "s3://modelmesh-example-models/sklearn/mnist-svm.joblib"
    assert res.model.storage_key == "localMinIO"


def test_every_field_of_the_inferenceservice_cr_page() -> None:
    res = parse(one(TENSORFLOW_FULL))
    m = res.model  # type: ignore[union-attr]
    assert m.format == ModelFormat("tensorflow", "1.15")
    assert m.runtime == "triton-2.x"
    assert (m.storage_key, m.path, m.schema_path, dict(m.parameters)) == (
        "my_storage", "my_models/mnist-tf", "my_schemas/mnist-schema.json", {"bucket": "my_bucket"})


def test_pvc_and_mnist_examples_parse() -> None:
    assert parse(one(SKLEARN_PVC)).model.storage_uri == "pvc://my-models-pvc/sklearn/mnist-svm.joblib"  # type: ignore[union-attr]
    assert parse(one(EXAMPLE_MNIST_ISVC)).meta.name == "example-mnist-isvc"


def test_legacy_framework_spec_gives_the_format_and_runtime_version() -> None:
    res = parse(one(LEGACY_FRAMEWORK))
    assert res.model.format == ModelFormat("sklearn")  # type: ignore[union-attr]
    assert res.model.framework == "sklearn" and res.model.runtime_version == "1.0"  # type: ignore[union-attr]


def test_legacy_framework_takes_the_runtime_annotation() -> None:
    doc = one(LEGACY_FRAMEWORK)
    doc["metadata"]["annotations"]["serving.kserve.io/servingRuntime"] = "mlserver-1.x"
    assert parse(doc).model.runtime == "mlserver-1.x"  # type: ignore[union-attr]


def test_modelmesh_predictor() -> None:
    res = parse(one(PREDICTOR))
    assert isinstance(res, Predictor)
    assert (res.model.format, res.model.path, res.model.storage_key) == (
        ModelFormat("sklearn"), "sklearn/mnist-svm.joblib", "localMinIO")


def test_predictor_newer_storage_fields_and_runtime() -> None:
    doc = one(PREDICTOR)
    del doc["spec"]["path"]
    doc["spec"]["storage"] = {"key": "k", "path": "a/b", "parameters": {"bucket": "bb"}, "schemaPath": "s.json"}
    doc["spec"]["runtime"] = {"name": "rt"}
    doc["spec"]["modelType"]["version"] = 1
    m = parse(doc).model  # type: ignore[union-attr]
    assert (m.path, m.storage_key, dict(m.parameters), m.schema_path, m.runtime, m.format.version) == (
        "a/b", "k", {"bucket": "bb"}, "s.json", "rt", "1")


def test_predictor_pvc_becomes_pvc_parameters() -> None:
    doc = one(PREDICTOR)
    doc["spec"]["storage"] = {"persistentVolumeClaim": {"claimName": "models"}}
    assert dict(parse(doc).model.parameters) == {"type": "pvc", "name": "models"}  # type: ignore[union-attr]


def test_serving_runtime_from_modelmesh_serving() -> None:
    rt = parse(one(MLSERVER_RUNTIME))
    assert isinstance(rt, ServingRuntime) and not rt.cluster and rt.multi_model
    assert [(f.name, f.version, f.auto_select) for f in rt.formats] == [
        ("sklearn", "0", True), ("xgboost", "1", True), ("lightgbm", "3", True)]
    assert rt.protocol_versions == ("grpc-v2",)
    assert rt.grpc_data_endpoint == "port:8001"
    assert rt.built_in_adapter is not None and rt.built_in_adapter["serverType"] == "mlserver"
    assert rt.annotation("maxLoadingConcurrency") == "2"
    assert rt.containers[0]["name"] == "mlserver"


def test_cluster_serving_runtime_has_no_namespace() -> None:
    doc = one(MLSERVER_RUNTIME)
    doc["kind"] = "ClusterServingRuntime"
    rt = parse(doc)
    assert isinstance(rt, ServingRuntime) and rt.cluster and rt.meta.namespace == ""
    doc["metadata"]["namespace"] = "x"
    assert refused(doc).path == "metadata.namespace"


def test_status_of_a_round_tripped_object_is_ignored() -> None:
    doc = isvc_doc(storageUri="s3://b/m")
    doc["status"] = {"url": "grpc://x"}
    doc["metadata"].update(creationTimestamp="2024-01-01T00:00:00Z", uid="u", resourceVersion="3", generation=2)
    assert parse(doc).meta.generation == 2


def test_modelmesh_annotation() -> None:
    assert is_modelmesh(isvc_doc())
    doc = isvc_doc()
    doc["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "Serverless"}
    assert not is_modelmesh(doc)
    assert not is_modelmesh({"kind": "InferenceService", "metadata": {"name": "x"}})
    assert is_modelmesh({"kind": "Predictor"})


def test_plurals_and_aliases() -> None:
    assert kind_of_plural("isvc") == "InferenceService"
    assert kind_of_plural("InferenceServices") == "InferenceService"
    assert kind_of_plural("clusterservingruntimes") == "ClusterServingRuntime"
    assert kind_of_plural("pods") is None


# -- refusals name the field ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mutate", "path", "words"),
    [
        (lambda d: d["spec"]["predictor"]["model"].update(foo=1), "spec.predictor.model.foo", "unknown field"),
        (lambda d: d["spec"]["predictor"].update(bogus={}), "spec.predictor.bogus", "unknown field"),
        (lambda d: d["spec"].update(extra=1), "spec.extra", "unknown field"),
        (lambda d: d["metadata"].update(nam="x"), "metadata.nam", "unknown field"),
        (lambda d: d.update(extra=1), "extra", "unknown field"),
        (lambda d: d["spec"]["predictor"]["model"].pop("storageUri"), "spec.predictor.model.storageUri",
         "exactly one of storageUri or storage.path is required"),
        (lambda d: d["spec"]["predictor"]["model"].update(storage={"path": "p"}),
         "spec.predictor.model.storage.path", "exactly one of storageUri or storage.path"),
        (lambda d: d["spec"]["predictor"]["model"].pop("modelFormat"), "spec.predictor.model.modelFormat",
         "is required"),
        (lambda d: d["spec"]["predictor"]["model"]["modelFormat"].update(name=""),
         "spec.predictor.model.modelFormat.name", "is required"),
        (lambda d: d["spec"]["predictor"]["model"]["modelFormat"].update(name=3),
         "spec.predictor.model.modelFormat.name", "must be a string"),
        (lambda d: d["spec"]["predictor"]["model"].update(storageUri="ftp://h/x"),
         "spec.predictor.model.storageUri", "unsupported storage scheme 'ftp://'"),
        (lambda d: d["spec"]["predictor"]["model"].update(storageUri="s3:///x"),
         "spec.predictor.model.storageUri", "no bucket"),
        (lambda d: d["spec"]["predictor"]["model"].update(storageUri="s3:/bucket/x"),
         "spec.predictor.model.storageUri", "looks like a URI without '//'"),
        (lambda d: d["spec"]["predictor"]["model"].update(protocolVersion="v3"),
         "spec.predictor.model.protocolVersion", "not a protocol version"),
        (lambda d: d["spec"]["predictor"]["model"].update(storage={"key": 1}),
         "spec.predictor.model.storage.key", "must be a string"),
        (lambda d: d["spec"]["predictor"]["model"].update(storage={"parameters": {"bucket": 5}}),
         "spec.predictor.model.storage.parameters.bucket", "must be a string"),
        (lambda d: d["spec"]["predictor"].update(sklearn={"storageUri": "s3://b/x"}),
         "spec.predictor.sklearn", "cannot be combined with predictor.model"),
        (lambda d: d["spec"]["predictor"].update(containers=[{"name": "c"}]), "spec.predictor.containers",
         "not supported in ModelMesh mode"),
        (lambda d: d["spec"].pop("predictor"), "spec.predictor", "is required"),
        (lambda d: d["metadata"].update(name="Bad_Name"), "metadata.name", "DNS-1123"),
        (lambda d: d["metadata"].update(namespace="NS!"), "metadata.namespace", "DNS-1123"),
        (lambda d: d["metadata"]["annotations"].clear(),
         "metadata.annotations.serving.kserve.io/deploymentMode", "must be 'ModelMesh'"),
        (lambda d: d["metadata"]["annotations"].update({"serving.kserve.io/servingRuntime": "x"}),
         "metadata.annotations.serving.kserve.io/servingRuntime", "cannot be combined with predictor.model"),
        (lambda d: d.update(apiVersion="serving.kserve.io/v1alpha1"), "apiVersion",
         "must be serving.kserve.io/v1beta1"),
        (lambda d: d.update(kind="Pod"), "kind", "unsupported kind 'Pod'"),
        (lambda d: d.pop("metadata"), "metadata", "is required"),
    ],
)
def test_invalid_isvc_names_the_field(mutate, path: str, words: str) -> None:  # type: ignore[no-untyped-def]
    doc = copy.deepcopy(isvc_doc(storageUri="s3://bucket/model"))
    mutate(doc)
    err = refused(doc)
    assert err.path == path
    assert words in str(err)
    assert str(err).startswith(f"{path}: ")


def test_two_legacy_frameworks_are_refused() -> None:
    doc = one(LEGACY_FRAMEWORK)
    doc["spec"]["predictor"]["xgboost"] = {"storageUri": "s3://b/x"}
    err = refused(doc)
    assert err.path == "spec.predictor.xgboost" and "only one framework spec" in str(err)


def test_no_model_at_all_is_refused() -> None:
    doc = isvc_doc()
    doc["spec"]["predictor"] = {"minReplicas": 1}
    assert refused(doc).path == "spec.predictor.model"


def test_pod_and_container_fields_modelmesh_ignores_are_accepted() -> None:
    doc = isvc_doc(storageUri="s3://b/m", resources={"limits": {"memory": "1Gi"}}, name="kserve-container")
    doc["spec"]["predictor"].update(minReplicas=1, serviceAccountName="sa", tolerations=[])
    assert parse(doc).model.storage_uri == "s3://b/m"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda s: s.update(multiModel="yes"), "spec.multiModel"),
        (lambda s: s["supportedModelFormats"][0].update(priority=0), "spec.supportedModelFormats[0].priority"),
        (lambda s: s["supportedModelFormats"][0].update(autoselect=True), "spec.supportedModelFormats[0].autoselect"),
        (lambda s: s["supportedModelFormats"][0].pop("name"), "spec.supportedModelFormats[0].name"),
        (lambda s: s.update(protocolVersions=["v9"]), "spec.protocolVersions[0]"),
        (lambda s: s["containers"][0].pop("name"), "spec.containers[0].name"),
        (lambda s: s["containers"][0].update(imagee="x"), "spec.containers[0].imagee"),
        (lambda s: s["builtInAdapter"].update(memBufferBytes="big"), "spec.builtInAdapter.memBufferBytes"),
        (lambda s: s.update(replicas=-1), "spec.replicas"),
        (lambda s: s.update(supportedModelFormats={}), "spec.supportedModelFormats"),
    ],
)
def test_invalid_runtime_names_the_field(mutate, path: str) -> None:  # type: ignore[no-untyped-def]
    doc = one(MLSERVER_RUNTIME)
    mutate(doc["spec"])
    assert refused(doc).path == path


def test_duplicate_priorities_for_one_format_are_refused() -> None:
    doc = one(MLSERVER_RUNTIME)
    doc["spec"]["supportedModelFormats"] = [
        {"name": "sklearn", "autoSelect": True, "priority": 1},
        {"name": "sklearn", "autoSelect": True, "priority": 2},
    ]
    err = refused(doc)
    assert err.path == "spec.supportedModelFormats[1]" and "already listed" in str(err)


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda s: s.pop("modelType"), "spec.modelType"),
        (lambda s: s.pop("path"), "spec.path"),
        (lambda s: s.update(gpu="maybe"), "spec.gpu"),
        (lambda s: s["storage"]["s3"].pop("secretKey"), "spec.storage.s3.secretKey"),
        (lambda s: s["storage"].update(key="k"), "spec.storage.s3"),
        (lambda s: s.update(runtime={"name": ""}), "spec.runtime.name"),
        (lambda s: s.update(modelFormat={}), "spec.modelFormat"),
    ],
)
def test_invalid_predictor_names_the_field(mutate, path: str) -> None:  # type: ignore[no-untyped-def]
    doc = one(PREDICTOR)
    mutate(doc["spec"])
    assert refused(doc).path == path


def test_not_an_object() -> None:
    assert "must be an object" in str(refused(["a"]))
    doc = isvc_doc(storageUri="s3://b/m")
    doc["spec"]["predictor"]["model"] = "sklearn"
    err = refused(doc)
    assert err.path == "spec.predictor.model" and "got a string" in str(err)
