"""The kustomizations render with the real kubectl, and each overlay holds what its scope needs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from manifests_checks import (
    KUSTOMIZATIONS,
    MANIFESTS,
    NAMESPACE,
    OVERLAYS,
    by_kind,
    containers_of,
    image_of_this_version,
    kubectl,
    one,
    render,
)

CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                  "ClusterServingRuntime"}
CRDS = {"servingruntimes.serving.kserve.io", "clusterservingruntimes.serving.kserve.io",
        "predictors.serving.kserve.io"}


def env_of(container: dict, name: str) -> str | None:
    for var in container.get("env", []):
        if var["name"] == name:
            return var.get("value")
    return None


def controller(objects) -> dict:
    deployment = one(objects, "Deployment", "kserve-mesh-controller")
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_kubectl_is_the_pinned_one():
    out = subprocess.run([kubectl(), "version", "--client"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert "Kustomize Version: v5" in out, out


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_renders_the_common_parts(kustomization):
    objects = render(kustomization)
    assert {o["metadata"]["name"] for o in by_kind(objects, "CustomResourceDefinition")} == CRDS
    one(objects, "Namespace", NAMESPACE)
    one(objects, "ServiceAccount", "kserve-mesh-controller")
    one(objects, "Deployment", "kserve-mesh-controller")
    one(objects, "StatefulSet", "kserve-mesh-etcd")
    assert one(objects, "Service", "kserve-mesh-etcd-headless")["spec"]["clusterIP"] == "None"
    one(objects, "Service", "kserve-mesh-etcd")
    one(objects, "ConfigMap", "model-serving-config")
    one(objects, "Secret", "storage-config")
    one(objects, "Role", "kserve-mesh-leader-election")
    runtime_names = {o["metadata"]["name"] for o in objects
                     if o["kind"] in ("ServingRuntime", "ClusterServingRuntime")}
    assert runtime_names == {"kserve-mesh-python", "mlserver-1.x", "triton-2.x"}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_namespace_and_common_labels(kustomization):
    for obj in render(kustomization):
        meta = obj["metadata"]
        where = f"{obj['kind']}/{meta['name']}"
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta, where
        else:
            assert meta.get("namespace") == NAMESPACE, where
        assert meta["labels"]["app.kubernetes.io/part-of"] == "kserve-mesh", where
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "kustomize", where


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_selectors_match_templates_and_services(kustomization):
    objects = render(kustomization)
    for workload in by_kind(objects, "Deployment") + by_kind(objects, "StatefulSet"):
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), workload["metadata"]["name"]
        # Selectors stay free of the common labels (they are immutable once applied).
        assert "app.kubernetes.io/part-of" not in selector
    etcd_labels = one(objects, "StatefulSet", "kserve-mesh-etcd")["spec"]["template"]["metadata"]["labels"]
    etcd_ports = {p["name"] for c in containers_of(one(objects, "StatefulSet", "kserve-mesh-etcd"))
                  for p in c["ports"]}
    for service in by_kind(objects, "Service"):
        assert service["spec"]["selector"].items() <= etcd_labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in etcd_ports
    statefulset = one(objects, "StatefulSet", "kserve-mesh-etcd")
    assert statefulset["spec"]["serviceName"] == "kserve-mesh-etcd-headless"
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_cluster_scope_overlay():
    objects = render("overlays/cluster-scope")
    role = one(objects, "ClusterRole", "kserve-mesh-controller")
    binding = one(objects, "ClusterRoleBinding", "kserve-mesh-controller")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "kserve-mesh-controller"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kserve-mesh-controller",
                                    "namespace": NAMESPACE}]
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert {"namespaces", "clusterservingruntimes"} <= resources
    assert len(by_kind(objects, "ClusterServingRuntime")) == 3
    assert env_of(controller(objects), "KSERVE_MESH_NAMESPACE_SCOPE") == "false"


def test_namespace_scope_overlay_has_nothing_cluster_wide_but_the_crds():
    objects = render("overlays/namespace-scope")
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
    assert not by_kind(objects, "ClusterServingRuntime")
    assert {o["metadata"]["name"] for o in by_kind(objects, "ServingRuntime")} == {
        "kserve-mesh-python", "mlserver-1.x", "triton-2.x"}
    role = one(objects, "Role", "kserve-mesh-controller")
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert "namespaces" not in resources and "clusterservingruntimes" not in resources
    binding = one(objects, "RoleBinding", "kserve-mesh-controller")
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"][0]["namespace"] == NAMESPACE
    assert env_of(controller(objects), "KSERVE_MESH_NAMESPACE_SCOPE") == "true"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_controller_runs_kserve_mesh_controller_with_one_image_everywhere(overlay):
    objects = render(overlay)
    container = controller(objects)
    assert container["command"] == ["kserve-mesh"] and container["args"][0] == "controller"
    assert container["image"] == image_of_this_version()
    assert env_of(container, "KSERVE_MESH_INSTANCE_IMAGE") == container["image"]
    python_runtime = next(o for o in objects if o["metadata"]["name"] == "kserve-mesh-python")
    assert python_runtime["spec"]["containers"][0]["image"] == container["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_an_image_set_in_an_overlay_reaches_every_kserve_mesh_container(overlay, tmp_path):
    """`kustomize edit set image` in the overlay that is applied moves the controller, the mesh
    containers it starts (KSERVE_MESH_INSTANCE_IMAGE) and the built-in runtime together."""
    copy = tmp_path / "manifests"
    subprocess.run(["cp", "-r", str(MANIFESTS), str(copy)], check=True, timeout=30)
    workdir = copy / overlay
    subprocess.run([kubectl(), "kustomize", str(workdir)], check=True, capture_output=True, timeout=60)
    kustomization = workdir / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace(
        f"    newName: kserve-mesh\n    newTag: \"{image_of_this_version().split(':')[1]}\"",
        "    newName: registry.example.com/kserve-mesh\n    newTag: v1.2.3"))
    out = subprocess.run([kubectl(), "kustomize", str(workdir)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    import yaml

    objects = tuple(d for d in yaml.safe_load_all(out) if d)
    wanted = "registry.example.com/kserve-mesh:v1.2.3"
    container = controller(objects)
    assert container["image"] == wanted
    assert env_of(container, "KSERVE_MESH_INSTANCE_IMAGE") == wanted
    runtime = next(o for o in objects if o["metadata"]["name"] == "kserve-mesh-python")
    assert runtime["spec"]["containers"][0]["image"] == wanted
    assert image_of_this_version() not in out


def test_crds_are_generated_from_generate_py():
    proc = subprocess.run([sys.executable, str(MANIFESTS / "crd" / "generate.py"), "--check"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def test_every_kustomization_in_the_tree_renders_and_is_tested():
    """No overlay is left out of the tests: each kustomization.yaml renders cleanly (a Component
    is rendered through the overlay that uses it)."""
    from manifests_checks import KUSTOMIZATIONS

    tested = set(KUSTOMIZATIONS) | {"overlays/quickstart", "overlays/quickstart/inferenceservice-crd", "grafana",
                                    "crd", "base/system", "base/runtimes", "base/system/config",
                                    "base/system/controller", "base/system/etcd"}
    found = set()
    for path in sorted(MANIFESTS.rglob("kustomization.yaml")):
        rel = str(path.parent.relative_to(MANIFESTS))
        if "kind: Component" in path.read_text():
            assert any(f"../../{rel}" in (MANIFESTS / k / "kustomization.yaml").read_text()
                       for k in KUSTOMIZATIONS if (MANIFESTS / k / "kustomization.yaml").is_file()), rel
            continue
        found.add(rel)
        assert render(rel), rel
    assert found <= tested, sorted(found - tested)
