"""Pure builders of the Kubernetes objects that run a ServingRuntime: its Deployment and the Service.

ModelMesh Serving runs every ServingRuntime in use as one Deployment, ``<service>-<runtime>``, whose
pods hold a mesh instance next to the runtime's own containers; one Service, ``modelmesh-serving``,
fronts every runtime pod of the namespace (instances forward to each other, so any pod will do).
We keep that shape:

- container ``mm``: ``kserve-mesh instance --runtime remote --runtime-address 127.0.0.1:<port>`` on
  the gRPC (8033), REST (8008) and metrics (2112) ports, with readiness/liveness probes on
  ``/v2/health/ready`` and ``/v2/health/live``; the store is etcd, the storage-config Secret is
  mounted for model pulls, and pulled models land on an emptyDir the runtime reads too. It binds
  0.0.0.0, so it authenticates callers (the namespace's auth Secret), and serves TLS when
  ``tls.secretName`` is set (``security.py``);
- the ServingRuntime's own ``spec.containers`` (its image, args, env, resources), with the shared
  models volume and the PVC claims mounted;
- ``terminationGracePeriodSeconds`` long enough for an instance to migrate its models away on
  shutdown (the instance does that on SIGTERM).

Scale to zero: a runtime no predictor uses keeps its replicas for the grace period of the config,
then goes to zero (:func:`desired_replicas`, pure: the caller passes ``now``).

Everything here is a function of its arguments: plain dicts in, plain dicts out; no client, no clock.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.kube.controller.deploy.config import ServingConfig
from kserve_mesh.kube.controller.deploy.security import (
    NO_INPUTS,
    PodInputs,
    health_probe,
    instance_mounts,
    instance_security_args,
    pod_annotations,
    pod_volumes,
    pvc_mounts,
)

GROUP = "serving.kserve.io"
RUNTIME_API_VERSION = f"{GROUP}/v1alpha1"
MANAGED_BY = "kserve-mesh-controller"
INSTANCE_CONTAINER = "mm"
MODELS_VOLUME = "models-dir"
MODELS_PATH = "/models"
STORAGE_CONFIG_VOLUME = "storage-config"
STORAGE_CONFIG_PATH = "/storage-config"
DEFAULT_RUNTIME_PORT = 8085
SHUTDOWN_MARGIN_S = 15
LABEL_RUNTIME = "modelmesh-serving.kserve.io/runtime"
LABEL_SERVICE = "modelmesh-service"
ANNOTATION_LAST_USED = "modelmesh-serving.kserve.io/runtime-unused-since"


class InvalidServingRuntime(InvalidArgument):
    """A ServingRuntime cannot be deployed as given; the message names the field."""


@dataclass(frozen=True)
class RuntimeRef:
    """Which runtime a Deployment runs: a namespaced ServingRuntime or a ClusterServingRuntime."""

    name: str
    kind: str  # "ServingRuntime" | "ClusterServingRuntime"
    uid: str = ""

    @classmethod
    def of(cls, runtime: Mapping[str, Any]) -> RuntimeRef:
        meta = runtime.get("metadata") or {}
        kind = runtime.get("kind") or "ServingRuntime"
        if kind not in ("ServingRuntime", "ClusterServingRuntime"):
            raise InvalidServingRuntime(f"kind must be ServingRuntime or ClusterServingRuntime, got {kind!r}")
        name = meta.get("name")
        if not name or not isinstance(name, str):
            raise InvalidServingRuntime(f"{kind} without metadata.name")
        return cls(name=name, kind=kind, uid=str(meta.get("uid") or ""))


def deployment_name(config: ServingConfig, runtime_name: str) -> str:
    """``modelmesh-serving-<runtime>``, ModelMesh Serving's name for a runtime's Deployment."""
    return f"{config.service_name}-{runtime_name}"


def common_labels(config: ServingConfig) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "kserve-mesh",
        LABEL_SERVICE: config.service_name,
    }


def runtime_address(spec: Mapping[str, Any]) -> str:
    """Where the instance reaches the runtime's ModelRuntime SPI inside the pod.

    ``spec.grpcEndpoint`` (``port:8085``, ModelMesh's field) names it; the built-in default is 8085.
    """
    endpoint = spec.get("grpcEndpoint")
    port = DEFAULT_RUNTIME_PORT
    if endpoint is not None:
        if not isinstance(endpoint, str):
            raise InvalidServingRuntime(f"spec.grpcEndpoint must be a string like 'port:8085', got {endpoint!r}")
        text = endpoint.removeprefix("port:")
        if text == endpoint or not text.isdigit() or not 0 < int(text) < 65536:
            raise InvalidServingRuntime(f"spec.grpcEndpoint must look like 'port:8085', got {endpoint!r}")
        port = int(text)
    return f"127.0.0.1:{port}"


def _instance_runtime_args(spec: Mapping[str, Any]) -> list[str]:
    adapter = spec.get("builtInAdapter")
    if adapter is not None:
        if not isinstance(adapter, Mapping) or not isinstance(adapter.get("serverType"), str):
            raise InvalidServingRuntime("spec.builtInAdapter.serverType must be a string")
        port = adapter.get("runtimeManagementPort", 8080)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise InvalidServingRuntime(f"spec.builtInAdapter.runtimeManagementPort must be a port, got {port!r}")
    # With a built-in adapter the adapter container listens on the runtime's grpcEndpoint (as in
    # ModelMesh), so the mesh talks to it the same way as to any ModelRuntime server.
    return ["--runtime", "remote", "--runtime-address", runtime_address(spec)]


ADAPTERS = ("mlserver", "triton")
"""The ``builtInAdapter.serverType`` values served (ModelMesh's names)."""
TRITON_BACKENDS = "python,onnxruntime,pytorch,tensorflow,tensorrt,openvino"
"""The backends of NVIDIA's tritonserver images (the ``-py3`` ones)."""


def adapter_containers(config: ServingConfig, spec: Mapping[str, Any],
                       inputs: PodInputs = NO_INPUTS) -> list[dict[str, Any]]:
    """The ModelRuntime adapter in front of a third-party server (``builtInAdapter``), if any.

    For ``serverType: mlserver`` it is ``python -m kserve_mesh.runtime.mlserver`` attached to the
    MLServer container: its gRPC on ``runtimeManagementPort`` and its REST on the next port (the
    ports ModelMesh's MLServer runtime uses: 8001 and 8002), its model repository under /models.
    For ``serverType: triton`` it is ``python -m kserve_mesh.runtime.triton`` attached to the Triton
    container (``--model-control-mode=explicit``, gRPC on ``runtimeManagementPort``, its model
    repository ``/models/_triton_models``), as ModelMesh's triton-adapter.
    """
    adapter = spec.get("builtInAdapter")
    if adapter is None:
        return []
    server = adapter.get("serverType")
    if server not in ADAPTERS:
        raise InvalidServingRuntime(f"spec.builtInAdapter.serverType '{server}' is not supported "
                                    f"(supported: {', '.join(ADAPTERS)})")
    grpc_port = adapter.get("runtimeManagementPort", 8001)
    listen = runtime_address(spec).rsplit(":", 1)[1]
    if server == "mlserver":
        attach = ["--attach-grpc", f"127.0.0.1:{grpc_port}", "--attach-http", f"http://127.0.0.1:{grpc_port + 1}",
                  "--attach-repository", f"{MODELS_PATH}/_mlserver_models"]
    else:
        attach = ["--attach-grpc", f"127.0.0.1:{grpc_port}", "--attach-repository", f"{MODELS_PATH}/_triton_models",
                  "--attach-backends", TRITON_BACKENDS, "--cache-dir", f"{MODELS_PATH}/_cache"]
    return [{
        "name": f"{server}-adapter",
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["python", "-m", f"kserve_mesh.runtime.{server}"],
        "args": ["--host", "127.0.0.1", "--port", listen, *attach, "--storage-config", STORAGE_CONFIG_PATH],
        "resources": copy.deepcopy(dict(config.instance_resources)),
        "volumeMounts": [{"name": MODELS_VOLUME, "mountPath": MODELS_PATH},
                         {"name": STORAGE_CONFIG_VOLUME, "mountPath": STORAGE_CONFIG_PATH, "readOnly": True},
                         *pvc_mounts(inputs.pvc_claims)],
    }]


def _str_map(spec: Mapping[str, Any], key: str) -> dict[str, str]:
    value = spec.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidServingRuntime(f"spec.{key} must map names to strings")
    return dict(value)


def _probe(config: ServingConfig, inputs: PodInputs, path: str, *, delay: int, period: int,
           failures: int) -> dict[str, Any]:
    return {
        **health_probe(config, inputs, path),
        "initialDelaySeconds": delay,
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def instance_container(config: ServingConfig, runtime: RuntimeRef, namespace: str,
                       spec: Mapping[str, Any], inputs: PodInputs = NO_INPUTS) -> dict[str, Any]:
    """The mesh instance (``kserve-mesh instance``) in front of the runtime containers."""
    args = [
        "instance", "--host", "0.0.0.0",
        "--grpc-port", str(config.grpc_port),
        "--rest-port", str(config.rest_port),
        "--metrics-port", str(config.metrics_port),
        *_instance_runtime_args(spec),
        "--storage-config", STORAGE_CONFIG_PATH,
        *instance_security_args(config, namespace, inputs),
    ]
    ports = [
        {"name": "grpc", "containerPort": config.grpc_port, "protocol": "TCP"},
        {"name": "http", "containerPort": config.rest_port, "protocol": "TCP"},
    ]
    if config.metrics_enabled:
        ports.append({"name": "prometheus", "containerPort": config.metrics_port, "protocol": "TCP"})
    env = [
        {"name": "KSERVE_MESH_NAMESPACE", "value": namespace},
        {"name": "KSERVE_MESH_INSTANCE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "KSERVE_MESH_ADVERTISE_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "KSERVE_MESH_ETCD_ENDPOINTS", "value": config.etcd_endpoints},
        {"name": "KSERVE_MESH_GRPC_MAX_MESSAGE_BYTES", "value": str(config.grpc_max_message_bytes)},
        {"name": "KSERVE_MESH_CACHE_DIR", "value": MODELS_PATH},
        # Drain (shutdown migration) ends before the kubelet's SIGKILL at the end of the grace period.
        {"name": "KSERVE_MESH_SHUTDOWN_GRACE_S",
         "value": str(max(0, config.termination_grace_seconds - SHUTDOWN_MARGIN_S))},
    ]
    if config.payload_processors:  # model-serving-config's payloadProcessors
        env.append({"name": "KSERVE_MESH_PAYLOAD_PROCESSORS", "value": config.payload_processors})
    max_loading = _str_map(spec, "annotations").get("maxLoadingConcurrency")
    if max_loading is not None:
        if not str(max_loading).isdigit() or int(max_loading) < 1:
            raise InvalidServingRuntime(
                f"spec.annotations.maxLoadingConcurrency must be a positive integer, got {max_loading!r}")
        args += ["--max-loading-concurrency", str(int(max_loading))]
    return {
        "name": INSTANCE_CONTAINER,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["kserve-mesh"],
        "args": args,
        "env": env,
        "ports": ports,
        "resources": copy.deepcopy(dict(config.instance_resources)),
        "readinessProbe": _probe(config, inputs, "/v2/health/ready", delay=2, period=5, failures=3),
        "livenessProbe": _probe(config, inputs, "/v2/health/live", delay=30, period=10, failures=6),
        "volumeMounts": [
            {"name": MODELS_VOLUME, "mountPath": MODELS_PATH},
            {"name": STORAGE_CONFIG_VOLUME, "mountPath": STORAGE_CONFIG_PATH, "readOnly": True},
            *instance_mounts(inputs),
        ],
    }


def runtime_containers(spec: Mapping[str, Any], inputs: PodInputs = NO_INPUTS) -> list[dict[str, Any]]:
    """The ServingRuntime's ``spec.containers``, each with the shared models volume and the
    storage-config Secret mounted (a runtime may pull models itself), and the PVC claims (a model on
    a PVC is read in place)."""
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise InvalidServingRuntime("spec.containers must list at least one container")
    out: list[dict[str, Any]] = []
    for i, container in enumerate(containers):
        if not isinstance(container, Mapping) or not container.get("name") or not container.get("image"):
            raise InvalidServingRuntime(f"spec.containers[{i}] needs a name and an image")
        if container["name"] == INSTANCE_CONTAINER:
            raise InvalidServingRuntime(f"spec.containers[{i}].name {INSTANCE_CONTAINER!r} is reserved")
        c = copy.deepcopy(dict(container))
        ours = pvc_mounts(inputs.pvc_claims)
        reserved = {MODELS_VOLUME, STORAGE_CONFIG_VOLUME, *(m["name"] for m in ours)}
        mounts = [m for m in c.get("volumeMounts") or [] if m.get("name") not in reserved]
        c["volumeMounts"] = [*mounts, {"name": MODELS_VOLUME, "mountPath": MODELS_PATH},
                             {"name": STORAGE_CONFIG_VOLUME, "mountPath": STORAGE_CONFIG_PATH, "readOnly": True},
                             *ours]
        out.append(c)
    return out


def owner_reference(runtime: RuntimeRef) -> list[dict[str, Any]]:
    """The runtime owns its Deployment (a cluster-scoped owner of a namespaced object is allowed).

    Without a uid (an object not yet stored) there can be no owner reference."""
    if not runtime.uid:
        return []
    return [{
        "apiVersion": RUNTIME_API_VERSION,
        "kind": runtime.kind,
        "name": runtime.name,
        "uid": runtime.uid,
        "controller": True,
        "blockOwnerDeletion": False,
    }]


def runtime_deployment(config: ServingConfig, runtime: Mapping[str, Any], namespace: str,
                       replicas: int, inputs: PodInputs = NO_INPUTS) -> dict[str, Any]:
    """The Deployment that runs ``runtime`` (a ServingRuntime or ClusterServingRuntime) in ``namespace``.

    ``inputs`` is what the controller checked in the namespace: the TLS Secret (None: no TLS, even
    when the config names one; the controller does not build a Deployment until it is usable) and
    the PVC claims. The auth Secret is mounted by its name (the controller makes it first)."""
    ref = RuntimeRef.of(runtime)
    spec = runtime.get("spec")
    if not isinstance(spec, Mapping):
        raise InvalidServingRuntime(f"{ref.kind} {ref.name}: spec must be a mapping")
    if replicas < 0:
        raise InvalidArgument(f"replicas must be >= 0, got {replicas}")
    name = deployment_name(config, ref.name)
    selector = {LABEL_SERVICE: config.service_name, "name": name}
    labels = {**common_labels(config), "name": name, LABEL_RUNTIME: ref.name}
    pod_labels = {**config.runtime_pod_labels, **_str_map(spec, "labels"), **labels}
    annotations = {**config.runtime_pod_annotations, **_str_map(spec, "annotations"), **pod_annotations(inputs)}
    if config.metrics_enabled:
        scheme = "https" if config.tls_metrics and inputs.tls is not None else "http"
        annotations.update({"prometheus.io/scrape": "true", "prometheus.io/port": str(config.metrics_port),
                                "prometheus.io/path": "/metrics", "prometheus.io/scheme": scheme})
    pod_spec: dict[str, Any] = {
        "containers": [instance_container(config, ref, namespace, spec, inputs),
                       *adapter_containers(config, spec, inputs), *runtime_containers(spec, inputs)],
        "terminationGracePeriodSeconds": config.termination_grace_seconds,
        "volumes": [
            {"name": MODELS_VOLUME, "emptyDir": {}},
            {"name": STORAGE_CONFIG_VOLUME,
             "secret": {"secretName": config.storage_secret_name, "optional": True}},
            *pod_volumes(config, inputs),
        ],
    }
    for key in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets"):
        if spec.get(key):
            pod_spec[key] = copy.deepcopy(spec[key])
    # model-serving-config's imagePullSecrets, after the runtime's own (each Secret once).
    pulls = list(pod_spec.get("imagePullSecrets") or [])
    named = {p.get("name") for p in pulls if isinstance(p, Mapping)}
    pulls += [{"name": n} for n in config.image_pull_secrets if n not in named]
    if pulls:
        pod_spec["imagePullSecrets"] = pulls
    if config.service_account_name:
        pod_spec["serviceAccountName"] = config.service_account_name
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": owner_reference(ref),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "75%", "maxUnavailable": "15%"}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }


def runtime_service(config: ServingConfig, namespace: str) -> dict[str, Any]:
    """The Service in front of every runtime pod of the namespace: gRPC, REST and metrics."""
    ports = [
        {"name": "grpc", "port": config.grpc_port, "targetPort": "grpc", "protocol": "TCP"},
        {"name": "http", "port": config.rest_port, "targetPort": "http", "protocol": "TCP"},
    ]
    if config.metrics_enabled:
        ports.append({"name": "prometheus", "port": config.metrics_port, "targetPort": "prometheus",
                      "protocol": "TCP"})
    spec: dict[str, Any] = {"selector": {LABEL_SERVICE: config.service_name}, "ports": ports, "type": "ClusterIP"}
    if config.headless_service:
        spec["clusterIP"] = "None"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": config.service_name, "namespace": namespace, "labels": common_labels(config)},
        "spec": spec,
    }


def desired_replicas(config: ServingConfig, runtime_spec: Mapping[str, Any], in_use: bool,
                     unused_since: float | None, now: float) -> int:
    """Replicas of a runtime's Deployment.

    In use (some predictor resolves to it), or scale to zero off: the runtime's ``spec.replicas``,
    else ``podsPerRuntime``. Unused: still that many until ``scaleToZero.gracePeriodSeconds`` have
    passed since it became unused (``unused_since``; None means "just now"), then 0.
    """
    replicas = runtime_spec.get("replicas")
    if replicas is None:
        full = config.pods_per_runtime
    elif isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise InvalidServingRuntime(f"spec.replicas must be an integer >= 0, got {replicas!r}")
    else:
        full = replicas
    if in_use or not config.scale_to_zero:
        return full
    since = now if unused_since is None else unused_since
    return full if now - since < config.scale_to_zero_grace_seconds else 0


def service_urls(config: ServingConfig, namespace: str, name: str) -> dict[str, str]:
    """The in-cluster URLs of an InferenceService served through the namespace's Service (REST over
    https when ``tls.secretName`` is set; gRPC URLs keep ModelMesh's ``grpc://`` either way)."""
    host = f"{config.service_name}.{namespace}"
    return {
        "grpcUrl": f"grpc://{host}:{config.grpc_port}",
        "restUrl": f"{'https' if config.tls_enabled else 'http'}://{host}:{config.rest_port}",
        "url": f"grpc://{host}:{config.grpc_port}",
    }
