"""The quickstart (manifests/overlays/quickstart, scripts/quickstart.sh): it renders and validates
(kubernetes-validate --strict; the InferenceService against KServe's schema; runtimes against
their CRDs; its minimal InferenceService CRD is structural); everything lands in one namespace;
MinIO, the upload Job, storage-config and the example InferenceService agree (credentials,
endpoint, bucket, the path the example models are written to); the NetworkPolicies let through
exactly the flows the mesh needs, evaluated as the API server's semantics say; the script's
--dry-run prints the objects without touching a cluster and an unreachable cluster is a clear
error. No cluster is used: what a real one would do is stated in manifests/README.md."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from example_models import make_models_module
from manifests_checks import (
    K8S_VERSIONS,
    MANIFESTS,
    REPO,
    by_kind,
    containers_of,
    crd_schema,
    inference_service_errors,
    kubectl,
    one,
    pod_spec,
    render,
    structural_errors,
    validation_errors,
)
from test_manifests_validate import strict_errors

from kserve_mesh.kube.controller.deploy.config import ServingConfig
from kserve_mesh.kube.controller.deploy.objects import runtime_deployment

QUICKSTART = "overlays/quickstart"
ISVC_CRD = "overlays/quickstart/inferenceservice-crd"
NS = "kserve-mesh"
SCRIPT = REPO / "scripts" / "quickstart.sh"


def objects() -> tuple[dict, ...]:
    return render(QUICKSTART)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_kinds_validate_strictly(version: str) -> None:
    kinds = set()
    for obj in objects():
        if obj["kind"] in ("ServingRuntime", "InferenceService"):
            continue
        error = strict_errors(obj, version)
        assert error is None, f"{obj['kind']}/{obj['metadata']['name']} (k8s {version}): {error}"
        kinds.add(obj["kind"])
    assert {"NetworkPolicy", "Job", "PersistentVolumeClaim", "Deployment", "StatefulSet", "Secret"} <= kinds
    for obj in render(ISVC_CRD):
        assert strict_errors(obj, version) is None


def test_custom_resources_validate() -> None:
    objs = objects()
    isvc = one(objs, "InferenceService", "example-sklearn-isvc")
    assert inference_service_errors(isvc) == []
    [crd] = render(ISVC_CRD)
    assert crd["metadata"]["name"] == "inferenceservices.serving.kserve.io"
    assert structural_errors(crd_schema(crd, "v1beta1")) == []
    assert validation_errors({**crd, "spec": {**crd["spec"], "versions": [
        {**crd["spec"]["versions"][0], "name": "v1alpha1"}]}}, isvc) == []
    runtime_crd = next(c for c in by_kind(objs, "CustomResourceDefinition")
                       if c["spec"]["names"]["kind"] == "ServingRuntime")
    for runtime in by_kind(objs, "ServingRuntime"):
        assert validation_errors(runtime_crd, runtime) == [], runtime["metadata"]["name"]


def test_everything_is_in_one_namespace_with_the_quickstart_parts() -> None:
    objs = objects()
    for obj in objs:
        if obj["kind"] not in ("Namespace", "CustomResourceDefinition"):
            assert obj["metadata"]["namespace"] == NS, f"{obj['kind']}/{obj['metadata']['name']}"
    assert not by_kind(objs, "ClusterRole") and not by_kind(objs, "ClusterServingRuntime")
    for name in ("minio", "kserve-mesh-controller"):
        one(objs, "Deployment", name)
    one(objs, "StatefulSet", "kserve-mesh-etcd")
    one(objs, "Job", "kserve-mesh-quickstart-models")
    for obj in objs:
        for container in containers_of(obj):
            where = f"{obj['metadata']['name']}/{container['name']}"
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            assert "memory" in container["resources"]["limits"], where


def test_minio_the_upload_job_storage_config_and_the_example_agree(tmp_path: Path) -> None:
    objs = objects()
    creds = one(objs, "Secret", "minio-credentials")["stringData"]
    entry = json.loads(one(objs, "Secret", "storage-config")["stringData"]["localMinIO"])
    assert (entry["access_key_id"], entry["secret_access_key"]) == (creds["MINIO_ROOT_USER"],
                                                                     creds["MINIO_ROOT_PASSWORD"])
    service = one(objs, "Service", "minio")
    assert entry["endpoint_url"] == f"http://minio.{NS}.svc:{service['spec']['ports'][0]['port']}"
    job = one(objs, "Job", "kserve-mesh-quickstart-models")
    script = pod_spec(job)["containers"][0]["args"][0]
    assert f"quickstart/{entry['bucket']}" in script and f"http://minio.{NS}.svc:9000" in script
    make = pod_spec(job)["initContainers"][0]
    assert make["command"][:3] == ["python", "-m", "kserve_mesh.cli.example_models"]
    out_dir = make["command"][3]
    assert "mc mirror --overwrite " + out_dir + " " in script
    # The example's path is one the example models module writes (run here for real).
    isvc = one(objs, "InferenceService", "example-sklearn-isvc")
    storage = isvc["spec"]["predictor"]["model"]["storage"]
    assert storage["key"] == "localMinIO"
    make_models_module().make_sklearn(tmp_path)
    assert (tmp_path / storage["path"]).is_file()
    # The MinIO probes and the Service point at its port.
    minio = one(objs, "Deployment", "minio")["spec"]["template"]["spec"]["containers"][0]
    assert minio["readinessProbe"]["httpGet"]["port"] == "s3" == service["spec"]["ports"][0]["targetPort"]


# -- NetworkPolicies, evaluated --------------------------------------------------------------------

def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()) \
        and not selector.get("matchExpressions")


def allowed(policies: list[dict], src: dict, src_ns: str, dst: dict, port: int) -> bool:
    """Whether ingress to a pod labelled ``dst`` in NS on ``port`` from a pod labelled ``src`` in
    ``src_ns`` is let through (no policy selecting the pod: allowed; else any rule of any)."""
    selecting = [p for p in policies if p["metadata"]["namespace"] == NS
                 and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                 and _matches(p["spec"]["podSelector"], dst)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(p.get("port") == port for p in ports):
                continue
            for peer in rule.get("from") or [{}]:
                ns_ok = ("namespaceSelector" in peer) or src_ns == NS
                pod_ok = _matches(peer.get("podSelector", {}), src) if "podSelector" in peer else True
                if not peer or (ns_ok and pod_ok and ("namespaceSelector" in peer or "podSelector" in peer)):
                    return True
    return False


def pod_labels() -> dict[str, dict]:
    objs = objects()
    labels = {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
              for o in objs if o["kind"] in ("Deployment", "StatefulSet", "Job")}
    # The runtime pods are the controller's: their labels as it builds them.
    runtime = one(objs, "ServingRuntime", "kserve-mesh-python")
    deployment = runtime_deployment(ServingConfig(), runtime, NS, 1)
    labels["runtime"] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


ALLOWED = [  # (from, from namespace, to, port): what flows
    ("kserve-mesh-controller", NS, "runtime", 8033),
    ("runtime", NS, "runtime", 8033), ("runtime", NS, "runtime", 8008),
    ("runtime", NS, "kserve-mesh-etcd", 2379),
    ("kserve-mesh-etcd", NS, "kserve-mesh-etcd", 2380),
    ("runtime", NS, "minio", 9000), ("kserve-mesh-quickstart-models", NS, "minio", 9000),
    ("client", "apps", "runtime", 8033), ("client", "apps", "runtime", 8008),
    ("prometheus", "monitoring", "runtime", 2112), ("prometheus", "monitoring", "kserve-mesh-etcd", 2381),
]
REFUSED = [  # what does not
    ("client", "apps", "kserve-mesh-etcd", 2379), ("client", "apps", "minio", 9000),
    ("kserve-mesh-quickstart-models", NS, "kserve-mesh-etcd", 2379),
    ("kserve-mesh-controller", NS, "minio", 9000), ("minio", NS, "kserve-mesh-etcd", 2379),
    ("runtime", NS, "kserve-mesh-etcd", 2380), ("client", "apps", "kserve-mesh-controller", 8081),
    ("runtime", NS, "kserve-mesh-controller", 8081), ("client", "apps", "runtime", 8085),
]


@pytest.mark.parametrize(("src", "src_ns", "dst", "port"), ALLOWED)
def test_network_policies_let_the_mesh_traffic_through(src: str, src_ns: str, dst: str, port: int) -> None:
    labels = pod_labels()
    policies = by_kind(objects(), "NetworkPolicy")
    assert allowed(policies, labels.get(src, {"app": src}), src_ns, labels[dst], port)


@pytest.mark.parametrize(("src", "src_ns", "dst", "port"), REFUSED)
def test_network_policies_refuse_everything_else(src: str, src_ns: str, dst: str, port: int) -> None:
    labels = pod_labels()
    policies = by_kind(objects(), "NetworkPolicy")
    assert not allowed(policies, labels.get(src, {"app": src}), src_ns, labels[dst], port)


def test_every_pod_is_covered_by_the_default_deny() -> None:
    policies = by_kind(objects(), "NetworkPolicy")
    deny = one(objects(), "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert not allowed(policies, {"app": "x"}, "apps", {"app": "anything-new"}, 80)


# -- the script ------------------------------------------------------------------------------------

def run_script(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join([str(Path(kubectl()).parent), os.environ.get("PATH", "")])
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "PATH": path, "KUBECTL": kubectl(), **env})


def test_dry_run_prints_the_steps_and_every_object_without_a_cluster(tmp_path: Path) -> None:
    proc = run_script("--dry-run", KUBECONFIG=str(tmp_path / "no-kubeconfig"))
    assert proc.returncode == 0, proc.stderr
    assert "nothing is applied" in proc.stdout and "inferenceservice/example-sklearn-isvc" in proc.stdout
    import yaml

    printed = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert [(o["kind"], o["metadata"]["name"]) for o in printed] == [
        (o["kind"], o["metadata"]["name"]) for o in objects()]


def test_bad_arguments_and_an_unreachable_cluster_are_clear_errors(tmp_path: Path) -> None:
    proc = run_script("--timeout", "soon")
    assert proc.returncode == 2 and "--timeout must be a whole number" in proc.stderr
    proc = run_script("--bogus")
    assert proc.returncode == 2 and "unknown argument '--bogus'" in proc.stderr
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {}}]\n")
    proc = run_script("--timeout", "5", KUBECONFIG=str(config))
    assert proc.returncode == 2 and "cannot reach the cluster" in proc.stderr
    assert "applying" not in proc.stdout


def test_the_script_waits_for_what_the_overlay_makes() -> None:
    text = SCRIPT.read_text()
    objs = objects()
    for kind, name in (("StatefulSet", "kserve-mesh-etcd"), ("Deployment", "minio"),
                       ("Job", "kserve-mesh-quickstart-models"), ("Deployment", "kserve-mesh-controller"),
                       ("InferenceService", "example-sklearn-isvc")):
        one(objs, kind, name)
        assert f"{kind.lower()}/{name}" in text or (kind == "InferenceService" and "inferenceservice/$ISVC" in text)
    runtime = runtime_deployment(ServingConfig(), one(objs, "ServingRuntime", "kserve-mesh-python"), NS, 1)
    assert f"RUNTIME_DEPLOYMENT={runtime['metadata']['name']}" in text
    assert (MANIFESTS / "overlays/quickstart/inferenceservice-crd/kustomization.yaml").is_file()
