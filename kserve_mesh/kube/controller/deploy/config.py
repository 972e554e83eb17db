"""The ``model-serving-config`` ConfigMap, typed: what every runtime Deployment of a namespace shares.

ModelMesh Serving reads one ConfigMap, ``model-serving-config``, whose ``config.yaml`` key overrides
its defaults (pods per runtime, ports, scale to zero, gRPC message size, ...). The controller reads
it once per reconcile and passes the frozen :class:`ServingConfig` to the pure builders in
``objects.py``. The keys keep ModelMesh's camelCase names so an existing ConfigMap works.

Every key either has an effect or is reported, and one bad key never costs the others: ModelMesh
keys whose job is done differently here (a REST proxy, a storage helper...) are accepted, and each
one whose value would ask for something we do not do becomes a :class:`ConfigWarning` naming the
key and why (``ConfigKeyHasNoEffect``); an unknown key is a warning too (``ConfigKeyUnknown``), and
a key with a bad value (``ConfigKeyInvalid``) keeps its default while every other key is used. The
controller posts each as a Warning Event on the ConfigMap and logs it. Only a ``config.yaml`` that
is not a YAML mapping at all is refused whole (:class:`InvalidServingConfig`; the last good config
stays). Keys are matched without regard to case, as ModelMesh Serving documents.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from kserve_mesh import __version__
from kserve_mesh.core.errors import InvalidArgument, MeshError
from kserve_mesh.core.payload_config import parse_payload_processors

CONFIGMAP_NAME = "model-serving-config"
CONFIGMAP_KEY = "config.yaml"
MiB = 1 << 20

TLS_CLIENT_AUTH = ("", "none", "optional", "require")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
METRICS_SCHEMES = ("http", "https")


def _always(_: Any) -> bool:
    return False


# ModelMesh Serving keys whose job is done differently here: accepted; (why it has no effect, and
# which values ask for nothing we fail to do, so that those values are not reported).
_NO_PROXY = "there is no REST proxy container: REST is served natively by the mesh container"
_NO_HELPER = "there is no storage helper container: the mesh container pulls models itself"
IGNORED_KEYS: Mapping[str, tuple[str, Callable[[Any], bool]]] = {
    "restProxy.enabled": (f"{_NO_PROXY} of every runtime pod, and cannot be turned off", lambda v: v is True),
    "restProxy.image": (_NO_PROXY, _always),
    "restProxy.resources": (f"{_NO_PROXY} (meshResources sizes it)", _always),
    "storageHelperImage": (_NO_HELPER, _always),
    "storageHelperResources": (f"{_NO_HELPER} (meshResources sizes it)", _always),
    "builtInServerTypes": ("each ServingRuntime's spec.builtInAdapter.serverType chooses its adapter "
                           + "(supported: mlserver, triton), not this list", _always),
    "internalModelMeshEnvVars": ("these are environment variables of ModelMesh's Java server; the mesh "
                                 + "container takes KSERVE_MESH_* settings", lambda v: v in (None, [], {})),
    "enableAccessLogging": ("there is no per-request access log", lambda v: v is False),
    "modelMeshImage.command": ("the mesh container always runs `kserve-mesh instance`", _always),
}


NO_EFFECT = "ConfigKeyHasNoEffect"
UNKNOWN = "ConfigKeyUnknown"
INVALID = "ConfigKeyInvalid"


@dataclass(frozen=True)
class ConfigWarning:
    """A key of the ConfigMap that has no effect (accepted but unused, unknown, or with a bad value
    whose default is used instead), and why; ``reason`` is the Event reason the controller posts."""

    key: str
    message: str
    reason: str = NO_EFFECT

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class InvalidServingConfig(InvalidArgument):
    """The model-serving-config ConfigMap has a bad key or value; the message names it."""


@dataclass(frozen=True)
class ServingConfig:
    """Settings shared by every runtime Deployment (ModelMesh's model-serving-config, typed)."""

    pods_per_runtime: int = 2
    """Replicas of each runtime Deployment in use (a ServingRuntime's ``spec.replicas`` wins)."""
    service_name: str = "modelmesh-serving"
    """Name of the Service in front of every runtime pod, and prefix of the Deployments."""
    headless_service: bool = True
    """A headless Service (clients spread requests over the pods themselves), as ModelMesh's default."""
    grpc_port: int = 8033
    """V2 gRPC + ModelMesh management gRPC port of each mesh instance (and of the Service)."""
    rest_port: int = 8008
    """V2 REST + management REST port of each mesh instance (and of the Service)."""
    metrics_port: int = 2112
    """Prometheus port of each mesh instance."""
    metrics_enabled: bool = True
    grpc_max_message_bytes: int = 16 * MiB
    """Largest gRPC message an instance accepts or sends."""
    scale_to_zero: bool = True
    """Scale a runtime's Deployment to 0 once no predictor uses it ..."""
    scale_to_zero_grace_seconds: float = 60.0
    """... for this long."""
    termination_grace_seconds: int = 90
    """Pod termination grace period: time for an instance to migrate its models before it exits."""
    etcd_endpoints: str = "http://etcd:2379"
    """etcd client URL(s), comma separated, for the mesh instances' shared store."""
    etcd_root_prefix: str = "kserve-mesh"
    """Key prefix of the mesh in etcd (each namespace gets its own root under it)."""
    storage_secret_name: str = "storage-config"
    """Secret with one JSON entry per storage key, mounted into every instance."""
    image: str = f"kserve-mesh:{__version__}"
    """Image of the mesh instance container (the image this version of the repository builds)."""
    image_pull_policy: str = "IfNotPresent"
    instance_resources: Mapping[str, Any] = field(default_factory=lambda: {
        "requests": {"cpu": "300m", "memory": "448Mi"}, "limits": {"cpu": "3", "memory": "448Mi"}})
    """Resources of the mesh instance container."""
    service_account_name: str = ""
    runtime_pod_labels: Mapping[str, str] = field(default_factory=dict)
    runtime_pod_annotations: Mapping[str, str] = field(default_factory=dict)
    tls_secret_name: str = ""
    """``tls.secretName``: a Secret (tls.crt, tls.key, optional ca.crt) in each served namespace that
    secures every port of the mesh and the links between its pods (mutual TLS); "" = plain text."""
    tls_client_auth: str = ""
    """``tls.clientAuth``: "" / "none" (peers' certificates are still checked when sent), "optional",
    or "require" (every client presents a certificate signed by the Secret's CA)."""
    allow_any_pvc: bool = False
    """``allowAnyPVC``: also mount the PVCs that the namespace's models name (pvc://claim/...),
    not only the claims named by ``pvc`` entries of the storage-config Secret."""
    metrics_scheme: str = "http"
    """``metrics.scheme``: https serves the metrics port over TLS (needs ``tls.secretName``)."""
    payload_processors: str = ""
    """``payloadProcessors``: http(s):// URLs (space-separated, or a YAML list) that receive every
    inference request and response as CloudEvents; ``?modelId=ID`` narrows one to a model or vmodel."""
    image_pull_secrets: tuple[str, ...] = ()
    """``imagePullSecrets``: Secrets (names) every runtime pod pulls its images with."""
    prometheus_operator: bool = True
    """Not ``metrics.disablePrometheusOperatorSupport``: the controller keeps a ServiceMonitor for
    each served namespace's Service when metrics are on and the Prometheus operator's CRD exists."""
    ignored_keys: tuple[str, ...] = ()
    """Keys of the ConfigMap that were accepted but are not used here."""
    warnings: tuple[ConfigWarning, ...] = ()
    """What the controller reports about this config: keys with no effect, and why."""

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_secret_name)

    @property
    def service_monitor_wanted(self) -> bool:
        """Whether a ServiceMonitor should exist (where the Prometheus operator's CRD does)."""
        return self.metrics_enabled and self.prometheus_operator

    @property
    def tls_metrics(self) -> bool:
        """Whether the metrics port is served over TLS (``metrics.scheme: https`` with TLS on)."""
        return self.tls_enabled and self.metrics_scheme == "https"

    @classmethod
    def from_configmap(cls, data: Mapping[str, str] | None) -> ServingConfig:
        """Read the ConfigMap's ``data`` (its ``config.yaml`` key); no ConfigMap means the defaults."""
        text = (data or {}).get(CONFIGMAP_KEY, "")
        if not text.strip():
            return cls()
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InvalidServingConfig(f"{CONFIGMAP_NAME}: {CONFIGMAP_KEY} is not valid YAML: {exc}") from exc
        if doc is None:
            return cls()
        if not isinstance(doc, dict):
            raise InvalidServingConfig(f"{CONFIGMAP_NAME}: {CONFIGMAP_KEY} must be a mapping")
        return cls.from_mapping(doc)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> ServingConfig:
        reader = _Reader(doc)
        d = cls()
        image_name = reader.text("modelMeshImage.name", "")
        image_tag = reader.text("modelMeshImage.tag", "")
        config = cls(
            pods_per_runtime=reader.integer("podsPerRuntime", d.pods_per_runtime, low=0),
            service_name=reader.text("inferenceServiceName", d.service_name),
            headless_service=reader.flag("headlessService", d.headless_service),
            grpc_port=reader.port("grpcPort", reader.port("inferenceServicePort", d.grpc_port)),
            rest_port=reader.port("restProxy.port", d.rest_port),
            metrics_port=reader.port("metrics.port", d.metrics_port),
            metrics_enabled=reader.flag("metrics.enabled", d.metrics_enabled),
            grpc_max_message_bytes=reader.integer("grpcMaxMessageSizeBytes", d.grpc_max_message_bytes, low=1),
            scale_to_zero=reader.flag("scaleToZero.enabled", d.scale_to_zero),
            scale_to_zero_grace_seconds=float(reader.integer("scaleToZero.gracePeriodSeconds", 60, low=0)),
            termination_grace_seconds=reader.integer("terminationGracePeriodSeconds",
                                                     d.termination_grace_seconds, low=0),
            etcd_endpoints=reader.text("etcdEndpoints", ",".join(reader.str_list("etcd.endpoints"))
                                       or d.etcd_endpoints),
            etcd_root_prefix=reader.text("etcd.rootPrefix", d.etcd_root_prefix),
            storage_secret_name=reader.text("storageSecretName", d.storage_secret_name),
            image=(f"{image_name}:{image_tag}" if image_name and image_tag else image_name or d.image),
            image_pull_policy=reader.choice("modelMeshImage.pullPolicy", d.image_pull_policy, PULL_POLICIES,
                                            fold=False),
            instance_resources=(reader.mapping("meshResources") or reader.mapping("modelMeshResources")
                                or d.instance_resources),
            service_account_name=reader.text("serviceAccountName", ""),
            runtime_pod_labels=reader.str_map("runtimePodLabels"),
            runtime_pod_annotations=reader.str_map("runtimePodAnnotations"),
            tls_secret_name=reader.text("tls.secretName", ""),
            tls_client_auth=reader.choice("tls.clientAuth", "", TLS_CLIENT_AUTH),
            allow_any_pvc=reader.flag("allowAnyPVC", d.allow_any_pvc),
            metrics_scheme=reader.choice("metrics.scheme", d.metrics_scheme, METRICS_SCHEMES),
            payload_processors=reader.payload_processors("payloadProcessors"),
            image_pull_secrets=reader.secret_names("imagePullSecrets"),
            prometheus_operator=not reader.flag("metrics.disablePrometheusOperatorSupport", False),
        )
        unknown = reader.unread()
        ignored: dict[str, None] = {}
        warnings = list(reader.problems)
        for key in unknown:
            prefix = next((i for i in IGNORED_KEYS if _is_under(key, i)), None)
            if prefix is None:
                warnings.append(ConfigWarning(key, "unknown key: not a model-serving-config setting, so it has no "
                                              "effect (the other keys are used)", UNKNOWN))
                continue
            ignored[prefix] = None
        warnings += [ConfigWarning(key, IGNORED_KEYS[key][0]) for key in ignored
                     if not IGNORED_KEYS[key][1](reader.peek(key))]
        warnings += _cross_field_warnings(config)
        return replace(config, ignored_keys=tuple(k for k in unknown if any(_is_under(k, i) for i in IGNORED_KEYS)),
                       warnings=tuple(warnings))


def _is_under(key: str, prefix: str) -> bool:
    key, prefix = key.lower(), prefix.lower()
    return key == prefix or key.startswith(prefix + ".")


def _cross_field_warnings(config: ServingConfig) -> list[ConfigWarning]:
    out = []
    if not config.prometheus_operator and not config.metrics_enabled:
        out.append(ConfigWarning("metrics.disablePrometheusOperatorSupport", "has no effect with metrics.enabled "
                                 "false (no ServiceMonitor is made without metrics anyway)"))
    if config.tls_client_auth not in ("", "none") and not config.tls_enabled:
        out.append(ConfigWarning("tls.clientAuth", "has no effect without tls.secretName (no TLS, so no client "
                                 "certificates)"))
    if config.metrics_scheme == "https" and not config.tls_enabled:
        out.append(ConfigWarning("metrics.scheme", "https needs tls.secretName (the certificate to serve); "
                                 "metrics are served over http"))
    return out


class _Reader:
    """Reads dotted keys (any case) from a nested mapping, checks types, and remembers what it read.

    A bad value is not raised: it becomes a ``ConfigKeyInvalid`` warning in ``problems`` naming the
    key, what it must be and the default used instead, so one bad key never drops the others."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self._doc = doc
        self._read: set[str] = set()
        self.problems: list[ConfigWarning] = []

    def _get(self, key: str) -> Any:
        self._read.add(key)
        node: Any = self._doc
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, Mapping):
                where = ".".join(parts[:i])
                self._read.add(where)  # reported here, not again as an unknown key
                if not any(p.key == where for p in self.problems):
                    self.problems.append(ConfigWarning(where, f"must be a mapping, got {node!r}; its keys "
                                                       "take their defaults", INVALID))
                return None
            node = _child(node, part)
            if node is _MISSING:
                return None
        return node

    def _invalid(self, key: str, want: str, value: Any, default: Any) -> Any:
        shown = "none" if default in ("", None, (), {}) else repr(default)
        self.problems.append(ConfigWarning(key, f"must be {want}, got {value!r}; the default ({shown}) is used "
                                           "instead", INVALID))
        return default

    def integer(self, key: str, default: int, low: int | None = None) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            return self._invalid(key, "an integer", value, default)
        if low is not None and value < low:
            return self._invalid(key, f"an integer >= {low}", value, default)
        return value

    def port(self, key: str, default: int) -> int:
        value = self.integer(key, default, low=1)
        if value > 65535:
            return self._invalid(key, "a port (1-65535)", value, default)
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            return self._invalid(key, "true or false", value, default)
        return value

    def peek(self, key: str) -> Any:
        """The value at ``key`` without marking it read (None when absent)."""
        node: Any = self._doc
        for part in key.split("."):
            if not isinstance(node, Mapping):
                return None
            node = _child(node, part)
            if node is _MISSING:
                return None
        return node

    def choice(self, key: str, default: str, allowed: tuple[str, ...], fold: bool = True) -> str:
        value = self.text(key, default)
        if (value.lower() if fold else value) not in allowed:
            return self._invalid(key, "one of " + ", ".join(repr(a) for a in allowed if a), value, default)
        return value.lower() if fold else value

    def text(self, key: str, default: str) -> str:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            return self._invalid(key, "a string", value, default)
        return value

    def mapping(self, key: str) -> Mapping[str, Any] | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            return self._invalid(key, "a mapping", value, None)
        self._read.update(f"{key}.{k}" for k in _leaves(value))
        return value

    def str_map(self, key: str) -> dict[str, str]:
        value = self.mapping(key) or {}
        bad = [k for k, v in value.items() if not isinstance(v, str)]
        if bad:
            return self._invalid(f"{key}.{bad[0]}", "a string (every value of the map is dropped)",
                                 value[bad[0]], {})
        return dict(value)

    def payload_processors(self, key: str) -> str:
        """Sink URLs, space-separated text or a list of them, checked as the mesh will read them."""
        value = self._get(key)
        if value is None:
            return ""
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = " ".join(value)
        if not isinstance(value, str):
            return self._invalid(key, "space-separated http(s):// URLs or a list of them", value, "")
        try:
            parse_payload_processors(value)
        except MeshError as exc:
            self.problems.append(ConfigWarning(key, f"{exc.message}; no payload processor is used", INVALID))
            return ""
        return " ".join(value.split())

    def str_list(self, key: str) -> list[str]:
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return self._invalid(key, "a list of strings", value, [])
        return list(value)

    def secret_names(self, key: str) -> tuple[str, ...]:
        """``imagePullSecrets``: a list of ``{name: ...}`` (Kubernetes' LocalObjectReference, as
        ModelMesh Serving takes it) or of plain names."""
        value = self._get(key)
        if value is None:
            return ()
        names = []
        for item in value if isinstance(value, list) else [None]:
            name = item.get("name") if isinstance(item, Mapping) and set(item) == {"name"} else item
            if not isinstance(name, str) or not _DNS_NAME.fullmatch(name):
                return self._invalid(key, "a list of Secret names ({name: my-secret} or my-secret)", value, ())
            names.append(name)
        return tuple(dict.fromkeys(names))

    def unread(self) -> list[str]:
        return sorted(k for k in _leaves(self._doc) if not self._covered(k))

    def _covered(self, key: str) -> bool:
        return any(_is_under(key, r) for r in self._read)


_MISSING = object()
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def _child(node: Mapping[str, Any], part: str) -> Any:
    """``node[part]``, the key matched without regard to case (ModelMesh's keys are case-insensitive)."""
    if part in node:
        return node[part]
    lowered = part.lower()
    return next((v for k, v in node.items() if isinstance(k, str) and k.lower() == lowered), _MISSING)


def _leaves(doc: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for k, v in doc.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.extend(_leaves(v, path + "."))
        else:
            out.append(path)
    return out
