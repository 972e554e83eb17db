"""KServe and ModelMesh resources: the kinds the mesh reads, and what each holds once parsed.

Kinds (group ``serving.kserve.io``):

- ``InferenceService`` v1beta1: ``spec.predictor.model{modelFormat{name,version}, runtime,
  storageUri | storage{key,path,parameters,schemaPath}, protocolVersion}``, or a legacy framework
  spec (``spec.predictor.sklearn`` etc. with ``storageUri``/``runtimeVersion``). Only those annotated
  ``serving.kserve.io/deploymentMode: ModelMesh`` are ours (``is_modelmesh``).
- ``Predictor`` v1alpha1 (ModelMesh's own): ``spec.modelType{name,version}, runtime{name}, path,
  schemaPath, storage{s3{secretKey,bucket}, persistentVolumeClaim, key, path, parameters, schemaPath},
  protocolVersion``.
- ``ServingRuntime`` / ``ClusterServingRuntime`` v1alpha1: ``supportedModelFormats[{name, version,
  autoSelect, priority}]``, ``multiModel``, ``protocolVersions``, ``disabled``, ``containers``,
  ``builtInAdapter``, ``grpcEndpoint``/``grpcDataEndpoint``, plus pod-level fields.

This module holds what they are once parsed (``parse.py`` reads and validates them). Both model
kinds boil down to one ``ModelSource``, which ``translate.py`` turns into a mesh model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GROUP = "serving.kserve.io"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
MODELMESH_MODE = "ModelMesh"
RUNTIME_ANNOTATION = "serving.kserve.io/servingRuntime"
SECRET_KEY_ANNOTATION = "serving.kserve.io/secretKey"
SCHEMA_PATH_ANNOTATION = "serving.kserve.io/schemaPath"
# Adaptive batching of a model (the built-in runtime's, issue 15): as KServe's predictor.batcher
# maxBatchSize / maxLatency, for resources without that field (a Predictor) or to set one of them.
MAX_BATCH_SIZE_ANNOTATION = "serving.kserve.io/max-batch-size"
MAX_BATCH_DELAY_ANNOTATION = "serving.kserve.io/max-batch-delay-ms"

PROTOCOLS = ("v1", "v2", "grpc-v1", "grpc-v2")
LEGACY_FRAMEWORKS = ("sklearn", "xgboost", "lightgbm", "tensorflow", "pytorch", "triton", "onnx", "pmml",
                     "paddle", "huggingface")
STORAGE_SCHEMES = ("s3", "gs", "pvc", "http", "https", "file")


# -- shared pieces -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ObjectMeta:
    name: str
    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    generation: int = 0
    uid: str = ""
    creation_timestamp: str = ""


@dataclass(frozen=True, slots=True)
class Batching:
    """A model's adaptive batching: rows per model call at most (0 or 1: off), the longest a
    request waits for others in ms; None: the runtime's default."""

    max_batch_size: int | None = None
    max_batch_delay_ms: int | float | None = None


@dataclass(frozen=True, slots=True)
class ModelFormat:
    name: str
    version: str | None = None


@dataclass(frozen=True, slots=True)
class ModelSource:
    """What a model resource asks for, whichever kind it came from.

    Exactly one of ``storage_uri`` / ``path`` is set. ``parameters`` are the storage parameters
    (``storage.parameters``; a Predictor's ``s3.bucket`` lands here as ``bucket``).
    """

    format: ModelFormat
    runtime: str | None = None
    protocol_version: str | None = None
    storage_uri: str | None = None
    path: str | None = None
    storage_key: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    schema_path: str | None = None
    runtime_version: str | None = None
    framework: str | None = None  # the legacy framework field used (``sklearn``), if any
    batching: Batching | None = None  # predictor.batcher and the batching annotations, if any


@dataclass(frozen=True, slots=True)
class InferenceService:
    meta: ObjectMeta
    model: ModelSource
    kind: str = "InferenceService"
    api_version: str = f"{GROUP}/v1beta1"


@dataclass(frozen=True, slots=True)
class Predictor:
    meta: ObjectMeta
    model: ModelSource
    kind: str = "Predictor"
    api_version: str = f"{GROUP}/v1alpha1"


@dataclass(frozen=True, slots=True)
class SupportedModelFormat:
    name: str
    version: str | None = None
    auto_select: bool = False
    priority: int | None = None


@dataclass(frozen=True, slots=True)
class ServingRuntime:
    """A ServingRuntime (``cluster=False``, namespaced) or ClusterServingRuntime (``cluster=True``)."""

    meta: ObjectMeta
    formats: tuple[SupportedModelFormat, ...]
    cluster: bool = False
    multi_model: bool = False
    protocol_versions: tuple[str, ...] = ("grpc-v2",)
    disabled: bool = False
    containers: tuple[Mapping[str, Any], ...] = ()
    built_in_adapter: Mapping[str, Any] | None = None
    grpc_endpoint: str | None = None
    grpc_data_endpoint: str | None = None
    http_data_endpoint: str | None = None
    spec_annotations: Mapping[str, str] = field(default_factory=dict)
    replicas: int | None = None

    @property
    def kind(self) -> str:
        return "ClusterServingRuntime" if self.cluster else "ServingRuntime"

    @property
    def name(self) -> str:
        return self.meta.name

    def annotation(self, name: str) -> str | None:
        """A runtime setting given as an annotation, on ``spec.annotations`` or ``metadata``."""
        return self.spec_annotations.get(name) or self.meta.annotations.get(name)


Resource = InferenceService | Predictor | ServingRuntime

# kind -> (accepted apiVersions, plural, aliases)
KINDS: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    "InferenceService": ((f"{GROUP}/v1beta1",), "inferenceservices", ("isvc", "isvcs", "inferenceservice")),
    "Predictor": ((f"{GROUP}/v1alpha1",), "predictors", ("predictor",)),
    "ServingRuntime": ((f"{GROUP}/v1alpha1",), "servingruntimes", ("servingruntime",)),
    "ClusterServingRuntime": ((f"{GROUP}/v1alpha1",), "clusterservingruntimes", ("clusterservingruntime",)),
}


def kind_of_plural(plural: str) -> str | None:
    """The kind named by a plural or alias (``isvc`` -> ``InferenceService``), or None."""
    wanted = plural.lower()
    for kind, (_, plur, aliases) in KINDS.items():
        if wanted == plur or wanted in aliases or wanted == kind.lower():
            return kind
    return None


def plural_of(kind: str) -> str:
    return KINDS[kind][1]


def is_namespaced(kind: str) -> bool:
    return kind != "ClusterServingRuntime"


def is_modelmesh(doc: Mapping[str, Any]) -> bool:
    """True for an InferenceService annotated ``serving.kserve.io/deploymentMode: ModelMesh``.

    Predictors are always ModelMesh's. Anything else is not ours: the controller leaves it alone.
    """
    if doc.get("kind") == "Predictor":
        return True
    meta = doc.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    return isinstance(annotations, dict) and annotations.get(DEPLOYMENT_MODE_ANNOTATION) == MODELMESH_MODE


def storage_scheme(uri: str) -> str:
    """The scheme of a storageUri (``""`` for a bare local path)."""
    head, sep, _ = uri.partition("://")
    return head.lower() if sep else ""
