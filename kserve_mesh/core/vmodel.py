"""VModel transitions: a stable name that moves to a new model without losing a request.

A vmodel routes to its ``active`` model. ``setVModel`` with a new target either switches at once or
starts a transition (REFERENCE.md §5):

- switch at once when ``force`` is set, when the active model has no loaded copy (nothing would be
  lost), or when the active model has one copy and the target is already loaded;
- otherwise TRANSITIONING: the target loads while requests keep going to the active model, and only
  when the target is LOADED does ``active := target`` happen (one compare-and-set in the store);
- a target that fails to load leaves the vmodel TRANSITION_FAILED, still serving the active model,
  until the target loads after all or the vmodel is pointed elsewhere.

These functions are pure; the mesh feeds them model states and writes the records they return.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kserve_mesh.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, VModelNotFound
from kserve_mesh.core.ids import ModelId, VModelId
from kserve_mesh.core.records import ModelState, VModelRecord, VModelState


@dataclass(frozen=True, slots=True)
class SetVModel:
    vmodel_id: VModelId
    target: ModelId
    owner: str = ""
    update_only: bool = False
    force: bool = False
    expected_target: str = ""


@dataclass(frozen=True, slots=True)
class ModelView:
    """What a transition decision needs to know about a model right now."""

    state: ModelState
    loaded_copies: int = 0


def check_owner(existing: VModelRecord | None, vmodel_id: str, owner: str) -> None:
    if existing is not None and owner and existing.owner != owner:
        raise AlreadyExists(
            f"vmodel '{vmodel_id}' is owned by '{existing.owner}', not '{owner}'"
        )


def decide_set(existing: VModelRecord | None, req: SetVModel, active: ModelView | None, target: ModelView) -> VModelRecord:
    """The vmodel record after ``setVModel``; raises for requests that must be refused."""
    if not req.vmodel_id:
        raise InvalidArgument("vModelId must not be empty")
    if not req.target:
        raise InvalidArgument(f"setVModel '{req.vmodel_id}': targetModelId must not be empty")
    if target.state is ModelState.NOT_FOUND:
        raise FailedPrecondition(
            f"setVModel '{req.vmodel_id}': target model '{req.target}' is not registered"
        )
    if existing is None and req.update_only:
        raise VModelNotFound(req.vmodel_id)
    if req.expected_target:
        current = existing.target if existing is not None else None
        same_as_new = req.expected_target == req.target and (current is None or current == req.target)
        if not same_as_new and current != req.expected_target:
            raise FailedPrecondition(
                f"vmodel '{req.vmodel_id}' target is '{current or ''}', not the expected "
                f"'{req.expected_target}'"
            )
    check_owner(existing, req.vmodel_id, req.owner)
    if existing is None:
        return VModelRecord(req.vmodel_id, req.owner, req.target, req.target)
    if existing.active == req.target:
        return replace(existing, target=req.target, failed=False)
    if switch_now(req.force, active, target):
        return replace(existing, active=req.target, target=req.target, failed=False)
    failed = target.state is ModelState.LOADING_FAILED
    return replace(existing, target=req.target, failed=failed)


def switch_now(force: bool, active: ModelView | None, target: ModelView) -> bool:
    if force or active is None or active.state is ModelState.NOT_FOUND:
        return True
    if active.loaded_copies == 0:
        return True
    return active.loaded_copies == 1 and target.state is ModelState.LOADED


def advance(vm: VModelRecord, target: ModelView) -> VModelRecord:
    """Move a transitioning vmodel on, given the target model's state now."""
    if not vm.transitioning:
        return vm
    if target.state is ModelState.LOADED:
        return replace(vm, active=vm.target, failed=False)
    failed = target.state is ModelState.LOADING_FAILED
    return vm if vm.failed == failed else replace(vm, failed=failed)


def status_of(vm: VModelRecord | None) -> VModelState:
    if vm is None:
        return VModelState.NOT_FOUND
    if not vm.transitioning:
        return VModelState.DEFINED
    return VModelState.TRANSITION_FAILED if vm.failed else VModelState.TRANSITIONING


def referenced_models(vm: VModelRecord) -> set[ModelId]:
    return {vm.active, vm.target}
