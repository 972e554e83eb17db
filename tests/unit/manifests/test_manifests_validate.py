"""Every rendered object validates: built-in kinds (CRDs included, as apiextensions.k8s.io/v1
objects) with kubernetes-validate --strict against pinned Kubernetes versions, CRD schemas are
structural, and the custom resources validate against their CRD's openAPIV3Schema."""

from __future__ import annotations

import copy
import subprocess
import sys

import kubernetes_validate
import pytest
from manifests_checks import (
    K8S_VERSIONS,
    KUSTOMIZATIONS,
    MANIFESTS,
    OVERLAYS,
    by_kind,
    crd_schema,
    one,
    render,
    schema_at,
    structural_errors,
    validation_errors,
)

CUSTOM_KINDS = {"ServingRuntime", "ClusterServingRuntime", "Predictor", "InferenceService",
                "ServiceMonitor", "PrometheusRule"}  # the last two: test_manifests_monitoring.py


def crd_for(objects, kind: str) -> dict:
    for crd in by_kind(objects, "CustomResourceDefinition"):
        if crd["spec"]["names"]["kind"] == kind:
            return crd
    raise AssertionError(f"no CRD for {kind}")


def strict_errors(obj: dict, version: str) -> str | None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{'.'.join(str(p) for p in exc.path)}: {exc.message}"
    return None


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_builtin_kinds_validate_strictly(kustomization, version):
    checked = 0
    for obj in render(kustomization):
        if obj["kind"] in CUSTOM_KINDS:
            continue
        error = strict_errors(obj, version)
        assert error is None, f"{obj['kind']}/{obj['metadata']['name']} (k8s {version}): {error}"
        checked += 1
    assert checked >= 15


def test_kubernetes_validate_cli_agrees(tmp_path):
    """The kubernetes-validate command line, as CI or a user would run it, on a rendered overlay
    with the custom resources left out (it only warns on those)."""
    import yaml

    docs = [o for o in render("overlays/cluster-scope") if o["kind"] not in CUSTOM_KINDS]
    rendered = tmp_path / "cluster-scope.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    proc = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--kubernetes-version",
         K8S_VERSIONS[-1], str(rendered)],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("passed for resource") == len(docs), proc.stdout


def test_strict_validation_catches_an_unknown_field_and_a_wrong_type():
    deployment = copy.deepcopy(one(render("overlays/cluster-scope"), "Deployment",
                                   "kserve-mesh-controller"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/x"
    assert "pathh" in strict_errors(deployment, K8S_VERSIONS[-1])
    deployment = copy.deepcopy(one(render("overlays/cluster-scope"), "Deployment",
                                   "kserve-mesh-controller"))
    deployment["spec"]["replicas"] = "two"
    assert strict_errors(deployment, K8S_VERSIONS[-1]) is not None


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_crds_are_structural_with_status_and_printer_columns(kustomization):
    for crd in by_kind(render(kustomization), "CustomResourceDefinition"):
        name = crd["metadata"]["name"]
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        assert name == f"{crd['spec']['names']['plural']}.{crd['spec']['group']}"
        versions = crd["spec"]["versions"]
        assert [v["name"] for v in versions] == ["v1alpha1"]
        version = versions[0]
        assert version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}
        schema = crd_schema(crd)
        assert structural_errors(schema) == [], name
        assert {"spec", "status"} <= set(schema["properties"])
        columns = version["additionalPrinterColumns"]
        assert columns and columns[-1]["name"] == "Age"
        for column in columns:
            node = schema_at(schema, column["jsonPath"])
            if column["jsonPath"] == ".metadata.creationTimestamp":
                continue
            assert node is not None, f"{name}: column {column['name']} points nowhere"
            if column["type"] in ("string", "boolean", "integer"):
                assert node.get("type") == column["type"], f"{name}: column {column['name']}"


def test_structural_check_finds_what_the_api_server_refuses():
    bad = {
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}},
            "spec": {"properties": {"x": {"type": "string"}},  # no type
                     "oneOf": [{"type": "object", "properties": {"y": {}}}]},
            "list": {"type": "array"},
        },
    }
    errors = structural_errors(bad)
    assert any(e.startswith("<root>.spec: no type") for e in errors)
    assert any("'type' inside a combinator" in e for e in errors)
    assert any("y: not declared outside" in e for e in errors)
    assert any("array without items" in e for e in errors)
    assert any(e.startswith("metadata:") for e in errors)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_runtimes_validate_against_their_crd(kustomization):
    objects = render(kustomization)
    runtimes = [o for o in objects if o["kind"] in ("ServingRuntime", "ClusterServingRuntime")]
    assert len(runtimes) == 3
    for runtime in runtimes:
        assert validation_errors(crd_for(objects, runtime["kind"]), runtime) == [], \
            runtime["metadata"]["name"]


def test_crd_schema_rejects_broken_runtimes():
    objects = render("overlays/cluster-scope")
    crd = crd_for(objects, "ClusterServingRuntime")
    good = one(objects, "ClusterServingRuntime", "kserve-mesh-python")

    def errors_after(change) -> list[str]:
        runtime = copy.deepcopy(good)
        change(runtime)
        return validation_errors(crd, runtime)

    assert any("'multimodel' was unexpected" in e
               for e in errors_after(lambda r: r["spec"].update(multimodel=True)))
    assert any(e.startswith("spec: 'containers' is a required property")
               for e in errors_after(lambda r: r["spec"].pop("containers")))
    assert any(e.startswith("spec.grpcEndpoint:")
               for e in errors_after(lambda r: r["spec"].update(grpcEndpoint="8085")))
    assert any(e.startswith("spec.supportedModelFormats.0.priority:")
               for e in errors_after(lambda r: r["spec"]["supportedModelFormats"][0].update(priority=0)))
    assert any(e.startswith("spec.protocolVersions.0:")
               for e in errors_after(lambda r: r["spec"].update(protocolVersions=["v3"])))
    assert any(e.startswith("spec.supportedModelFormats.0: 'name' is a required")
               for e in errors_after(lambda r: r["spec"]["supportedModelFormats"][0].pop("name")))


def test_predictor_crd_wants_exactly_one_model_path():
    crd = crd_for(render("overlays/cluster-scope"), "Predictor")
    base = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "Predictor",
            "metadata": {"name": "p"}, "spec": {"modelType": {"name": "sklearn"}}}

    def errors_with(**spec) -> list[str]:
        predictor = copy.deepcopy(base)
        predictor["spec"].update(spec)
        return validation_errors(crd, predictor)

    assert errors_with(path="m/model.joblib") == []
    assert errors_with(storage={"key": "localMinIO", "path": "m/model.joblib"}) == []
    assert errors_with() != []  # neither
    assert errors_with(path="a", storage={"path": "b"}) != []  # both
    assert errors_with(path="a", modelType={}) != []
    assert errors_with(path="a", gpu="maybe") != []
    status = {"activeModelState": "Loaded", "targetModelState": "", "transitionStatus": "UpToDate",
              "available": True, "failedCopies": 0, "totalCopies": 2,
              "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "boom",
                                  "time": "2026-11-22T07:20:30Z"}}
    assert errors_with(path="a") == []
    predictor = copy.deepcopy(base)
    predictor["spec"]["path"] = "a"
    predictor["status"] = status
    assert validation_errors(crd, predictor) == []
    predictor["status"]["activeModelState"] = "Done"
    assert validation_errors(crd, predictor) != []


def test_generate_check_detects_a_stale_crd(tmp_path):
    script = MANIFESTS / "crd" / "generate.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True, timeout=60)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in (MANIFESTS / "crd" / "bases").iterdir())
    target = tmp_path / "serving.kserve.io_predictors.yaml"
    target.write_text(target.read_text().replace("minLength: 1", "minLength: 2", 1))
    proc = subprocess.run([sys.executable, str(script), "--check", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1 and "serving.kserve.io_predictors.yaml" in proc.stderr
