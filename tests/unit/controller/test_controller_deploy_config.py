"""The model-serving-config ConfigMap (kube/controller/deploy/config.py): defaults, ModelMesh keys, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kserve_mesh.kube.controller.deploy.config import INVALID, UNKNOWN, InvalidServingConfig, ServingConfig

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
    ("payloadProcessors: {url: http://x}", "payloadProcessors: must be space-separated http(s):// URLs"),
])
def test_bad_payload_processors_are_refused_naming_the_key(text: str, message: str) -> None:
    c = ServingConfig.from_configmap({"config.yaml": text + "\npodsPerRuntime: 5"})
    assert c.payload_processors == "" and c.pods_per_runtime == 5
    [warning] = c.warnings
    assert warning.reason == INVALID and message in str(warning) and "secret" not in str(warning)


def _instance_env(config: ServingConfig) -> list[dict]:
    from kserve_mesh.kube.controller.deploy.objects import RuntimeRef, instance_container

    container = instance_container(config, RuntimeRef("mlserver-1.x", "ServingRuntime"), "ns", {"containers": []})
    return container["env"]


@pytest.mark.parametrize(("text", "key", "message"), [
    ("podsPerRuntime: two", "podsPerRuntime", "must be an integer, got 'two'; the default (2) is used"),
    ("podsPerRuntime: -1", "podsPerRuntime", "must be an integer >= 0"),
    ("inferenceServicePort: 70000", "inferenceServicePort", "must be a port"),
    ("scaleToZero: {enabled: maybe}", "scaleToZero.enabled", "must be true or false"),
    ("restProxy: 8008", "restProxy", "must be a mapping"),
    ("runtimePodLabels: {a: 1}", "runtimePodLabels.a", "must be a string"),
    ("etcd: {endpoints: http://x}", "etcd.endpoints", "must be a list of strings"),
    ("tls: {clientAuth: maybe}", "tls.clientAuth", "must be one of"),
    ("metrics: {scheme: ftp}", "metrics.scheme", "must be one of"),
    ("allowAnyPVC: yes please", "allowAnyPVC", "must be true or false"),
    ("imagePullSecrets: regcred", "imagePullSecrets", "must be a list of Secret names"),
    ("imagePullSecrets: [{name: Bad_Name}]", "imagePullSecrets", "must be a list of Secret names"),
    ("metrics: {disablePrometheusOperatorSupport: 'yes'}", "metrics.disablePrometheusOperatorSupport",
     "must be true or false"),
    ("modelMeshImage: {pullPolicy: sometimes}", "modelMeshImage.pullPolicy", "must be one of"),
])
def test_a_bad_value_is_reported_naming_the_key_and_the_rest_of_the_config_is_kept(
        text: str, key: str, message: str) -> None:
    c = ServingConfig.from_configmap({"config.yaml": text + "\ngrpcMaxMessageSizeBytes: 1024\nserviceAccountName: sa"})
    assert [(w.key, w.reason) for w in c.warnings] == [(key, INVALID)]
    assert message in c.warnings[0].message and str(c.warnings[0]).startswith(f"{key}: ")
    # Every other key still has its effect.
    assert c.grpc_max_message_bytes == 1024 and c.service_account_name == "sa"


def test_a_bad_value_keeps_the_default_of_its_key() -> None:
    c = ServingConfig.from_configmap({"config.yaml": "podsPerRuntime: two\nscaleToZero: {enabled: maybe}"})
    assert c.pods_per_runtime == ServingConfig().pods_per_runtime and c.scale_to_zero is True


def test_unknown_keys_are_reported_one_by_one_and_drop_nothing_else() -> None:
    c = ServingConfig.from_configmap({"config.yaml": "podsPerRutnime: 5\nfoo: {bar: 1}\nheadlessService: false\n"
                                                     "imagePullSecrets: [{name: regcred}]"})
    assert [(w.key, w.reason) for w in c.warnings] == [("foo.bar", UNKNOWN), ("podsPerRutnime", UNKNOWN)]
    assert "unknown key" in c.warnings[0].message
    assert c.headless_service is False and c.image_pull_secrets == ("regcred",)
    assert c.pods_per_runtime == 2


def test_keys_match_without_regard_to_case_as_modelmesh_documents() -> None:
    c = ServingConfig.from_configmap({"config.yaml": "PodsPerRuntime: 4\nmetrics: {Port: 9999}\nrestproxy: {enabled: true}"})
    assert c.pods_per_runtime == 4 and c.metrics_port == 9999 and c.warnings == ()


@pytest.mark.parametrize(("text", "message"), [
    ("- a list", "must be a mapping"),
    ("a: [unclosed", "not valid YAML"),
])
def test_a_config_yaml_that_is_not_a_mapping_is_refused_whole(text: str, message: str) -> None:
    with pytest.raises(InvalidServingConfig, match=message.replace("[", r"\[")):
        ServingConfig.from_configmap({"config.yaml": text})


def test_image_pull_secrets_reach_every_runtime_pod_after_the_runtimes_own() -> None:
    from kserve_mesh.kube.controller.deploy.objects import runtime_deployment

    c = ServingConfig.from_configmap({"config.yaml": "imagePullSecrets: [{name: regcred}, other, regcred]"})
    assert c.image_pull_secrets == ("regcred", "other") and c.warnings == ()
    runtime = {"kind": "ServingRuntime", "metadata": {"name": "rt", "uid": "u"},
               "spec": {"containers": [{"name": "rt", "image": "x:1"}], "imagePullSecrets": [{"name": "own"},
                                                                                             {"name": "other"}]}}
    pod = runtime_deployment(c, runtime, "ns", 1)["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "own"}, {"name": "other"}, {"name": "regcred"}]
    plain = runtime_deployment(ServingConfig(), {**runtime, "spec": {"containers": runtime["spec"]["containers"]}},
                               "ns", 1)["spec"]["template"]["spec"]
    assert "imagePullSecrets" not in plain


def test_disable_prometheus_operator_support_turns_the_service_monitor_off() -> None:
    assert ServingConfig().service_monitor_wanted
    off = ServingConfig.from_configmap({"config.yaml": "metrics: {disablePrometheusOperatorSupport: true}"})
    assert not off.service_monitor_wanted and off.warnings == () and off.metrics_enabled
    assert not ServingConfig.from_configmap({"config.yaml": "metrics: {enabled: false}"}).service_monitor_wanted


def test_the_default_image_is_the_one_this_version_builds() -> None:
    import kserve_mesh

    assert ServingConfig().image == f"kserve-mesh:{kserve_mesh.__version__}"


# Every key of ModelMesh Serving's docs/configuration/README.md table and config-defaults.yaml, with
# a value a user would write; what we do with it.
UPSTREAM_KEYS = {
    "inferenceServiceName: mm": "honoured", "inferenceServicePort: 9033": "honoured",
    "storageSecretName: s": "honoured", "podsPerRuntime: 3": "honoured",
    "tls: {secretName: t, clientAuth: optional}": "honoured", "headlessService: false": "honoured",
    "enableAccessLogging: true": "no effect", "serviceAccountName: sa": "honoured",
    "metrics: {enabled: true, port: 2113, scheme: http, disablePrometheusOperatorSupport: true}": "honoured",
    "scaleToZero: {enabled: false, gracePeriodSeconds: 30}": "honoured",
    "grpcMaxMessageSizeBytes: 1024": "honoured", "restProxy: {enabled: true, port: 9008}": "honoured",
    "restProxy: {image: {name: kserve/rest-proxy, tag: latest}}": "no effect",
    "restProxy: {resources: {requests: {cpu: 50m}}}": "no effect",
    "runtimePodLabels: {a: b}": "honoured", "runtimePodAnnotations: {a: b}": "honoured",
    "imagePullSecrets: [{name: regcred}]": "honoured", "allowAnyPVC: true": "honoured",
    "modelMeshImage: {name: reg/mesh, tag: v1}": "honoured",
    "modelMeshResources: {requests: {cpu: 300m, memory: 448Mi}}": "honoured",
    "storageHelperImage: {name: kserve/modelmesh-runtime-adapter, tag: latest, command: [/opt/app/puller]}":
        "no effect",
    "storageHelperResources: {requests: {cpu: 50m}}": "no effect",
    "builtInServerTypes: [triton, mlserver]": "no effect",
    "internalModelMeshEnvVars: [{name: MM_X, value: '1'}]": "no effect",
    "payloadProcessors: http://sink/": "honoured",
}


@pytest.mark.parametrize(("text", "fate"), UPSTREAM_KEYS.items())
def test_every_documented_modelmesh_key_is_honoured_or_reported_as_without_effect(text: str, fate: str) -> None:
    c = ServingConfig.from_configmap({"config.yaml": text})
    reasons = {w.reason for w in c.warnings}
    assert UNKNOWN not in reasons and INVALID not in reasons, c.warnings
    if fate == "honoured":
        assert c.warnings == () and c != ServingConfig(), text
    else:
        assert reasons == {"ConfigKeyHasNoEffect"}, text
