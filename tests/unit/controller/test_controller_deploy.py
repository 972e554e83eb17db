"""The runtime Deployment and Service builders (kube/controller/deploy/objects.py): shape, probes, ports, replicas,
scale to zero, namespaced vs cluster runtimes; every object validates against the Kubernetes schema."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from kserve_mesh.kube.controller.deploy.config import ServingConfig
from kserve_mesh.kube.controller.deploy.objects import (
    InvalidServingRuntime,
    RuntimeRef,
    deployment_name,
    desired_replicas,
    runtime_address,
    runtime_deployment,
    runtime_service,
    service_urls,
)

K8S_VERSION = "1.30.0"


def serving_runtime(name: str = "kserve-mesh-python", kind: str = "ClusterServingRuntime",
                    uid: str = "0b0c-uid", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "supportedModelFormats": [{"name": "sklearn", "version": "1", "autoSelect": True}],
        "multiModel": True,
        "grpcEndpoint": "port:8085",
        "grpcDataEndpoint": "port:8001",
        "containers": [{
            "name": "runtime",
            "image": "kserve-mesh:latest",
            "args": ["runtime", "--port", "8085"],
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        }],
    }
    base.update(spec)
    meta: dict[str, Any] = {"name": name, "uid": uid}
    if kind == "ServingRuntime":
        meta["namespace"] = "models"
    return {"apiVersion": "serving.kserve.io/v1alpha1", "kind": kind, "metadata": meta, "spec": base}


def containers(dep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in dep["spec"]["template"]["spec"]["containers"]}


def test_deployment_runs_an_instance_next_to_the_runtime_container() -> None:
    config = ServingConfig()
    dep = runtime_deployment(config, serving_runtime(), "models", replicas=2)
    assert dep["metadata"]["name"] == "modelmesh-serving-kserve-mesh-python"
    assert dep["metadata"]["namespace"] == "models"
    assert dep["spec"]["replicas"] == 2
    by_name = containers(dep)
    assert list(by_name) == ["mm", "runtime"]
    mm = by_name["mm"]
    assert mm["command"] == ["kserve-mesh"]
    args = mm["args"]
    assert args[0] == "instance"
    assert args[args.index("--runtime") + 1] == "remote"
    assert args[args.index("--runtime-address") + 1] == "127.0.0.1:8085"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert {p["name"]: p["containerPort"] for p in mm["ports"]} == {"grpc": 8033, "http": 8008, "prometheus": 2112}
    env = {e["name"]: e for e in mm["env"]}
    assert env["KSERVE_MESH_NAMESPACE"]["value"] == "models"
    assert env["KSERVE_MESH_ETCD_ENDPOINTS"]["value"] == "http://etcd:2379"
    assert env["KSERVE_MESH_GRPC_MAX_MESSAGE_BYTES"]["value"] == str(16 * 1024 * 1024)
    assert env["KSERVE_MESH_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # Bound to 0.0.0.0, the instance tells its peers the pod's IP (forwarding goes there).
    assert env["KSERVE_MESH_ADVERTISE_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["KSERVE_MESH_SHUTDOWN_GRACE_S"]["value"] == "75"  # drains within the 90 s grace period
    # The runtime container is the ServingRuntime's, resources untouched, with the shared models volume.
    rt = by_name["runtime"]
    assert rt["args"] == ["runtime", "--port", "8085"]
    assert rt["resources"]["limits"]["memory"] == "1Gi"
    assert {"name": "models-dir", "mountPath": "/models"} in rt["volumeMounts"]
    assert {"name": "models-dir", "mountPath": "/models"} in mm["volumeMounts"]
    assert {"name": "storage-config", "mountPath": "/storage-config", "readOnly": True} in rt["volumeMounts"]
    assert mm["args"][mm["args"].index("--storage-config") + 1] == "/storage-config"
    pod = dep["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 90
    assert {v["name"] for v in pod["volumes"]} == {"models-dir", "storage-config", "mesh-auth"}
    secret = next(v for v in pod["volumes"] if v["name"] == "storage-config")["secret"]
    assert secret["secretName"] == "storage-config"
    # Pods are selected by the Deployment and by the namespace's Service.
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    svc = runtime_service(config, "models")
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()


def test_probes_hit_the_v2_health_routes_on_the_rest_port() -> None:
    mm = containers(runtime_deployment(ServingConfig(rest_port=9008), serving_runtime(), "ns", 1))["mm"]
    assert mm["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 9008, "scheme": "HTTP"}
    assert mm["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 9008, "scheme": "HTTP"}
    assert mm["livenessProbe"]["initialDelaySeconds"] > mm["readinessProbe"]["initialDelaySeconds"]


def test_service_exposes_grpc_http_and_metrics() -> None:
    svc = runtime_service(ServingConfig(), "models")
    assert svc["metadata"] == {"name": "modelmesh-serving", "namespace": "models",
                               "labels": svc["metadata"]["labels"]}
    assert {(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]} == {
        ("grpc", 8033, "grpc"), ("http", 8008, "http"), ("prometheus", 2112, "prometheus")}
    assert svc["spec"]["clusterIP"] == "None"  # headless, ModelMesh's default
    assert "clusterIP" not in runtime_service(ServingConfig(headless_service=False), "models")["spec"]
    no_metrics = runtime_service(ServingConfig(metrics_enabled=False), "models")
    assert [p["name"] for p in no_metrics["spec"]["ports"]] == ["grpc", "http"]


def test_config_ports_and_names_flow_into_both_objects() -> None:
    config = ServingConfig(service_name="mesh", grpc_port=9033, rest_port=9008, metrics_port=9112,
                           termination_grace_seconds=120, image="registry/kserve-mesh:1.2")
    dep = runtime_deployment(config, serving_runtime(name="mlserver-1.x"), "ns", 3)
    assert dep["metadata"]["name"] == deployment_name(config, "mlserver-1.x") == "mesh-mlserver-1.x"
    mm = containers(dep)["mm"]
    assert mm["image"] == "registry/kserve-mesh:1.2"
    assert {p["containerPort"] for p in mm["ports"]} == {9033, 9008, 9112}
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 120
    assert service_urls(config, "ns", "x") == {
        "grpcUrl": "grpc://mesh.ns:9033", "restUrl": "http://mesh.ns:9008", "url": "grpc://mesh.ns:9033"}


def test_cluster_and_namespaced_runtimes_own_their_deployment() -> None:
    config = ServingConfig()
    cluster = runtime_deployment(config, serving_runtime(kind="ClusterServingRuntime", uid="c-1"), "team-a", 2)
    local = runtime_deployment(config, serving_runtime(kind="ServingRuntime", uid="n-1"), "models", 2)
    assert cluster["metadata"]["ownerReferences"][0] | {} == {
        "apiVersion": "serving.kserve.io/v1alpha1", "kind": "ClusterServingRuntime", "name": "kserve-mesh-python",
        "uid": "c-1", "controller": True, "blockOwnerDeletion": False}
    assert local["metadata"]["ownerReferences"][0]["kind"] == "ServingRuntime"
    # The Deployment of a cluster runtime lives in the namespace of the predictors that use it.
    assert cluster["metadata"]["namespace"] == "team-a"
    assert RuntimeRef.of(serving_runtime(uid="")).uid == ""
    assert runtime_deployment(config, serving_runtime(uid=""), "x", 1)["metadata"]["ownerReferences"] == []


def test_runtime_spec_fields_reach_the_pod() -> None:
    rt = serving_runtime(
        grpcEndpoint="port:9999", replicas=4, nodeSelector={"gpu": "yes"},
        tolerations=[{"key": "gpu", "operator": "Exists"}],
        annotations={"maxLoadingConcurrency": "3"}, labels={"team": "a"})
    dep = runtime_deployment(ServingConfig(), rt, "ns", 4)
    pod = dep["spec"]["template"]
    mm = containers(dep)["mm"]
    assert mm["args"][mm["args"].index("--runtime-address") + 1] == "127.0.0.1:9999"
    assert mm["args"][mm["args"].index("--max-loading-concurrency") + 1] == "3"
    assert pod["spec"]["nodeSelector"] == {"gpu": "yes"}
    assert pod["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert pod["metadata"]["labels"]["team"] == "a"
    assert pod["metadata"]["annotations"]["maxLoadingConcurrency"] == "3"


def test_builtin_adapter_runtimes_use_that_adapter() -> None:
    rt = serving_runtime(builtInAdapter={"serverType": "mlserver", "runtimeManagementPort": 8001})
    pod = containers(runtime_deployment(ServingConfig(), rt, "ns", 1))
    mm, adapter = pod["mm"], pod["mlserver-adapter"]
    # The mesh talks ModelRuntime to the adapter on the grpcEndpoint; the adapter drives MLServer.
    assert mm["args"][mm["args"].index("--runtime") + 1] == "remote"
    assert mm["args"][mm["args"].index("--runtime-address") + 1] == "127.0.0.1:8085"
    assert adapter["command"] == ["python", "-m", "kserve_mesh.runtime.mlserver"]
    assert adapter["args"][adapter["args"].index("--port") + 1] == "8085"
    assert adapter["args"][adapter["args"].index("--attach-grpc") + 1] == "127.0.0.1:8001"
    assert adapter["args"][adapter["args"].index("--attach-http") + 1] == "http://127.0.0.1:8002"
    # Triton (ModelMesh's triton-2.x): the adapter attaches to Triton's gRPC and lays models out in its repository.
    triton = containers(runtime_deployment(ServingConfig(), serving_runtime(
        builtInAdapter={"serverType": "triton", "runtimeManagementPort": 8001}), "ns", 1))["triton-adapter"]
    assert triton["command"] == ["python", "-m", "kserve_mesh.runtime.triton"]
    args = triton["args"]
    assert args[args.index("--attach-grpc") + 1] == "127.0.0.1:8001" and args[args.index("--port") + 1] == "8085"
    assert args[args.index("--attach-repository") + 1] == "/models/_triton_models"
    assert "onnxruntime" in args[args.index("--attach-backends") + 1].split(",")
    with pytest.raises(InvalidServingRuntime, match="serverType 'torchserve' is not supported .supported: mlserver, triton"):
        runtime_deployment(ServingConfig(), serving_runtime(builtInAdapter={"serverType": "torchserve"}), "ns", 1)


@pytest.mark.parametrize(("spec", "message"), [
    ({"containers": []}, "spec.containers"),
    ({"containers": [{"name": "x"}]}, "spec.containers[0]"),
    ({"containers": [{"name": "mm", "image": "i"}]}, "reserved"),
    ({"grpcEndpoint": "8085"}, "spec.grpcEndpoint"),
    ({"grpcEndpoint": "port:99999"}, "spec.grpcEndpoint"),
    ({"builtInAdapter": {"serverType": "mlserver", "runtimeManagementPort": "x"}}, "runtimeManagementPort"),
    ({"annotations": {"maxLoadingConcurrency": "zero"}}, "maxLoadingConcurrency"),
    ({"labels": {"a": 1}}, "spec.labels"),
])
def test_bad_runtime_specs_name_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidServingRuntime, match=message.replace("[", r"\[").replace("]", r"\]")):
        runtime_deployment(ServingConfig(), serving_runtime(**spec), "ns", 1)


def test_bad_kind_and_missing_name_are_named() -> None:
    with pytest.raises(InvalidServingRuntime, match="kind"):
        RuntimeRef.of({"kind": "Pod", "metadata": {"name": "x"}})
    with pytest.raises(InvalidServingRuntime, match="metadata.name"):
        RuntimeRef.of({"kind": "ServingRuntime", "metadata": {}})
    assert runtime_address({}) == "127.0.0.1:8085"


def test_replicas_follow_use_and_scale_to_zero_after_the_grace_period() -> None:
    config = ServingConfig(pods_per_runtime=2, scale_to_zero=True, scale_to_zero_grace_seconds=60)
    assert desired_replicas(config, {}, in_use=True, unused_since=None, now=1000.0) == 2
    assert desired_replicas(config, {}, in_use=True, unused_since=0.0, now=1000.0) == 2
    # Unused: keep the pods through the grace period, then zero.
    assert desired_replicas(config, {}, in_use=False, unused_since=None, now=1000.0) == 2
    assert desired_replicas(config, {}, in_use=False, unused_since=950.0, now=1000.0) == 2
    assert desired_replicas(config, {}, in_use=False, unused_since=940.0, now=1000.0) == 0
    # The runtime's own replica count wins over podsPerRuntime.
    assert desired_replicas(config, {"replicas": 5}, in_use=True, unused_since=None, now=0.0) == 5
    # Scale to zero switched off: an unused runtime keeps its pods.
    off = ServingConfig(scale_to_zero=False)
    assert desired_replicas(off, {}, in_use=False, unused_since=0.0, now=1e9) == 2
    with pytest.raises(InvalidServingRuntime, match="spec.replicas"):
        desired_replicas(config, {"replicas": -1}, in_use=True, unused_since=None, now=0.0)
    dep = runtime_deployment(config, serving_runtime(), "ns", replicas=0)
    assert dep["spec"]["replicas"] == 0


@pytest.mark.parametrize("kind", ["ServingRuntime", "ClusterServingRuntime"])
def test_built_objects_validate_strictly_against_the_kubernetes_schema(kind: str) -> None:
    config = ServingConfig()
    rt = serving_runtime(kind=kind, nodeSelector={"a": "b"}, annotations={"maxLoadingConcurrency": "2"})
    for obj in (runtime_deployment(config, rt, "models", 2), runtime_service(config, "models")):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
