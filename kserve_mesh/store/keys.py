"""The store key layout, in one place (REFERENCE.md §6).

Every key the mesh writes is built and parsed here, so the layout can change in one module::

    <root>/registry/<modelId>          ModelRecord
    <root>/vmodels/<vmodelId>          VModelRecord
    <root>/instances/<instanceId>      InstanceRecord (bound to the instance's lease)
    <root>/leader                      leader election
    <root>/config                      mesh-wide configuration
    <root>/isvcs/<namespace>/<name>    KServe InferenceService bookkeeping
    <root>/kuberesources/<plural>/<namespace or "_">/<name>
                                       the other KServe resources a standalone mesh keeps

``root`` is one per Kubernetes namespace, e.g. ``kserve-mesh/default``. Ids are percent-encoded
(every byte outside ``A-Za-z0-9-_.~``), so an id holding ``/``, ``%`` or spaces stays one path
segment, a prefix range never reaches into another id's children, and ``decode(encode(id)) == id``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import quote, unquote

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.core.ids import InstanceId, ModelId, VModelId

DEFAULT_BASE = "kserve-mesh"


def encode_segment(raw: str) -> str:
    """Percent-encode an id into one key segment (``/`` included)."""
    if not raw:
        raise InvalidArgument("an id in a store key must not be empty")
    try:
        return quote(raw, safe="")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"id {raw!r} is not valid Unicode text") from exc


def decode_segment(segment: str) -> str:
    """Inverse of ``encode_segment``; rejects segments that were not produced by it."""
    if not segment or "/" in segment:
        raise InvalidArgument(f"not an encoded key segment: {segment!r}")
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"key segment {segment!r} does not decode to UTF-8 text") from exc


class KeyKind(enum.Enum):
    MODEL = "registry"
    VMODEL = "vmodels"
    INSTANCE = "instances"
    ISVC = "isvcs"
    KUBE_RESOURCE = "kuberesources"
    LEADER = "leader"
    CONFIG = "config"


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """What a key under the root names: its kind and decoded id (``namespace/name`` for ISVC)."""

    kind: KeyKind
    id: str = ""


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder/parser for one mesh root (one per namespace)."""

    root: str

    def __post_init__(self) -> None:
        if not self.root or self.root.startswith("/") or self.root.endswith("/"):
            raise InvalidArgument(
                f"store root must be non-empty without leading/trailing '/': {self.root!r}"
            )

    @classmethod
    def for_namespace(cls, namespace: str, base: str = DEFAULT_BASE) -> Keys:
        return cls(f"{base}/{encode_segment(namespace)}")

    def root_prefix(self) -> str:
        """Prefix of every key of this mesh (watch it to follow everything)."""
        return f"{self.root}/"

    # ---- models ----

    def model(self, model_id: str) -> str:
        return self.models_prefix() + encode_segment(model_id)

    def models_prefix(self) -> str:
        return f"{self.root}/{KeyKind.MODEL.value}/"

    def model_id_of(self, key: str) -> ModelId:
        return ModelId(self._id_under(self.models_prefix(), key))

    # ---- vmodels ----

    def vmodel(self, vmodel_id: str) -> str:
        return self.vmodels_prefix() + encode_segment(vmodel_id)

    def vmodels_prefix(self) -> str:
        return f"{self.root}/{KeyKind.VMODEL.value}/"

    def vmodel_id_of(self, key: str) -> VModelId:
        return VModelId(self._id_under(self.vmodels_prefix(), key))

    # ---- instances ----

    def instance(self, instance_id: str) -> str:
        return self.instances_prefix() + encode_segment(instance_id)

    def instances_prefix(self) -> str:
        return f"{self.root}/{KeyKind.INSTANCE.value}/"

    def instance_id_of(self, key: str) -> InstanceId:
        return InstanceId(self._id_under(self.instances_prefix(), key))

    # ---- singletons ----

    def leader(self) -> str:
        return f"{self.root}/{KeyKind.LEADER.value}"

    def config(self) -> str:
        return f"{self.root}/{KeyKind.CONFIG.value}"

    # ---- InferenceServices ----

    def isvc(self, namespace: str, name: str) -> str:
        return f"{self.isvcs_prefix(namespace)}{encode_segment(name)}"

    def isvcs_prefix(self, namespace: str | None = None) -> str:
        base = f"{self.root}/{KeyKind.ISVC.value}/"
        return base if namespace is None else f"{base}{encode_segment(namespace)}/"

    def isvc_of(self, key: str) -> tuple[str, str]:
        """(namespace, name) of an isvc key."""
        rest = self._rest_under(self.isvcs_prefix(), key)
        parts = rest.split("/")
        if len(parts) != 2:
            raise InvalidArgument(f"key {key!r} is not an InferenceService key of {self.root!r}")
        return decode_segment(parts[0]), decode_segment(parts[1])

    # ---- other KServe resources (Predictors, ServingRuntimes...) of a standalone mesh ----

    def kube_resource(self, plural: str, namespace: str, name: str) -> str:
        """Key of one resource; a cluster-scoped one (``namespace=""``) is under ``_``."""
        return f"{self.kube_resources_prefix(plural, namespace)}{encode_segment(name)}"

    def kube_resources_prefix(self, plural: str, namespace: str | None = None) -> str:
        """Prefix of every resource of ``plural``, or of those in ``namespace``."""
        base = f"{self.root}/{KeyKind.KUBE_RESOURCE.value}/{encode_segment(plural)}/"
        return base if namespace is None else f"{base}{encode_segment(namespace or '_')}/"

    # ---- any key ----

    def parse(self, key: str) -> ParsedKey:
        """Classify any key under this root; raises ``InvalidArgument`` for foreign keys."""
        if key == self.leader():
            return ParsedKey(KeyKind.LEADER)
        if key == self.config():
            return ParsedKey(KeyKind.CONFIG)
        for kind, prefix in (
            (KeyKind.MODEL, self.models_prefix()),
            (KeyKind.VMODEL, self.vmodels_prefix()),
            (KeyKind.INSTANCE, self.instances_prefix()),
        ):
            if key.startswith(prefix):
                return ParsedKey(kind, self._id_under(prefix, key))
        if key.startswith(self.isvcs_prefix()):
            namespace, name = self.isvc_of(key)
            return ParsedKey(KeyKind.ISVC, f"{namespace}/{name}")
        raise InvalidArgument(f"key {key!r} is not a kserve-mesh key under {self.root!r}")

    def _rest_under(self, prefix: str, key: str) -> str:
        if not key.startswith(prefix):
            raise InvalidArgument(f"key {key!r} is not under {prefix!r}")
        return key[len(prefix) :]

    def _id_under(self, prefix: str, key: str) -> str:
        rest = self._rest_under(prefix, key)
        try:
            return decode_segment(rest)
        except InvalidArgument as exc:
            raise InvalidArgument(f"key {key!r} holds no valid id after {prefix!r}") from exc
