"""Mesh vmodel/model states -> the status ModelMesh wrote on InferenceServices and Predictors (pure).

Model states map as modelmesh-serving mapped them: NOT_LOADED -> ``Standby``, LOADING -> ``Loading``,
LOADED -> ``Loaded``, LOADING_FAILED -> ``FailedToLoad``, not registered -> ``Pending``. The vmodel
state gives ``transitionStatus``: DEFINED -> ``UpToDate``, TRANSITIONING -> ``InProgress``,
TRANSITION_FAILED -> ``BlockedByFailedLoad``; a spec the mesh cannot take gives ``InvalidSpec``.
``targetModelState`` is empty unless a different target model is loading. ``lastFailureInfo``
describes why the target (or, with no transition, the active) model is not loaded: ``reason`` one of
ModelLoadFailed | RuntimeUnhealthy | NoSupportingRuntime | RuntimeNotRecognized |
InvalidPredictorSpec, ``modelRevisionName`` the concrete model id, ``location`` the instance where
a load failed and ``time`` when.

The predictor is available (``PredictorReady`` and ``Ready`` True, URLs set) once its active model
is registered and not failed: Standby and Loading models answer requests (they load on demand).
URLs follow ModelMesh: ``url`` = ``grpcUrl`` = ``grpc://<service>:8033``, ``restUrl`` =
``http://<service>:8008``; a standalone mesh gives its own addresses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from kserve_mesh.core.records import ModelState, VModelState
from kserve_mesh.kube.core.views import ModelStatusInfo, VModelStatusInfo

PENDING, STANDBY, LOADING, LOADED, FAILED_TO_LOAD = "Pending", "Standby", "Loading", "Loaded", "FailedToLoad"
UP_TO_DATE, IN_PROGRESS, BLOCKED, INVALID_SPEC = "UpToDate", "InProgress", "BlockedByFailedLoad", "InvalidSpec"
MODEL_LOAD_FAILED = "ModelLoadFailed"
RUNTIME_UNHEALTHY = "RuntimeUnhealthy"
INVALID_PREDICTOR_SPEC = "InvalidPredictorSpec"

_MODEL_STATES = {
    ModelState.NOT_LOADED: STANDBY,
    ModelState.LOADING: LOADING,
    ModelState.LOADED: LOADED,
    ModelState.LOADING_FAILED: FAILED_TO_LOAD,
}
_TRANSITIONS = {
    VModelState.DEFINED: UP_TO_DATE,
    VModelState.TRANSITIONING: IN_PROGRESS,
    VModelState.TRANSITION_FAILED: BLOCKED,
}


@dataclass(frozen=True, slots=True)
class ServiceEndpoints:
    """Where clients reach the predictor: ``grpc`` as ``host:port``, ``rest`` as ``http://host:port``."""

    grpc: str
    rest: str

    @property
    def grpc_url(self) -> str:
        return self.grpc if "://" in self.grpc else f"grpc://{self.grpc}"


@dataclass(frozen=True, slots=True)
class FailureInfo:
    reason: str
    message: str
    model_id: str = ""
    location: str = ""
    time_ms: int = 0


@dataclass(frozen=True, slots=True)
class SpecProblem:
    """Why the current spec is not (yet) in the mesh: a runtime-selection failure for ``model_id``
    (``invalid=False``), or an invalid spec / a name taken by another source (``invalid=True``)."""

    reason: str
    message: str
    model_id: str = ""
    invalid: bool = False


@dataclass(frozen=True, slots=True)
class PredictorState:
    active_state: str = PENDING
    target_state: str = ""
    transition: str = UP_TO_DATE
    failed_copies: int = 0
    total_copies: int = 0
    failure: FailureInfo | None = None

    @property
    def available(self) -> bool:
        return self.active_state in (STANDBY, LOADING, LOADED)


def model_state(status: ModelStatusInfo | None) -> str:
    if status is None:
        return PENDING
    return _MODEL_STATES.get(status.state, PENDING)


def _failure_of(status: ModelStatusInfo | None, model_id: str) -> FailureInfo | None:
    if status is None or status.state is ModelState.LOADED or not status.errors:
        return None
    failed = next((c for c in status.copies if c.state is ModelState.LOADING_FAILED), None)
    return FailureInfo(MODEL_LOAD_FAILED, status.errors[0], model_id,
                       failed.location if failed else "", failed.time_ms if failed else 0)


def _count(status: ModelStatusInfo | None, *states: ModelState) -> int:
    return 0 if status is None else sum(1 for c in status.copies if c.state in states)


def predictor_state(vm: VModelStatusInfo | None, problem: SpecProblem | None = None) -> PredictorState:
    """The status fields of a predictor from its vmodel (None when the mesh has none) and the problem
    that kept its current spec out of the mesh, if any."""
    exists = vm is not None and vm.state is not VModelState.NOT_FOUND
    if exists:
        assert vm is not None
        active = vm.active_status
        same = vm.active == vm.target or vm.target_status is None
        target = active if same else vm.target_status
        state = PredictorState(
            active_state=model_state(active),
            target_state="" if same else model_state(target),
            transition=_TRANSITIONS.get(vm.state, UP_TO_DATE),
            failed_copies=_count(active, ModelState.LOADING_FAILED) + (
                0 if same else _count(target, ModelState.LOADING_FAILED)),
            total_copies=_count(active, ModelState.LOADED, ModelState.LOADING),
            failure=_failure_of(target, vm.target),
        )
    else:
        state = PredictorState()
    if problem is None:
        return state
    failure = FailureInfo(problem.reason, problem.message, problem.model_id)
    if problem.invalid:
        return replace(state, transition=INVALID_SPEC, failure=failure)
    if exists and vm is not None and vm.active != problem.model_id:
        return replace(state, target_state=FAILED_TO_LOAD, transition=BLOCKED, failure=failure)
    return replace(state, active_state=FAILED_TO_LOAD, target_state="", transition=BLOCKED, failure=failure)


# -- rendering -----------------------------------------------------------------------------------

def rfc3339(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _failure_json(f: FailureInfo, previous: Mapping[str, Any] | None, now_ms: int, id_field: str) -> dict[str, Any]:
    out: dict[str, Any] = {"reason": f.reason, "message": f.message}
    if f.model_id:
        out[id_field] = f.model_id
    if f.location:
        out["location"] = f.location
    if f.time_ms:
        out["time"] = rfc3339(f.time_ms)
    elif previous and all(previous.get(k) == v for k, v in out.items()) and previous.get("time"):
        out["time"] = previous["time"]  # the same failure: keep its time (no status churn)
    else:
        out["time"] = rfc3339(now_ms)
    return out


def _condition(kind: str, ok: bool, previous: list[Any], now_ms: int, reason: str, message: str) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = next((c for c in previous if isinstance(c, dict) and c.get("type") == kind), None)
    since = before.get("lastTransitionTime") if before and before.get("status") == status else None
    cond: dict[str, Any] = {"type": kind, "status": status, "lastTransitionTime": since or rfc3339(now_ms)}
    if not ok and reason:
        cond["reason"] = reason
        if message:
            cond["message"] = message
    return cond


def isvc_status(state: PredictorState, endpoints: ServiceEndpoints | None, *, now_ms: int,
                previous: Mapping[str, Any] | None = None, generation: int = 0) -> dict[str, Any]:
    """``status`` of an InferenceService, as ModelMesh wrote it. ``previous`` (the status written
    before) keeps transition times and failure times stable while nothing changes."""
    previous = previous or {}
    prev_model = previous.get("modelStatus") if isinstance(previous.get("modelStatus"), dict) else {}
    available = state.available and endpoints is not None
    model_status: dict[str, Any] = {
        "transitionStatus": state.transition,
        "states": {"activeModelState": state.active_state, "targetModelState": state.target_state},
        "copies": {"failedCopies": state.failed_copies, "totalCopies": state.total_copies},
    }
    if state.failure is not None:
        model_status["lastFailureInfo"] = _failure_json(state.failure, prev_model.get("lastFailureInfo"), now_ms,
                                                        "modelRevisionName")
    reason = state.failure.reason if state.failure else ""
    message = state.failure.message if state.failure else ""
    if not state.failure and not available:
        reason, message = "ModelNotReady", f"active model state is {state.active_state}"
    prev_conditions = previous.get("conditions") if isinstance(previous.get("conditions"), list) else []
    out: dict[str, Any] = {
        "conditions": [
            _condition("PredictorReady", available, prev_conditions, now_ms, reason, message),
            _condition("Ready", available, prev_conditions, now_ms, reason, message),
        ],
        "modelStatus": model_status,
    }
    if generation:
        out["observedGeneration"] = generation
    if available and endpoints is not None:
        out["url"] = endpoints.grpc_url
        out["components"] = {"predictor": {"url": endpoints.grpc_url, "grpcUrl": endpoints.grpc_url,
                                           "restUrl": endpoints.rest}}
    return out


def predictor_status(state: PredictorState, endpoints: ServiceEndpoints | None, *, now_ms: int,
                     previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``status`` of a ModelMesh Predictor (v1alpha1)."""
    previous = previous or {}
    out: dict[str, Any] = {
        "available": state.available and endpoints is not None,
        "transitionStatus": state.transition,
        "activeModelState": state.active_state,
        "targetModelState": state.target_state,
        "totalCopies": state.total_copies,
        "failedCopies": state.failed_copies,
        "grpcEndpoint": endpoints.grpc_url if endpoints else "",
        "httpEndpoint": endpoints.rest if endpoints else "",
    }
    if state.failure is not None:
        prev = previous.get("lastFailureInfo") if isinstance(previous.get("lastFailureInfo"), dict) else None
        out["lastFailureInfo"] = _failure_json(state.failure, prev, now_ms, "modelId")
    return out
