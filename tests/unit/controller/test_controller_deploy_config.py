"""The model-serving-config ConfigMap (kube/controller/deploy/config.py): defaults, ModelMesh keys, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kserve_mesh.kube.controller.deploy.config import InvalidServingConfig, ServingConfig

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
    assert not c.headless_service and c.allow_any_pvc
    # restProxy.enabled: true is what happens anyway (REST is served natively): accepted, no warning.
    assert c.ignored_keys == ("restProxy.enabled",) and c.warnings == ()


def test_the_shipped_model_serving_config_reads_cleanly() -> None:
    doc = yaml.safe_load((ROOT / "manifests/base/system/config/model-serving-config.yaml").read_text())
    c = ServingConfig.from_configmap(doc["data"])
    assert c.pods_per_runtime == 2 and c.grpc_port == 8033 and c.rest_port == 8008 and c.metrics_port == 2112
    assert c.headless_service and c.scale_to_zero and c.scale_to_zero_grace_seconds == 60
    assert c.etcd_endpoints.startswith("http://") and c.etcd_root_prefix
    assert c.termination_grace_seconds >= 30
    # Our own config says only what is true: no key in it is without effect.
    assert c.warnings == ()
    assert not c.tls_enabled and not c.allow_any_pvc and c.metrics_scheme == "http"


def test_tls_allow_any_pvc_and_metrics_scheme_are_read() -> None:
    c = ServingConfig.from_configmap({"config.yaml": """
tls: {secretName: mesh-tls, clientAuth: Require}
allowAnyPVC: true
metrics: {scheme: https}
"""})
    assert (c.tls_secret_name, c.tls_client_auth, c.allow_any_pvc) == ("mesh-tls", "require", True)
    assert c.tls_enabled and c.tls_metrics and c.warnings == () and c.ignored_keys == ()
    plain = ServingConfig.from_configmap({"config.yaml": "tls: {secretName: '', clientAuth: ''}\nallowAnyPVC: false"})
    assert not plain.tls_enabled and not plain.allow_any_pvc and plain.warnings == ()


def test_settings_that_cannot_take_effect_alone_are_reported() -> None:
    c = ServingConfig.from_configmap({"config.yaml": "tls: {clientAuth: require}\nmetrics: {scheme: https}"})
    assert not c.tls_enabled and not c.tls_metrics
    assert [w.key for w in c.warnings] == ["tls.clientAuth", "metrics.scheme"]
    assert "without tls.secretName" in c.warnings[0].message
    assert "served over http" in c.warnings[1].message


@pytest.mark.parametrize(("text", "key", "why"), [
    ("restProxy: {enabled: false}", "restProxy.enabled", "cannot be turned off"),
    ("restProxy: {image: {name: kserve/rest-proxy}}", "restProxy.image", "no REST proxy container"),
    ("restProxy: {resources: {requests: {cpu: 1}}}", "restProxy.resources", "meshResources"),
    ("storageHelperImage: {name: x, tag: y}", "storageHelperImage", "pulls models itself"),
    ("storageHelperResources: {limits: {memory: 1Gi}}", "storageHelperResources", "storage helper"),
    ("builtInServerTypes: [triton, mlserver]", "builtInServerTypes", "builtInAdapter.serverType"),
    ("internalModelMeshEnvVars: [{name: MM_X, value: '1'}]", "internalModelMeshEnvVars", "KSERVE_MESH_"),
    ("enableAccessLogging: true", "enableAccessLogging", "no per-request access log"),
    ("modelMeshImage: {command: [java]}", "modelMeshImage.command", "kserve-mesh instance"),
])
def test_each_accepted_key_without_effect_is_a_warning_naming_it_and_why(text: str, key: str, why: str) -> None:
    c = ServingConfig.from_configmap({"config.yaml": text})
    assert [w.key for w in c.warnings] == [key]
    assert why in c.warnings[0].message
    assert str(c.warnings[0]).startswith(f"{key}: ")


def test_accepted_keys_whose_value_asks_for_nothing_we_lack_are_quiet() -> None:
    text = "restProxy: {enabled: true}\nenableAccessLogging: false\ninternalModelMeshEnvVars: []"
    c = ServingConfig.from_configmap({"config.yaml": text})
    assert c.warnings == () and len(c.ignored_keys) == 3


@pytest.mark.parametrize(("text", "value"), [
    ("payloadProcessors: http://sink.ns:8080/events  https://u:p@other/x?modelId=vm",
     "http://sink.ns:8080/events https://u:p@other/x?modelId=vm"),
    ("payloadProcessors: [http://a/, 'http://b/?modelId=m1']", "http://a/ http://b/?modelId=m1"),
    ("payloadProcessors: []", ""),
    ("payloadProcessors: ''", ""),
])
def test_payload_processors_reach_every_instance(text: str, value: str) -> None:
    c = ServingConfig.from_configmap({"config.yaml": text})
    assert c.payload_processors == value and c.warnings == () and c.ignored_keys == ()
    env = {e["name"]: e.get("value") for e in _instance_env(c)}
    assert env.get("KSERVE_MESH_PAYLOAD_PROCESSORS") == (value or None)


@pytest.mark.parametrize(("text", "message"), [
    ("payloadProcessors: ftp://x", "payloadProcessors: payload processor 'ftp://x': the scheme must be http"),
    ("payloadProcessors: 'http://h/?modelId='", "'modelId' is empty"),
    ("payloadProcessors: 'https://u:secret@h/?modelId='", "https://***@h/"),
    ("payloadProcessors: {url: http://x}", "payloadProcessors must be space-separated http(s):// URLs"),
])
def test_bad_payload_processors_are_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(InvalidServingConfig) as err:
        ServingConfig.from_configmap({"config.yaml": text})
    assert message in str(err.value) and "secret" not in str(err.value)


def _instance_env(config: ServingConfig) -> list[dict]:
    from kserve_mesh.kube.controller.deploy.objects import RuntimeRef, instance_container

    container = instance_container(config, RuntimeRef("mlserver-1.x", "ServingRuntime"), "ns", {"containers": []})
    return container["env"]


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
    ("tls: {clientAuth: maybe}", "tls.clientAuth must be one of"),
    ("metrics: {scheme: ftp}", "metrics.scheme must be one of"),
    ("allowAnyPVC: yes please", "allowAnyPVC must be true or false"),
])
def test_bad_configs_name_the_key(text: str, message: str) -> None:
    with pytest.raises(InvalidServingConfig, match=message.replace("[", r"\[")):
        ServingConfig.from_configmap({"config.yaml": text})
