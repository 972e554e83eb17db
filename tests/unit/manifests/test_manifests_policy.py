"""Rules the manifests keep beyond schema validity: least-privilege RBAC, probes and resource
requests on every container, and configuration the mesh can read."""

from __future__ import annotations

import json

import pytest
import yaml
from manifests_checks import KUSTOMIZATIONS, OVERLAYS, containers_of, one, pod_spec, render

from kserve_mesh.kube.controller.deploy.config import ServingConfig
from kserve_mesh.kube.controller.deploy.security import auth_secret_name
from kserve_mesh.storage.config import StorageConfig

SUGGESTED_TLS_SECRET = "modelmesh-serving-tls"

# What the controller may do, per (apiGroup, resource): the whole grant, nothing more.
CONTROLLER_GRANTS = {
    ("serving.kserve.io", "inferenceservices"): {"get", "list", "watch", "patch"},
    ("serving.kserve.io", "predictors"): {"get", "list", "watch", "patch"},
    ("serving.kserve.io", "servingruntimes"): {"get", "list", "watch"},
    ("serving.kserve.io", "clusterservingruntimes"): {"get", "list", "watch"},
    ("serving.kserve.io", "inferenceservices/status"): {"get", "update", "patch"},
    ("serving.kserve.io", "predictors/status"): {"get", "update", "patch"},
    ("serving.kserve.io", "servingruntimes/status"): {"get", "update", "patch"},
    ("", "namespaces"): {"get", "list", "watch"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("autoscaling", "horizontalpodautoscalers"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("monitoring.coreos.com", "servicemonitors"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("", "secrets"): {"get", "create"},
    ("", "persistentvolumeclaims"): {"get"},
    ("", "configmaps"): {"get", "list", "watch"},
    ("coordination.k8s.io", "leases"): {"create", "get", "watch", "update", "patch"},
}
CLUSTER_ONLY = {("serving.kserve.io", "clusterservingruntimes"), ("", "namespaces")}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "escalate", "bind",
               "impersonate"}


def roles(objects) -> list[dict]:
    return [o for o in objects if o["kind"] in ("Role", "ClusterRole")]


def grants(objects) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for role in roles(objects):
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_has_no_wildcards_and_no_more_than_the_controller_needs(overlay):
    objects = render(overlay)
    for role in roles(objects):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"{role['metadata']['name']}: '*' in {field}"
            assert "nonResourceURLs" not in rule
    granted = grants(objects)
    for key, verbs in granted.items():
        assert key in CONTROLLER_GRANTS, f"unexpected grant on {key}"
        assert verbs <= CONTROLLER_GRANTS[key], f"{key}: {sorted(verbs - CONTROLLER_GRANTS[key])}"
    expected = dict(CONTROLLER_GRANTS)
    if overlay.endswith("namespace-scope"):
        for key in CLUSTER_ONLY:
            expected.pop(key)
    assert granted == expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_and_configmaps_are_read_by_name_and_secrets_only_ever_created(overlay):
    for role in roles(render(overlay)):
        for rule in role["rules"]:
            if {"secrets", "configmaps"} & set(rule["resources"]):
                assert rule["resources"] in (["secrets"], ["configmaps"]), rule
                if rule["verbs"] == ["create"] and rule["resources"] == ["secrets"]:
                    continue  # the mesh's tokens, made once per namespace (create cannot be limited by name)
                assert not WRITE_VERBS & set(rule["verbs"]), rule
                assert "list" not in rule["verbs"] or "configmaps" in rule["resources"], rule
                assert rule.get("resourceNames"), f"{rule['resources']} not limited by name"
    secret_rules = [r for role in roles(render(overlay)) for r in role["rules"]
                    if "secrets" in r["resources"]]
    assert [r["verbs"] for r in secret_rules] == [["get"], ["create"]]
    # The Secrets read are the ones the shipped config names: storage-config, the mesh's tokens, and
    # the TLS Secret name the config suggests.
    config = ServingConfig.from_configmap({"config.yaml": yaml.safe_dump(config_yaml())})
    assert secret_rules[0]["resourceNames"] == [config.storage_secret_name, auth_secret_name(config),
                                                SUGGESTED_TLS_SECRET]
    assert f"secretName: {SUGGESTED_TLS_SECRET}" in config_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_role_is_bound_to_the_controller_only(overlay):
    objects = render(overlay)
    bindings = [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    bound = {(b["roleRef"]["kind"], b["roleRef"]["name"]) for b in bindings}
    assert bound == {(r["kind"], r["metadata"]["name"]) for r in roles(objects)}
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kserve-mesh-controller",
                                        "namespace": "kserve-mesh"}]
    controller = one(objects, "Deployment", "kserve-mesh-controller")
    assert pod_spec(controller)["serviceAccountName"] == "kserve-mesh-controller"
    etcd = one(objects, "StatefulSet", "kserve-mesh-etcd")
    assert pod_spec(etcd)["automountServiceAccountToken"] is False


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_container_has_probes_requests_and_limits(kustomization):
    checked = []
    for obj in render(kustomization):
        for container in containers_of(obj):
            where = f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"
            assert "livenessProbe" in container and "readinessProbe" in container, where
            requests = container.get("resources", {}).get("requests", {})
            assert {"cpu", "memory"} <= set(requests), where
            assert "memory" in container["resources"].get("limits", {}), where
            assert container.get("securityContext", {}).get("allowPrivilegeEscalation") is False, where
            checked.append(where)
    assert len(checked) == 5, checked  # controller, etcd, and the three runtimes


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_probes_point_at_declared_ports(kustomization):
    for obj in render(kustomization):
        for container in containers_of(obj):
            ports = {p.get("name") for p in container.get("ports", [])} | {
                p["containerPort"] for p in container.get("ports", [])}
            for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = container.get(probe_name)
                if probe and "httpGet" in probe:
                    assert probe["httpGet"]["port"] in ports, f"{obj['metadata']['name']} {probe_name}"
                elif probe:
                    assert "exec" in probe, f"{obj['metadata']['name']} {probe_name}"


def config_text() -> str:
    config_map = one(render("overlays/cluster-scope"), "ConfigMap", "model-serving-config")
    return config_map["data"]["config.yaml"]


def config_yaml() -> dict:
    return yaml.safe_load(config_text())


def test_model_serving_config_has_modelmesh_defaults():
    config = config_yaml()
    assert config["podsPerRuntime"] == 2
    assert config["scaleToZero"] == {"enabled": True, "gracePeriodSeconds": 60}
    assert config["restProxy"]["port"] == 8008
    assert config["grpcPort"] == 8033
    assert config["metrics"]["port"] == 2112
    assert config["grpcMaxMessageSizeBytes"] == 16 * 1024 * 1024
    assert config["storageSecretName"] == "storage-config"
    objects = render("overlays/cluster-scope")
    service = one(objects, "Service", "kserve-mesh-etcd")
    namespace = service["metadata"]["namespace"]
    port = service["spec"]["ports"][0]["port"]
    assert config["etcd"]["endpoints"] == [f"http://kserve-mesh-etcd.{namespace}.svc:{port}"]
    assert config["terminationGracePeriodSeconds"] > 0


def test_storage_config_secret_parses_in_the_mesh_format_with_placeholders_only():
    secret = one(render("overlays/cluster-scope"), "Secret", "storage-config")
    assert secret["metadata"]["name"] == config_yaml()["storageSecretName"]
    data = secret["stringData"]
    config = StorageConfig.from_mapping(data)  # the mesh's own parser
    assert len(config) == len(data) == 3
    s3 = config.require("localMinIO")
    assert s3.type == "s3" and s3.get("endpoint_url").startswith("http")
    assert s3.bucket == "modelmesh-example-models"
    assert config.require("httpModels").type == "http"
    assert config.require("modelsPvc").get("name") == "models-pvc"
    for key, raw in data.items():
        entry = json.loads(raw)
        for field in ("access_key_id", "secret_access_key"):
            if field in entry:
                assert entry[field].startswith("REPLACE_WITH_"), f"{key}.{field} is not a placeholder"
