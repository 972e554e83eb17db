"""The model-serving-config ConfigMap (kube/deploy_config.py): defaults, ModelMesh keys, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kserve_mesh.kube.deploy_config import InvalidServingConfig, ServingConfig

ROOT = Path(__file__).resolve().parents[3]


def test_no_configmap_means_modelmesh_defaults() -> None:
    for data in (None, {}, {"config.yaml": ""}, {"config.yaml": "# nothing\n"}):
        config = ServingConfig.from_configmap(data)
        assert config == ServingConfig()
    c = ServingConfig()
    assert (c.pods_per_runtime, c.grpc_port, c.rest_port, c.metrics_port) == (2, 8033, 8008, 2112)
    assert c.grpc_max_message_bytes == 16 * 1024 * 1024
    assert c.scale_to_zero and c.scale_to_zero_grace_seconds == 60
    assert c.service_name == "modelmesh-serving" and c.storage_secret_name == "storage-config"


def test_modelmesh_keys_override_the_defaults() -> None:
    text = """
podsPerRuntime: 3
inferenceServiceName: mesh
inferenceServicePort: 9033
restProxy: {enabled: true, port: 9008}
metrics: {enabled: true, port: 9112}
scaleToZero: {enabled: false, gracePeriodSeconds: 5}
grpcMaxMessageSizeBytes: 1048576
storageSecretName: my-storage
modelMeshImage: {name: registry/kserve-mesh, tag: v1}
modelMeshResources: {requests: {cpu: 100m}}
runtimePodLabels: {team: a}
etcdEndpoints: http://etcd.mesh:2379
headlessService: false
allowAnyPVC: true
"""
    c = ServingConfig.from_configmap({"config.yaml": text})
    assert c.pods_per_runtime == 3 and c.service_name == "mesh"
    assert (c.grpc_port, c.rest_port, c.metrics_port) == (9033, 9008, 9112)
    assert not c.scale_to_zero and c.scale_to_zero_grace_seconds == 5
    assert c.grpc_max_message_bytes == 1 << 20
    assert c.storage_secret_name == "my-storage"
    assert c.image == "registry/kserve-mesh:v1"
    assert c.instance_resources == {"requests": {"cpu": "100m"}}
    assert c.runtime_pod_labels == {"team": "a"}
    assert c.etcd_endpoints == "http://etcd.mesh:2379"
    # ModelMesh keys with no meaning here are accepted and reported.
    assert not c.headless_service
    assert "allowAnyPVC" in c.ignored_keys and "restProxy.enabled" in c.ignored_keys


def test_the_shipped_model_serving_config_reads_cleanly() -> None:
    doc = yaml.safe_load((ROOT / "manifests/base/system/config/model-serving-config.yaml").read_text())
    c = ServingConfig.from_configmap(doc["data"])
    assert c.pods_per_runtime == 2 and c.grpc_port == 8033 and c.rest_port == 8008 and c.metrics_port == 2112
    assert c.headless_service and c.scale_to_zero and c.scale_to_zero_grace_seconds == 60
    assert c.etcd_endpoints.startswith("http://") and c.etcd_root_prefix
    assert c.termination_grace_seconds >= 30


@pytest.mark.parametrize(("text", "message"), [
    ("podsPerRuntime: two", "podsPerRuntime must be an integer"),
    ("podsPerRuntime: -1", "podsPerRuntime must be an integer >= 0"),
    ("inferenceServicePort: 70000", "inferenceServicePort must be a port"),
    ("scaleToZero: {enabled: maybe}", "scaleToZero.enabled must be true or false"),
    ("restProxy: 8008", "restProxy must be a mapping"),
    ("runtimePodLabels: {a: 1}", "runtimePodLabels.a must be a string"),
    ("podsPerRutnime: 2", "unknown key 'podsPerRutnime'"),
    ("etcd: {endpoints: http://x}", "etcd.endpoints must be a list of strings"),
    ("- a list", "must be a mapping"),
    ("a: [unclosed", "not valid YAML"),
])
def test_bad_configs_name_the_key(text: str, message: str) -> None:
    with pytest.raises(InvalidServingConfig, match=message.replace("[", r"\[")):
        ServingConfig.from_configmap({"config.yaml": text})
