"""KServe and ModelMesh resources, read and validated field by field (``resources.py`` says which).

``parse(doc)`` takes one decoded YAML/JSON document of any supported kind and returns its typed
resource. Every parser refuses unknown fields and wrong types with an ``InvalidSpec`` naming the
field path; pod/container fields that ModelMesh ignores (resources, replicas, ...) are accepted and
ignored.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from kserve_mesh.core.batching import MAX_BATCH_DELAY_MS_LIMIT, MAX_BATCH_SIZE_LIMIT
from kserve_mesh.kube.core import schema as s
from kserve_mesh.kube.core.errors import InvalidSpec
from kserve_mesh.kube.core.resources import (
    DEPLOYMENT_MODE_ANNOTATION,
    KINDS,
    LEGACY_FRAMEWORKS,
    MAX_BATCH_DELAY_ANNOTATION,
    MAX_BATCH_SIZE_ANNOTATION,
    MODELMESH_MODE,
    PROTOCOLS,
    RUNTIME_ANNOTATION,
    SCHEMA_PATH_ANNOTATION,
    SECRET_KEY_ANNOTATION,
    STORAGE_SCHEMES,
    Batching,
    InferenceService,
    ModelFormat,
    ModelSource,
    ObjectMeta,
    Predictor,
    Resource,
    ServingRuntime,
    SupportedModelFormat,
    storage_scheme,
)

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SCHEME_NO_SLASHES = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:(?!//)")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

_META_FIELDS = ("name", "namespace", "labels", "annotations", "generation", "uid", "resourceVersion",
                "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "finalizers",
                "ownerReferences", "managedFields", "generateName", "selfLink")
_CONTAINER_FIELDS = ("name", "image", "command", "args", "workingDir", "ports", "envFrom", "env", "resources",
                     "resizePolicy", "restartPolicy", "volumeMounts", "volumeDevices", "livenessProbe",
                     "readinessProbe", "startupProbe", "lifecycle", "terminationMessagePath",
                     "terminationMessagePolicy", "imagePullPolicy", "securityContext", "stdin", "stdinOnce", "tty")
_POD_FIELDS = ("volumes", "initContainers", "ephemeralContainers", "restartPolicy",
               "terminationGracePeriodSeconds", "activeDeadlineSeconds", "dnsPolicy", "nodeSelector",
               "serviceAccountName", "serviceAccount", "automountServiceAccountToken", "nodeName", "hostNetwork",
               "hostPID", "hostIPC", "shareProcessNamespace", "securityContext", "imagePullSecrets", "hostname",
               "subdomain", "affinity", "schedulerName", "tolerations", "hostAliases", "priorityClassName",
               "priority", "dnsConfig", "readinessGates", "runtimeClassName", "enableServiceLinks",
               "preemptionPolicy", "overhead", "topologySpreadConstraints", "setHostnameAsFQDN", "os", "hostUsers",
               "schedulingGates", "resourceClaims", "resources")
_COMPONENT_EXTENSION_FIELDS = ("minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType",
                               "containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher",
                               "labels", "annotations", "deploymentStrategy", "autoScaling", "workerSpec")
_EXTENSION_FIELDS = ("storageUri", "runtimeVersion", "protocolVersion", "storage")
_STORAGE_FIELDS = ("key", "path", "parameters", "schemaPath")


# -- entry point ---------------------------------------------------------------------------------

def parse(doc: Any, *, default_namespace: str = "default") -> Resource:
    """Parse and validate one decoded document of any supported kind."""
    obj = s.mapping(doc, "")
    kind = s.req_str(obj, "kind", "")
    if kind not in KINDS:
        raise InvalidSpec("kind", f"unsupported kind '{kind}' (supported: {', '.join(KINDS)})")
    api_version = s.req_str(obj, "apiVersion", "")
    if api_version not in KINDS[kind][0]:
        raise InvalidSpec("apiVersion", f"{kind} must be {' or '.join(KINDS[kind][0])}, got '{api_version}'")
    s.mapping(obj, "", ("apiVersion", "kind", "metadata", "spec", "status"))
    meta = _meta(obj, kind, default_namespace)
    if kind == "InferenceService":
        return _isvc(obj, meta)
    if kind == "Predictor":
        return _predictor(obj, meta)
    return _runtime(obj, meta, cluster=kind == "ClusterServingRuntime")


def _meta(obj: Mapping[str, Any], kind: str, default_namespace: str) -> ObjectMeta:
    if obj.get("metadata") is None:
        raise InvalidSpec("metadata", "is required")
    meta = s.mapping(obj["metadata"], "metadata", _META_FIELDS)
    name = s.req_str(meta, "name", "metadata")
    pattern, what = (_SUBDOMAIN, "a DNS-1123 subdomain") if kind.endswith("ServingRuntime") else (
        _LABEL, "a DNS-1123 label")
    if len(name) > (253 if pattern is _SUBDOMAIN else 63) or not pattern.match(name):
        raise InvalidSpec("metadata.name", f"'{name}' must be {what} (lower-case letters, digits, '-')")
    namespace = s.opt_str(meta, "namespace", "metadata")
    if kind == "ClusterServingRuntime":
        if namespace:
            raise InvalidSpec("metadata.namespace", "a ClusterServingRuntime is cluster-scoped: no namespace")
        namespace = ""
    else:
        namespace = namespace or default_namespace
        if len(namespace) > 63 or not _LABEL.match(namespace):
            raise InvalidSpec("metadata.namespace", f"'{namespace}' must be a DNS-1123 label")
    generation = s.opt_int(meta, "generation", "metadata") or 0
    return ObjectMeta(
        name=name, namespace=namespace,
        labels=s.opt_str_map(meta, "labels", "metadata") or {},
        annotations=s.opt_str_map(meta, "annotations", "metadata") or {},
        generation=generation,
        uid=s.opt_str(meta, "uid", "metadata") or "",
        creation_timestamp=str(meta.get("creationTimestamp") or ""),
    )


# -- InferenceService ----------------------------------------------------------------------------

def _isvc(obj: Mapping[str, Any], meta: ObjectMeta) -> InferenceService:
    if meta.annotations.get(DEPLOYMENT_MODE_ANNOTATION) != MODELMESH_MODE:
        raise InvalidSpec(f"metadata.annotations.{DEPLOYMENT_MODE_ANNOTATION}",
                          f"must be '{MODELMESH_MODE}' for an InferenceService served by the mesh")
    if obj.get("spec") is None:
        raise InvalidSpec("spec", "is required")
    spec = s.mapping(obj["spec"], "spec", ("predictor", "transformer", "explainer"))
    if spec.get("predictor") is None:
        raise InvalidSpec("spec.predictor", "is required")
    path = "spec.predictor"
    allowed = ("model", "containers", *LEGACY_FRAMEWORKS, *_COMPONENT_EXTENSION_FIELDS, *_POD_FIELDS)
    pred = s.mapping(spec["predictor"], path, allowed)
    if pred.get("containers") is not None:
        raise InvalidSpec(f"{path}.containers", "custom predictor containers are not supported in ModelMesh "
                                                "mode; use predictor.model with a ServingRuntime")
    frameworks = [f for f in LEGACY_FRAMEWORKS if pred.get(f) is not None]
    runtime_annotation = meta.annotations.get(RUNTIME_ANNOTATION)
    if pred.get("model") is not None:
        if frameworks:
            raise InvalidSpec(f"{path}.{frameworks[0]}", "cannot be combined with predictor.model")
        if runtime_annotation is not None:
            raise InvalidSpec(f"metadata.annotations.{RUNTIME_ANNOTATION}",
                              "cannot be combined with predictor.model (use predictor.model.runtime)")
        mpath = f"{path}.model"
        model = s.mapping(pred["model"], mpath, ("modelFormat", "runtime", *_EXTENSION_FIELDS, *_CONTAINER_FIELDS))
        fmt_obj = s.opt_mapping(model, "modelFormat", mpath, ("name", "version"))
        if fmt_obj is None:
            raise InvalidSpec(f"{mpath}.modelFormat", "is required")
        fmt = ModelFormat(s.req_str(fmt_obj, "name", f"{mpath}.modelFormat"),
                          _version(fmt_obj, f"{mpath}.modelFormat"))
        runtime = s.opt_str(model, "runtime", mpath) or None
        return InferenceService(meta, _with_batching(_extension(model, mpath, fmt, runtime, None, meta), pred, meta))
    if not frameworks:
        raise InvalidSpec(f"{path}.model", "is required (or a framework spec such as predictor.sklearn)")
    if len(frameworks) > 1:
        raise InvalidSpec(f"{path}.{frameworks[1]}", f"only one framework spec is allowed, "
                                                     f"found {', '.join(frameworks)}")
    name = frameworks[0]
    fpath = f"{path}.{name}"
    framework = s.mapping(pred[name], fpath, (*_EXTENSION_FIELDS, *_CONTAINER_FIELDS))
    source = _extension(framework, fpath, ModelFormat(name), runtime_annotation or None, name, meta)
    return InferenceService(meta, _with_batching(source, pred, meta))


def _with_batching(source: ModelSource, pred: Mapping[str, Any] | None, meta: ObjectMeta) -> ModelSource:
    """KServe's ``predictor.batcher`` (``maxBatchSize``, ``maxLatency`` in ms; ``timeout`` is its
    sidecar's and ignored), then the batching annotations for what the field leaves unset."""
    size: int | None = None
    delay: int | float | None = None
    batcher = s.opt_mapping(pred, "batcher", "spec.predictor", ("maxBatchSize", "maxLatency", "timeout")) \
        if pred is not None else None
    if batcher is not None:
        bpath = "spec.predictor.batcher"
        size = _batch_size(s.opt_int(batcher, "maxBatchSize", bpath), f"{bpath}.maxBatchSize")
        delay = _batch_delay(batcher.get("maxLatency"), f"{bpath}.maxLatency")
        s.opt_int(batcher, "timeout", bpath)
    annotations = meta.annotations
    if size is None and MAX_BATCH_SIZE_ANNOTATION in annotations:
        where = f"metadata.annotations.{MAX_BATCH_SIZE_ANNOTATION}"
        text = annotations[MAX_BATCH_SIZE_ANNOTATION].strip()
        if not text.isdigit():
            raise InvalidSpec(where, f"must be an integer from 0 (off) to {MAX_BATCH_SIZE_LIMIT}, got '{text[:50]}'")
        size = _batch_size(int(text), where)
    if delay is None and MAX_BATCH_DELAY_ANNOTATION in annotations:
        where = f"metadata.annotations.{MAX_BATCH_DELAY_ANNOTATION}"
        text = annotations[MAX_BATCH_DELAY_ANNOTATION].strip()
        try:
            number = float(text)
        except ValueError:
            raise InvalidSpec(where, f"must be a number of milliseconds from 0 to {MAX_BATCH_DELAY_MS_LIMIT}, "
                                     f"got '{text[:50]}'") from None
        delay = _batch_delay(int(number) if number.is_integer() else number, where)
    if size is None and delay is None:
        return source
    return dataclasses.replace(source, batching=Batching(size, delay))


def _batch_size(value: int | None, where: str) -> int | None:
    if value is not None and not 0 <= value <= MAX_BATCH_SIZE_LIMIT:
        raise InvalidSpec(where, f"must be an integer from 0 (off) to {MAX_BATCH_SIZE_LIMIT}, got {value}")
    return value


def _batch_delay(value: Any, where: str) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_BATCH_DELAY_MS_LIMIT:
        raise InvalidSpec(where, f"must be a number of milliseconds from 0 to {MAX_BATCH_DELAY_MS_LIMIT}, "
                                 f"got {value!r}"[:200])
    return value


def _version(obj: Mapping[str, Any], path: str) -> str | None:
    value = obj.get("version")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidSpec(f"{path}.version", "must be a string")
    return str(value) or None


def _extension(obj: Mapping[str, Any], path: str, fmt: ModelFormat, runtime: str | None,
               framework: str | None, meta: ObjectMeta) -> ModelSource:
    protocol = _protocol(s.opt_str(obj, "protocolVersion", path), f"{path}.protocolVersion")
    storage_uri = s.opt_str(obj, "storageUri", path)
    storage = s.opt_mapping(obj, "storage", path, _STORAGE_FIELDS)
    storage_path = key = schema_path = None
    params: dict[str, str] = {}
    if storage is not None:
        spath = f"{path}.storage"
        storage_path = s.opt_str(storage, "path", spath)
        key = s.opt_str(storage, "key", spath) or None
        params = s.opt_str_map(storage, "parameters", spath) or {}
        schema_path = s.opt_str(storage, "schemaPath", spath) or None
    _one_location(storage_uri, storage_path, path)
    if storage_uri is not None:
        check_storage_uri(storage_uri, f"{path}.storageUri")
    key = key or meta.annotations.get(SECRET_KEY_ANNOTATION) or None
    schema_path = schema_path or meta.annotations.get(SCHEMA_PATH_ANNOTATION) or None
    return ModelSource(fmt, runtime, protocol, storage_uri or None, storage_path or None, key, params, schema_path,
                       s.opt_str(obj, "runtimeVersion", path) or None, framework)


def _one_location(storage_uri: str | None, storage_path: str | None, path: str) -> None:
    has_uri, has_path = bool(storage_uri and storage_uri.strip()), bool(storage_path and storage_path.strip())
    if has_uri == has_path:
        field_path = f"{path}.storageUri" if not has_path else f"{path}.storage.path"
        what = "both given" if has_uri else "neither given"
        raise InvalidSpec(field_path, f"exactly one of storageUri or storage.path is required ({what})")


def _protocol(value: str | None, path: str) -> str | None:
    if value is None or value == "":
        return None
    if value not in PROTOCOLS:
        raise InvalidSpec(path, f"'{value}' is not a protocol version (one of {', '.join(PROTOCOLS)})")
    return value


def check_storage_uri(uri: str, path: str) -> None:
    scheme = storage_scheme(uri)
    if not scheme:
        if _SCHEME_NO_SLASHES.match(uri):
            raise InvalidSpec(path, f"'{uri}' looks like a URI without '//' (e.g. s3://bucket/path)")
        return  # a local path (standalone convenience, like file://); a relative one is from the mesh's cwd
    if scheme not in STORAGE_SCHEMES:
        raise InvalidSpec(path, f"unsupported storage scheme '{scheme}://' (supported: "
                                f"{', '.join(f'{x}://' for x in STORAGE_SCHEMES)})")
    rest = uri.split("://", 1)[1]
    if scheme in ("s3", "gs", "pvc") and not rest.split("/", 1)[0]:
        what = "claim name" if scheme == "pvc" else "bucket"
        raise InvalidSpec(path, f"'{uri}' has no {what}")
    if scheme in ("http", "https") and not rest.split("/", 1)[0]:
        raise InvalidSpec(path, f"'{uri}' has no host")


# -- Predictor (ModelMesh v1alpha1) --------------------------------------------------------------

def _predictor(obj: Mapping[str, Any], meta: ObjectMeta) -> Predictor:
    if obj.get("spec") is None:
        raise InvalidSpec("spec", "is required")
    path = "spec"
    spec = s.mapping(obj["spec"], path, ("serviceAccountName", "modelType", "path", "schemaPath", "storage", "gpu",
                                         "runtime", "protocolVersion"))
    mt = s.opt_mapping(spec, "modelType", path, ("name", "version"))
    if mt is None:
        raise InvalidSpec("spec.modelType", "is required")
    fmt = ModelFormat(s.req_str(mt, "name", "spec.modelType"), _version(mt, "spec.modelType"))
    rt = s.opt_mapping(spec, "runtime", path, ("name",))
    runtime = s.req_str(rt, "name", "spec.runtime") if rt is not None else None
    gpu = s.opt_str(spec, "gpu", path)
    if gpu is not None and gpu not in ("required", "preferred"):
        raise InvalidSpec("spec.gpu", f"must be 'required' or 'preferred', got '{gpu}'")
    protocol = _protocol(s.opt_str(spec, "protocolVersion", path), "spec.protocolVersion")
    model_path = s.opt_str(spec, "path", path) or None
    schema_path = s.opt_str(spec, "schemaPath", path) or None
    key = None
    params: dict[str, str] = {}
    storage = s.opt_mapping(spec, "storage", path, (*_STORAGE_FIELDS, "s3", "persistentVolumeClaim"))
    if storage is not None:
        spath = "spec.storage"
        s3 = s.opt_mapping(storage, "s3", spath, ("secretKey", "bucket"))
        pvc = s.opt_mapping(storage, "persistentVolumeClaim", spath, ("claimName", "readOnly"))
        newer = [f for f in _STORAGE_FIELDS if storage.get(f) is not None]
        if (s3 is not None or pvc is not None) and newer:
            old = "s3" if s3 is not None else "persistentVolumeClaim"
            raise InvalidSpec(f"{spath}.{old}", f"(deprecated) cannot be combined with storage.{newer[0]}")
        if s3 is not None and pvc is not None:
            raise InvalidSpec(f"{spath}.persistentVolumeClaim", "cannot be combined with storage.s3")
        if s3 is not None:
            key = s.req_str(s3, "secretKey", f"{spath}.s3")
            bucket = s.opt_str(s3, "bucket", f"{spath}.s3")
            if bucket:
                params["bucket"] = bucket
        elif pvc is not None:
            params = {"type": "pvc", "name": s.req_str(pvc, "claimName", f"{spath}.persistentVolumeClaim")}
        else:
            storage_path = s.opt_str(storage, "path", spath) or None
            if storage_path is not None and model_path is not None:
                raise InvalidSpec(f"{spath}.path", "cannot be combined with spec.path")
            model_path = model_path or storage_path
            key = s.opt_str(storage, "key", spath) or None
            params = s.opt_str_map(storage, "parameters", spath) or {}
            schema_path = schema_path or s.opt_str(storage, "schemaPath", spath) or None
    if not model_path:
        raise InvalidSpec("spec.path", "is required (spec.path or spec.storage.path)")
    return Predictor(meta, _with_batching(ModelSource(fmt, runtime, protocol, None, model_path, key, params,
                                                      schema_path), None, meta))


# -- ServingRuntime / ClusterServingRuntime ------------------------------------------------------

_RUNTIME_FIELDS = ("supportedModelFormats", "multiModel", "disabled", "protocolVersions", "containers",
                   "builtInAdapter", "grpcEndpoint", "grpcDataEndpoint", "httpDataEndpoint", "replicas",
                   "storageHelper", "labels", "annotations", "workerSpec", "imagePullSecrets",
                   "nodeSelector", "affinity", "tolerations", "volumes", "hostIPC")
_ADAPTER_FIELDS = ("serverType", "runtimeManagementPort", "memBufferBytes", "modelLoadingTimeoutMillis", "env")


def _runtime(obj: Mapping[str, Any], meta: ObjectMeta, *, cluster: bool) -> ServingRuntime:
    if obj.get("spec") is None:
        raise InvalidSpec("spec", "is required")
    spec = s.mapping(obj["spec"], "spec", _RUNTIME_FIELDS)
    formats: list[SupportedModelFormat] = []
    for i, item in enumerate(s.opt_list(spec, "supportedModelFormats", "spec") or []):
        fpath = f"spec.supportedModelFormats[{i}]"
        f = s.mapping(item, fpath, ("name", "version", "autoSelect", "priority"))
        priority = s.opt_int(f, "priority", fpath)
        if priority is not None and priority < 1:
            raise InvalidSpec(f"{fpath}.priority", f"must be a positive integer, got {priority}")
        formats.append(SupportedModelFormat(s.req_str(f, "name", fpath), _version(f, fpath),
                                            bool(s.opt_bool(f, "autoSelect", fpath)), priority))
    _check_priorities(formats)
    protocols = tuple(s.opt_str_list(spec, "protocolVersions", "spec") or ("grpc-v2",))
    for i, p in enumerate(protocols):
        _protocol(p, f"spec.protocolVersions[{i}]")
    containers: list[Mapping[str, Any]] = []
    for i, item in enumerate(s.opt_list(spec, "containers", "spec") or []):
        c = s.mapping(item, f"spec.containers[{i}]", _CONTAINER_FIELDS)
        s.req_str(c, "name", f"spec.containers[{i}]")
        containers.append(c)
    adapter = s.opt_mapping(spec, "builtInAdapter", "spec", _ADAPTER_FIELDS)
    if adapter is not None:
        for name in ("runtimeManagementPort", "memBufferBytes", "modelLoadingTimeoutMillis"):
            s.opt_int(adapter, name, "spec.builtInAdapter")
        s.opt_str(adapter, "serverType", "spec.builtInAdapter")
    replicas = s.opt_int(spec, "replicas", "spec")
    if replicas is not None and replicas < 0:
        raise InvalidSpec("spec.replicas", "must not be negative")
    return ServingRuntime(
        meta=meta, formats=tuple(formats), cluster=cluster,
        multi_model=bool(s.opt_bool(spec, "multiModel", "spec")),
        protocol_versions=protocols,
        disabled=bool(s.opt_bool(spec, "disabled", "spec")),
        containers=tuple(containers), built_in_adapter=adapter,
        grpc_endpoint=s.opt_str(spec, "grpcEndpoint", "spec"),
        grpc_data_endpoint=s.opt_str(spec, "grpcDataEndpoint", "spec"),
        http_data_endpoint=s.opt_str(spec, "httpDataEndpoint", "spec"),
        spec_annotations=s.opt_str_map(spec, "annotations", "spec") or {},
        replicas=replicas,
    )


def _check_priorities(formats: list[SupportedModelFormat]) -> None:
    """KServe's rule: one format name (and version) may not be listed twice with auto-select priorities."""
    seen: dict[tuple[str, str | None], int] = {}
    for i, f in enumerate(formats):
        if not f.auto_select or f.priority is None:
            continue
        ident = (f.name.lower(), f.version)
        if ident in seen:
            raise InvalidSpec(f"spec.supportedModelFormats[{i}]",
                              f"format '{f.name}' is already listed with a priority at index {seen[ident]}")
        seen[ident] = i
