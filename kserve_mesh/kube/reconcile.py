"""Reconcile one model resource with the mesh: the same code for the controller and a standalone mesh.

This is the one piece both sides drive, so it sits between them: it uses the pure KServe model
(``kube/core/``) and talks to the mesh through a small port declared here, ``MeshManagement`` (the
management calls it needs), and imports neither side. Each side brings its adapter: the controller
talks ``mmesh.ModelMesh`` over gRPC to the mesh Service (``controller/mesh_client.py``, ``GrpcMesh``);
a standalone mesh applies resources to its own ``Instance`` (``standalone/instance_mesh.py``,
``InstanceMesh``). A reconcile:

1. translates the resource (``core/translate.py``), choosing its runtime;
2. ``setVModel(name, owner, target=<name>__<owner>-<hash>, modelInfo, autoDeleteTargetModel,
   loadNow)``: idempotent; a changed spec starts a transition, the old model is deleted once the
   new one serves;
3. reads the vmodel back and maps it to the resource's status (``core/status.py``).

Runtime-selection failures and a name owned by another source do not raise: they become the
status (``lastFailureInfo``), as ModelMesh reported them. Mesh errors (unreachable, deadline) raise,
for the caller to retry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kserve_mesh.core.clock import Clock
from kserve_mesh.core.errors import AlreadyExists, InvalidArgument, Unavailable
from kserve_mesh.core.records import ModelInfo, VModelState
from kserve_mesh.kube.core.errors import InvalidSpec, RuntimeSelectionError
from kserve_mesh.kube.core.parse import parse
from kserve_mesh.kube.core.resources import InferenceService, Predictor, ServingRuntime, is_modelmesh
from kserve_mesh.kube.core.status import (
    INVALID_PREDICTOR_SPEC,
    MODEL_LOAD_FAILED,
    RUNTIME_UNHEALTHY,
    FailureInfo,
    PredictorState,
    ServiceEndpoints,
    SpecProblem,
    isvc_status,
    predictor_state,
    predictor_status,
)
from kserve_mesh.kube.core.translate import MeshModelSpec, concrete_model_id, owner_of, translate
from kserve_mesh.kube.core.views import ModelStatusInfo, VModelStatusInfo

ModelResource = InferenceService | Predictor


class MeshManagement(Protocol):
    """The management calls a reconcile needs (a subset of ``mmesh.ModelMesh``)."""

    async def register_model(self, model_id: str, info: ModelInfo, *, load_now: bool = False) -> ModelStatusInfo: ...

    async def set_vmodel(self, vmodel_id: str, owner: str, target: str, info: ModelInfo | None, *,
                         auto_delete: bool = True, load_now: bool = False) -> VModelStatusInfo: ...

    async def delete_vmodel(self, vmodel_id: str, owner: str) -> None: ...

    async def vmodel_status(self, vmodel_id: str, owner: str = "") -> VModelStatusInfo: ...

    async def model_status(self, model_id: str) -> ModelStatusInfo: ...

    async def unregister(self, model_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a reconcile did: the mesh spec (None when the resource could not be placed) and the
    resulting predictor state."""

    spec: MeshModelSpec | None
    state: PredictorState


class Reconciler:
    def __init__(self, mesh: MeshManagement, endpoints: ServiceEndpoints | None, clock: Clock) -> None:
        self.mesh = mesh
        self.endpoints = endpoints
        self.clock = clock

    async def apply(self, resource: ModelResource, runtimes: Sequence[ServingRuntime]) -> Outcome:
        """Make the mesh serve ``resource`` (idempotent) and return its state."""
        owner = owner_of(resource)
        try:
            spec = translate(resource, runtimes)
        except RuntimeSelectionError as exc:
            vm = await self._vmodel(resource.meta.name, owner)
            problem = SpecProblem(exc.reason, exc.message, concrete_model_id(resource))
            return Outcome(None, predictor_state(vm, problem))
        try:
            vm = await self.mesh.set_vmodel(spec.vmodel_id, spec.owner, spec.model_id, spec.info,
                                            auto_delete=True, load_now=True)
        except AlreadyExists as exc:
            return Outcome(spec, predictor_state(None, self._conflict(spec.model_id, str(exc))))
        except InvalidArgument as exc:  # the mesh refused the model at registration (a missing path, a type)
            vm = await self._vmodel(resource.meta.name, owner)
            return Outcome(spec, predictor_state(vm, SpecProblem(MODEL_LOAD_FAILED, exc.message, spec.model_id)))
        return Outcome(spec, predictor_state(vm))

    async def observe(self, resource: ModelResource, runtimes: Sequence[ServingRuntime]) -> PredictorState:
        """The current state of ``resource`` in the mesh, changing nothing."""
        owner = owner_of(resource)
        model_id = concrete_model_id(resource)
        anyone = await self.mesh.vmodel_status(resource.meta.name, "")
        if anyone.state is not VModelState.NOT_FOUND and anyone.owner and anyone.owner != owner:
            return predictor_state(None, self._conflict(model_id, f"vmodel '{resource.meta.name}' is owned by "
                                                                  f"'{anyone.owner}'"))
        try:
            translate(resource, runtimes)
        except RuntimeSelectionError as exc:
            return predictor_state(anyone, SpecProblem(exc.reason, exc.message, model_id))
        return predictor_state(anyone)

    async def invalid(self, kind: str, name: str, error: InvalidSpec) -> PredictorState:
        """State of a resource whose spec does not validate: the mesh keeps serving what it had."""
        owner = "isvc" if kind == "InferenceService" else "ksp"
        vm = await self._vmodel(name, owner)
        return predictor_state(vm, SpecProblem(INVALID_PREDICTOR_SPEC, str(error), invalid=True))

    async def remove(self, kind: str, name: str) -> None:
        """The resource is gone: delete its vmodel (its auto-delete models go with it)."""
        await self.mesh.delete_vmodel(name, "isvc" if kind == "InferenceService" else "ksp")

    @staticmethod
    def unavailable(error: Unavailable) -> PredictorState:
        """State to report while the mesh cannot be reached (ModelMesh: RuntimeUnhealthy)."""
        return PredictorState(failure=FailureInfo(RUNTIME_UNHEALTHY,
                                                  f"Waiting for runtime Pod to become available: {error}"))

    def render(self, kind: str, state: PredictorState, *, previous: Mapping[str, Any] | None = None,
               generation: int = 0) -> dict[str, Any]:
        """The ``status`` object for a resource of ``kind`` in ``state``."""
        now = self.clock.now_ms()
        if kind == "InferenceService":
            return isvc_status(state, self.endpoints, now_ms=now, previous=previous, generation=generation)
        return predictor_status(state, self.endpoints, now_ms=now, previous=previous)

    async def reconcile_document(self, doc: Mapping[str, Any], runtimes: Sequence[ServingRuntime], *,
                                 previous: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Reconcile a raw resource (as the Kubernetes API returns it) and return its new status;
        None for resources that are not ours (not ModelMesh)."""
        if not is_modelmesh(doc):
            return None
        kind = str(doc.get("kind"))
        meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        generation = meta.get("generation") if isinstance(meta.get("generation"), int) else 0
        try:
            resource = parse(dict(doc), default_namespace=str(meta.get("namespace") or "default"))
        except InvalidSpec as exc:
            state = await self.invalid(kind, str(meta.get("name") or ""), exc)
            return self.render(kind, state, previous=previous, generation=generation)
        assert isinstance(resource, InferenceService | Predictor)
        outcome = await self.apply(resource, runtimes)
        return self.render(kind, outcome.state, previous=previous, generation=generation)

    async def _vmodel(self, name: str, owner: str) -> VModelStatusInfo | None:
        vm = await self.mesh.vmodel_status(name, owner)
        return None if vm.state is VModelState.NOT_FOUND else vm

    @staticmethod
    def _conflict(model_id: str, detail: str) -> SpecProblem:
        return SpecProblem(INVALID_PREDICTOR_SPEC,
                           f"Predictor already exists with the same name from a different source ({detail})",
                           model_id, invalid=True)
