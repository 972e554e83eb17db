"""KServe resources on a mesh without Kubernetes: ``kserve-mesh apply | get | delete``.

The mesh itself plays the API server: applied resources are validated (``core/parse.py``), kept
behind the ``ResourceStore`` port (``ports.py``; the mesh's store through its adapter,
``kserve_mesh.store.kube_resources``), and reconciled with the same ``Reconciler`` the controller
uses, through the in-process adapter (``instance_mesh.py``). Status is computed from the mesh at
every read, so it is never stale.

One mesh serves one vmodel per name, so a name may be used by one InferenceService or Predictor
only, whatever its namespace. The built-in ClusterServingRuntimes (``core/runtimes.py``) are always
there; an applied ClusterServingRuntime of the same name replaces one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kserve_mesh.core.clock import Clock
from kserve_mesh.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    MeshError,
    NotFound,
    Unavailable,
)
from kserve_mesh.core.ids import check_ids
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.kube.core.errors import InvalidSpec, RuntimeSelectionError
from kserve_mesh.kube.core.parse import parse
from kserve_mesh.kube.core.resources import (
    KINDS,
    InferenceService,
    Predictor,
    Resource,
    ServingRuntime,
    is_namespaced,
    plural_of,
)
from kserve_mesh.kube.core.runtimes import BUILTIN_RUNTIME, builtin_runtime
from kserve_mesh.kube.core.status import ServiceEndpoints, rfc3339
from kserve_mesh.kube.core.translate import translate
from kserve_mesh.kube.reconcile import Reconciler
from kserve_mesh.kube.standalone.instance_mesh import InstanceMesh
from kserve_mesh.kube.standalone.ports import ResourceStore, StoredResource
from kserve_mesh.store.kube_resources import KubeResourceStore

if TYPE_CHECKING:
    from kserve_mesh.mesh.instance import Instance
    from kserve_mesh.store import Keys, Store

log = logging.getLogger(__name__)

BUILTIN_ANNOTATION = "serving.kserve-mesh.io/built-in"
MODEL_KINDS = ("InferenceService", "Predictor")
MAX_STORED_BYTES = 1 << 20
"""Largest resource stored, as JSON (Kubernetes stores at most 1.5 MiB per object in etcd)."""


@dataclass(frozen=True, slots=True)
class Applied:
    kind: str
    namespace: str
    name: str
    action: str  # created | configured | unchanged

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name, "action": self.action}


class KubeService:
    """Apply, read and delete KServe resources on one mesh (the REST routes call this)."""

    def __init__(self, resources: ResourceStore, reconciler: Reconciler, clock: Clock, *,
                 default_namespace: str = "default", builtin_runtimes: Sequence[str] = (BUILTIN_RUNTIME,),
                 vet: Callable[[str, ModelInfo], None] | None = None) -> None:
        """``vet(model_id, info)`` refuses a model the mesh would refuse to register (bounds, storage
        policy); an apply runs it before storing anything, so a refused resource is not kept."""
        self.vet = vet
        self.resources = resources
        self.reconciler = reconciler
        self.clock = clock
        self.default_namespace = default_namespace
        self.builtins = tuple(builtin_runtime(n) for n in builtin_runtimes)
        self._lock = asyncio.Lock()

    @classmethod
    def for_instance(cls, instance: Instance, store: Store, keys: Keys, clock: Clock, **kw: Any) -> KubeService:
        """The service of a standalone mesh: resources in its own store under ``keys``, reconciled on
        its own ``instance``, vetted as the instance vets a registration."""

        def vet(model_id: str, info: ModelInfo) -> None:
            check_ids(model_id=model_id, info=info)
            if instance.check_model is not None:
                instance.check_model(info)

        reconciler = Reconciler(InstanceMesh(instance), None, clock)
        return cls(KubeResourceStore(store, keys), reconciler, clock, vet=vet, **kw)

    def set_endpoints(self, *, grpc: str, rest: str) -> None:
        """Where clients reach this mesh (``host:port`` for gRPC, ``http://host:port`` for REST)."""
        self.reconciler.endpoints = ServiceEndpoints(grpc, rest)

    # -- storage -------------------------------------------------------------------------------
    async def _records(self, kind: str, namespace: str | None = None) -> Sequence[StoredResource]:
        return await self.resources.list(plural_of(kind), namespace if is_namespaced(kind) else None)

    async def _record(self, kind: str, namespace: str, name: str) -> StoredResource | None:
        return await self.resources.get(plural_of(kind), namespace if is_namespaced(kind) else "", name)

    async def _put(self, kind: str, obj: dict[str, Any], status: dict[str, Any] | None) -> None:
        meta = obj["metadata"]
        await self.resources.put(plural_of(kind), meta.get("namespace", ""), meta["name"], obj, status or {})

    # -- runtimes --------------------------------------------------------------------------------
    async def runtimes(self) -> list[ServingRuntime]:
        """Every runtime models can use: applied ones, and built-ins not replaced by one."""
        found: list[ServingRuntime] = []
        for kind in ("ServingRuntime", "ClusterServingRuntime"):
            for rec in await self._records(kind):
                found.append(self._parse(rec.resource))  # type: ignore[arg-type]
        cluster_names = {rt.name for rt in found if rt.cluster}
        return found + [rt for rt in self.builtins if rt.name not in cluster_names]

    def _parse(self, doc: dict[str, Any]) -> Resource:
        return parse(doc, default_namespace=self.default_namespace)

    # -- apply -----------------------------------------------------------------------------------
    async def apply(self, docs: Sequence[dict[str, Any]]) -> list[Applied]:
        """Validate every document, then store and reconcile them (runtimes first). Nothing is
        applied when any document is invalid."""
        parsed: list[tuple[dict[str, Any], Resource]] = []
        for i, doc in enumerate(docs):
            try:
                res = self._parse(doc)
                _normalized(doc, res)  # refuses a resource too large to store, before anything is stored
                parsed.append((doc, res))
            except InvalidSpec as exc:
                raise InvalidSpec(exc.path, f"{exc.problem} (document {i + 1}{_label(doc)})") from exc
        if not parsed:
            raise InvalidArgument("no resources to apply (the input holds no documents)")
        if self.vet is not None:
            await self._vet(parsed)
        async with self._lock:
            await self._check_names([r for _, r in parsed if isinstance(r, InferenceService | Predictor)])
            results: dict[int, Applied] = {}
            order = sorted(range(len(parsed)), key=lambda i: isinstance(parsed[i][1], InferenceService | Predictor))
            runtimes_changed: set[str | None] = set()
            for i in order:
                doc, res = parsed[i]
                results[i] = await self._store_one(doc, res)
                if isinstance(res, ServingRuntime) and results[i].action != "unchanged":
                    runtimes_changed.add(None if res.cluster else res.meta.namespace)
            runtimes = await self.runtimes()
            for i in order:
                res = parsed[i][1]
                if isinstance(res, InferenceService | Predictor):
                    await self._reconcile(res, runtimes)
            if runtimes_changed:
                await self._reconcile_all(runtimes, runtimes_changed)
        return [results[i] for i in range(len(parsed))]

    async def _vet(self, parsed: Sequence[tuple[dict[str, Any], Resource]]) -> None:
        """Refuse, before anything is stored, a model resource whose model the mesh would refuse."""
        assert self.vet is not None
        runtimes = [*await self.runtimes(), *(r for _, r in parsed if isinstance(r, ServingRuntime))]
        for i, (doc, res) in enumerate(parsed):
            if not isinstance(res, InferenceService | Predictor):
                continue
            try:
                spec = translate(res, runtimes)
            except RuntimeSelectionError:
                continue  # not an error of the spec: its status will say so
            try:
                self.vet(spec.model_id, spec.info)
            except InvalidArgument as exc:
                raise InvalidArgument(f"{exc.message} (document {i + 1}{_label(doc)})") from None

    async def _check_names(self, resources: Sequence[InferenceService | Predictor]) -> None:
        seen: dict[str, str] = {}
        for res in resources:
            ident = f"{res.kind} {res.meta.namespace}/{res.meta.name}"
            if seen.get(res.meta.name, ident) != ident:
                raise AlreadyExists(f"{ident} and {seen[res.meta.name]} in one apply: a mesh serves one "
                                    f"InferenceService or Predictor per name")
            seen[res.meta.name] = ident
            for kind in MODEL_KINDS:
                for rec in await self._records(kind):
                    meta = rec.resource["metadata"]
                    same = (kind, meta.get("namespace")) == (res.kind, res.meta.namespace)
                    if meta["name"] == res.meta.name and not same:
                        raise AlreadyExists(
                            f"{ident}: the name '{res.meta.name}' is taken by {kind} {meta.get('namespace')}/"
                            f"{meta['name']} (a mesh serves one InferenceService or Predictor per name)")

    async def _store_one(self, doc: dict[str, Any], res: Resource) -> Applied:
        kind, ns, name = res.kind, res.meta.namespace, res.meta.name
        existing = await self._record(kind, ns, name)
        obj = _normalized(doc, res)
        if existing is None:
            meta = obj["metadata"]
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=rfc3339(self.clock.now_ms()), generation=1)
            await self._put(kind, obj, None)
            return Applied(kind, ns, name, "created")
        before = existing.resource
        meta, old_meta = obj["metadata"], before["metadata"]
        for field in ("uid", "creationTimestamp", "generation"):
            meta[field] = old_meta.get(field)
        if obj.get("spec") != before.get("spec"):
            meta["generation"] = int(old_meta.get("generation") or 1) + 1
        if obj == before:
            return Applied(kind, ns, name, "unchanged")
        await self._put(kind, obj, existing.status)
        return Applied(kind, ns, name, "configured")

    async def _reconcile(self, res: InferenceService | Predictor, runtimes: Sequence[ServingRuntime]) -> None:
        try:
            state = (await self.reconciler.apply(res, runtimes)).state
        except Unavailable as exc:  # stored all the same; the status says why it is not served yet
            log.warning("could not reconcile %s %s: %s", res.kind, res.meta.name, exc)
            state = self.reconciler.unavailable(exc)
        rec = await self._record(res.kind, res.meta.namespace, res.meta.name)
        if rec is None:
            return
        obj, previous = rec.resource, rec.status
        status = self.reconciler.render(res.kind, state, previous=previous,
                                        generation=int(obj["metadata"].get("generation") or 0))
        if status != previous:
            await self._put(res.kind, obj, status)

    async def _reconcile_all(self, runtimes: Sequence[ServingRuntime], namespaces: set[str | None]) -> None:
        for kind in MODEL_KINDS:
            for rec in await self._records(kind):
                res = self._parse(rec.resource)
                if None in namespaces or res.meta.namespace in namespaces:
                    assert isinstance(res, InferenceService | Predictor)
                    await self._reconcile(res, runtimes)

    async def resync(self) -> int:
        """Reconcile every stored model resource again (at start-up, e.g. after a restart with etcd)."""
        runtimes = await self.runtimes()
        count = 0
        async with self._lock:
            for kind in MODEL_KINDS:
                for rec in await self._records(kind):
                    try:
                        res = self._parse(rec.resource)
                        assert isinstance(res, InferenceService | Predictor)
                        await self._reconcile(res, runtimes)
                        count += 1
                    except MeshError as exc:
                        log.warning("could not reconcile %s %s: %s", kind, rec.resource["metadata"]["name"], exc)
        return count

    # -- read ------------------------------------------------------------------------------------
    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        if not is_namespaced(kind):
            namespace = ""
        rec = await self._record(kind, namespace, name)
        if rec is None:
            builtin = next((rt for rt in self.builtins if kind == "ClusterServingRuntime" and rt.name == name), None)
            if builtin is not None:
                return _builtin_json(builtin)
            where = f" in namespace '{namespace}'" if is_namespaced(kind) else ""
            raise NotFound(f"{kind} '{name}' not found{where}")
        return await self._with_status(kind, rec)

    async def list(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        items = [await self._with_status(kind, rec) for rec in await self._records(kind, namespace)]
        if kind == "ClusterServingRuntime":
            names = {it["metadata"]["name"] for it in items}
            items += [_builtin_json(rt) for rt in self.builtins if rt.name not in names]
            items.sort(key=lambda it: it["metadata"]["name"])
        return items

    async def _with_status(self, kind: str, rec: StoredResource) -> dict[str, Any]:
        obj = json.loads(json.dumps(rec.resource))
        obj["metadata"]["resourceVersion"] = str(rec.revision)
        if kind not in MODEL_KINDS:
            return obj
        res = self._parse(rec.resource)
        assert isinstance(res, InferenceService | Predictor)
        previous = rec.status
        state = await self.reconciler.observe(res, await self.runtimes())
        status = self.reconciler.render(kind, state, previous=previous,
                                        generation=int(obj["metadata"].get("generation") or 0))
        if status != previous:
            await self._put(kind, rec.resource, status)
        obj["status"] = status
        return obj

    # -- delete ----------------------------------------------------------------------------------
    async def delete(self, kind: str, namespace: str, name: str) -> None:
        if not is_namespaced(kind):
            namespace = ""
        async with self._lock:
            rec = await self._record(kind, namespace, name)
            if rec is None:
                if kind == "ClusterServingRuntime" and any(rt.name == name for rt in self.builtins):
                    raise FailedPrecondition(f"ClusterServingRuntime '{name}' is built into the mesh and cannot "
                                             "be deleted (apply one of the same name to replace it)")
                where = f" in namespace '{namespace}'" if is_namespaced(kind) else ""
                raise NotFound(f"{kind} '{name}' not found{where}")
            if kind in MODEL_KINDS:
                await self.reconciler.remove(kind, name)
            await self.resources.delete(plural_of(kind), namespace, name)


def _label(doc: Any) -> str:
    if not isinstance(doc, dict):
        return ""
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name = meta.get("name")
    return f": {doc.get('kind')} {name}" if doc.get("kind") and isinstance(name, str) else ""


def _normalized(doc: dict[str, Any], res: Resource) -> dict[str, Any]:
    """The resource as stored: apiVersion, kind, the metadata we keep, the spec as given."""
    meta: dict[str, Any] = {"name": res.meta.name}
    if is_namespaced(res.kind):
        meta["namespace"] = res.meta.namespace
    if res.meta.labels:
        meta["labels"] = dict(res.meta.labels)
    if res.meta.annotations:
        meta["annotations"] = dict(res.meta.annotations)
    text = json.dumps({"apiVersion": doc["apiVersion"], "kind": res.kind, "metadata": meta, "spec": doc.get("spec")})
    if len(text) > MAX_STORED_BYTES:
        raise InvalidSpec("", f"the resource is {len(text)} bytes as JSON; at most {MAX_STORED_BYTES} bytes are "
                          "stored per resource")
    return json.loads(text)


def _builtin_json(rt: ServingRuntime) -> dict[str, Any]:
    formats = [{"name": f.name, "autoSelect": f.auto_select, **({"priority": f.priority} if f.priority else {}),
                **({"version": f.version} if f.version else {})} for f in rt.formats]
    spec: dict[str, Any] = {"supportedModelFormats": formats, "multiModel": rt.multi_model,
                            "protocolVersions": list(rt.protocol_versions)}
    if rt.grpc_endpoint:
        spec["grpcEndpoint"] = rt.grpc_endpoint
    if rt.grpc_data_endpoint:
        spec["grpcDataEndpoint"] = rt.grpc_data_endpoint
    return {"apiVersion": KINDS["ClusterServingRuntime"][0][0], "kind": "ClusterServingRuntime",
            "metadata": {"name": rt.name, "annotations": {BUILTIN_ANNOTATION: "true"}}, "spec": spec}

