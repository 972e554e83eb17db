"""One reconcile of an InferenceService or Predictor, as the controller runs it (no kopf here).

On top of ``reconcile.Reconciler`` (which talks to the mesh and computes the status) this adds what
only the controller needs:

- the runtime the resource resolves to, even when the mesh cannot be reached: the runtime's
  Deployment must be created *before* its mesh pods exist (ModelMesh reported the predictor as
  ``RuntimeUnhealthy`` "Waiting for runtime Pod to become available" meanwhile);
- the merge patch that turns the status written before into the new one (keys that disappear are
  set to null: a merge patch cannot drop them otherwise), empty when nothing changed;
- a warning to post as a Kubernetes Event when a failure appears or changes (not on every pass);
- whether the resource is settled (Loaded, up to date, no failure), so status polling can slow
  down.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kserve_mesh.core.clock import Clock
from kserve_mesh.core.errors import DeadlineExceeded, Unavailable
from kserve_mesh.kube.core.errors import InvalidSpec, RuntimeSelectionError
from kserve_mesh.kube.core.parse import parse
from kserve_mesh.kube.core.resources import InferenceService, Predictor, ServingRuntime
from kserve_mesh.kube.core.status import LOADED, PENDING, UP_TO_DATE, PredictorState, ServiceEndpoints
from kserve_mesh.kube.core.translate import pvc_claim, translate
from kserve_mesh.kube.reconcile import MeshManagement, Reconciler


@dataclass(frozen=True)
class ModelResult:
    status: dict[str, Any]
    """The whole new status."""
    patch: dict[str, Any]
    """Merge patch from the previous status to the new one ({} when unchanged)."""
    runtime: str | None
    """The runtime the resource resolves to (None: none can serve it, or its spec is invalid)."""
    claim: str | None
    """The PVC its model is read from (None: not from a PVC), for the runtime pods to mount."""
    warning: tuple[str, str] | None
    """(reason, message) of a failure that is new since the previous status."""
    settled: bool


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``."""
    out: dict[str, Any] = {}
    for key in old:
        if key not in new:
            out[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_patch(before, value)
            if sub:
                out[key] = sub
        elif key not in old or before != value:
            out[key] = value
    return out


def _failure(kind: str, status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    holder = status.get("modelStatus") if kind == "InferenceService" else status
    info = holder.get("lastFailureInfo") if isinstance(holder, Mapping) else None
    return info if isinstance(info, Mapping) else None


def _same_failure(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    fields = ("reason", "message", "modelRevisionName", "modelId")
    return a is not None and b is not None and all(a.get(f) == b.get(f) for f in fields)


def _settled(state: PredictorState) -> bool:
    return state.active_state == LOADED and state.transition == UP_TO_DATE and state.failure is None


class ModelReconcile:
    """Reconcile raw resources (as the API returns them) against a mesh."""

    def __init__(self, clock: Clock, endpoints_for: Callable[[str], ServiceEndpoints | None]) -> None:
        self.clock = clock
        self.endpoints_for = endpoints_for

    async def reconcile(self, mesh: MeshManagement, doc: Mapping[str, Any],
                        runtimes: Sequence[ServingRuntime], *, observe: bool = False) -> ModelResult:
        """Apply ``doc`` to the mesh and compute its status. ``observe``: only read the mesh's state
        (a status refresh), applying only when the mesh has no vmodel for it (a restarted mesh);
        applying again and again would restart a failed load on every pass."""
        kind = str(doc.get("kind"))
        meta = doc.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        name = str(meta.get("name") or "")
        generation = meta.get("generation") if isinstance(meta.get("generation"), int) else 0
        previous = doc.get("status") if isinstance(doc.get("status"), Mapping) else {}
        reconciler = Reconciler(mesh, self.endpoints_for(namespace), self.clock)
        runtime: str | None = None
        claim: str | None = None
        try:
            resource = parse(dict(doc), default_namespace=namespace)
        except InvalidSpec as exc:
            state = await self._guarded(reconciler.invalid(kind, name, exc))
        else:
            assert isinstance(resource, InferenceService | Predictor)
            claim = pvc_claim(resource.model)
            try:
                runtime = translate(resource, runtimes).runtime
            except RuntimeSelectionError:
                runtime = None
            state = await self._guarded(self._apply(reconciler, resource, runtimes, observe))
        status = reconciler.render(kind, state, previous=previous, generation=generation)
        failure = _failure(kind, status)
        warning = None
        if failure is not None and not _same_failure(failure, _failure(kind, previous)):
            warning = (str(failure.get("reason") or "Failed"), str(failure.get("message") or ""))
        return ModelResult(status, merge_patch(previous, status), runtime, claim, warning, _settled(state))

    @staticmethod
    async def _apply(reconciler: Reconciler, resource: InferenceService | Predictor,
                     runtimes: Sequence[ServingRuntime], observe: bool) -> PredictorState:
        if observe:
            state = await reconciler.observe(resource, runtimes)
            if state.active_state != PENDING or state.failure is not None:
                return state
        return (await reconciler.apply(resource, runtimes)).state

    @staticmethod
    async def _guarded(call: Any) -> PredictorState:
        """The mesh's answer, or RuntimeUnhealthy while it cannot be reached."""
        try:
            state: PredictorState = await call
        except (Unavailable, DeadlineExceeded) as exc:
            return Reconciler.unavailable(Unavailable(str(exc)))
        return state

    async def remove(self, mesh: MeshManagement, kind: str, name: str) -> None:
        """The resource is gone: delete its vmodel (a missing one is fine)."""
        await Reconciler(mesh, None, self.clock).remove(kind, name)
