"""InferenceService / Predictor -> what the mesh registers (pure).

One vmodel per resource, named after it, owned by ``isvc`` (InferenceService) or ``ksp``
(Predictor), as modelmesh-serving did. Its target is a concrete model
``<name>__<owner>-<10 hex of a SHA-1 of the model spec>``: a changed spec is a new model, and the
vmodel moves to it without downtime; an unchanged spec re-applies as a no-op.

``modelInfo`` is what ModelMesh-serving sent and the runtimes here accept
(``runtime/builtin/models.py resolve_model_spec``, ``storage/modelkey.py``):

- ``type``: the model format name (``sklearn``) when the runtime was chosen automatically, or
  ``rt:<runtime>`` when the resource names its runtime (the format is then read from the key);
- ``path``: the path inside the storage (``s3://bucket/a/b`` -> ``a/b``); a local path as
  ``file://...`` (a relative one stays relative to the runtime's working folder); empty for a
  plain HTTP URL, whose ``url`` goes into the parameters;
- ``key``: JSON ``{"storage_key", "storage_params", "model_type": {name, version}, "schema_path",
  "batching"}``; the storageUri's own parameters (``type``, ``bucket``, ``name``, ``url``...)
  override ``storage.parameters``, and ``storage_key`` is left out when none is given (the
  ``storage-config`` entry ``default`` then applies). ``batching`` (``max_batch_size``,
  ``max_batch_delay_ms``: the built-in runtime's adaptive batching) comes from KServe's
  ``predictor.batcher`` (``maxBatchSize``, ``maxLatency``) or the annotations
  ``serving.kserve.io/max-batch-size`` / ``serving.kserve.io/max-batch-delay-ms``; left out when
  neither is given (the runtime's defaults apply), so existing models keep their ids.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from kserve_mesh.core.records import ModelInfo
from kserve_mesh.kube.core.resources import InferenceService, ModelSource, Predictor, ServingRuntime, storage_scheme
from kserve_mesh.kube.core.runtimes import select_runtime

OWNER_ISVC = "isvc"
OWNER_PREDICTOR = "ksp"
AZURE_BLOB_HOST_SUFFIX = ".blob.core.windows.net"


@dataclass(frozen=True, slots=True)
class MeshModelSpec:
    """A resource as the mesh sees it: ``setVModel(vmodel_id, owner, target=model_id, modelInfo=info,
    autoDeleteTargetModel=True)``. ``runtime`` is the ServingRuntime chosen to serve it."""

    vmodel_id: str
    owner: str
    model_id: str
    info: ModelInfo
    runtime: str


def owner_of(resource: InferenceService | Predictor) -> str:
    return OWNER_ISVC if isinstance(resource, InferenceService) else OWNER_PREDICTOR


def spec_hash(source: ModelSource) -> str:
    """10 hex digits of a SHA-1 of the canonical JSON of the model spec."""
    doc = asdict(source)
    if doc["batching"] is None:
        del doc["batching"]  # as before batching existed: unchanged resources keep their model ids
    doc["parameters"] = dict(sorted(source.parameters.items()))
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]


def concrete_model_id(resource: InferenceService | Predictor) -> str:
    return f"{resource.meta.name}__{owner_of(resource)}-{spec_hash(resource.model)}"


def storage_location(source: ModelSource) -> tuple[str, dict[str, str]]:
    """(model path, storage parameters) of a model, as ModelMesh-serving derived them."""
    params = dict(source.parameters)
    if source.storage_uri is None:
        return source.path or "", params
    uri = source.storage_uri
    scheme = storage_scheme(uri)
    if scheme == "":
        return "file://" + uri, params
    if scheme == "file":
        return uri, params
    parts = urllib.parse.urlsplit(uri)
    path = urllib.parse.unquote(parts.path).lstrip("/")
    if scheme == "s3":
        params.update(type="s3", bucket=parts.netloc)
    elif scheme == "gs":
        params.update(type="gcs", bucket=parts.netloc)
    elif scheme == "pvc":
        params.update(type="pvc", name=parts.netloc)
    elif parts.hostname and parts.hostname.endswith(AZURE_BLOB_HOST_SUFFIX):
        container, _, rest = path.partition("/")
        params.update(type="azure", account_name=parts.hostname.split(".", 1)[0], container=container)
        path = rest
    else:  # http / https
        params.update(type="http", url=uri)
        path = ""
    return path, params


def pvc_claim(source: ModelSource) -> str | None:
    """The PVC a model is read from (``pvc://claim/...`` or storage parameters ``type: pvc`` with a
    ``name``), as ModelMesh-serving collected them for ``allowAnyPVC``; None for any other storage."""
    _, params = storage_location(source)
    name = params.get("name")
    return name if params.get("type") == "pvc" and name else None


def model_key(source: ModelSource) -> str:
    _, params = storage_location(source)
    model_type: dict[str, str] = {"name": source.format.name}
    if source.format.version:
        model_type["version"] = source.format.version
    key: dict[str, object] = {"model_type": model_type}
    if source.storage_key:
        key["storage_key"] = source.storage_key
    if params:
        key["storage_params"] = dict(sorted(params.items()))
    if source.schema_path:
        key["schema_path"] = source.schema_path
    if source.batching is not None:
        batching = {"max_batch_size": source.batching.max_batch_size,
                    "max_batch_delay_ms": source.batching.max_batch_delay_ms}
        key["batching"] = {k: v for k, v in batching.items() if v is not None}
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def model_info(source: ModelSource) -> ModelInfo:
    path, _ = storage_location(source)
    model_type = f"rt:{source.runtime}" if source.runtime else source.format.name.lower()
    return ModelInfo(type=model_type, path=path, key=model_key(source))


def translate(resource: InferenceService | Predictor, runtimes: Sequence[ServingRuntime]) -> MeshModelSpec:
    """The mesh spec of a resource; raises ``RuntimeNotRecognized`` / ``NoSupportingRuntime`` when
    no runtime (of ``runtimes``: the namespace's and the cluster's) can serve it."""
    runtime = select_runtime(resource.model, resource.meta.namespace, runtimes)
    return MeshModelSpec(
        vmodel_id=resource.meta.name,
        owner=owner_of(resource),
        model_id=concrete_model_id(resource),
        info=model_info(resource.model),
        runtime=runtime.name,
    )
