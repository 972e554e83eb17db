"""VModel rules: setVModel decisions (create, CAS, owner, switch now or transition) and advance."""

from __future__ import annotations

import pytest

from kserve_mesh.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, VModelNotFound
from kserve_mesh.core.ids import ModelId, VModelId
from kserve_mesh.core.records import ModelState, VModelRecord, VModelState
from kserve_mesh.core.vmodel import (
    ModelView,
    SetVModel,
    advance,
    check_owner,
    decide_set,
    referenced_models,
    status_of,
    switch_now,
)

M = ModelId
V = VModelId
LOADED1 = ModelView(ModelState.LOADED, 1)
LOADED2 = ModelView(ModelState.LOADED, 2)
NOT_LOADED = ModelView(ModelState.NOT_LOADED, 0)
LOADING = ModelView(ModelState.LOADING, 0)
FAILED = ModelView(ModelState.LOADING_FAILED, 0)
MISSING = ModelView(ModelState.NOT_FOUND, 0)


def vm(active: str, target: str | None = None, owner: str = "isvc", failed: bool = False) -> VModelRecord:
    return VModelRecord(V("v"), owner, M(active), M(target or active), failed)


def req(target: str, **kw) -> SetVModel:  # type: ignore[no-untyped-def]
    return SetVModel(V("v"), M(target), **kw)


# -- creating ------------------------------------------------------------------------------------
def test_create_points_active_and_target_at_the_model() -> None:
    new = decide_set(None, req("m1", owner="isvc"), None, NOT_LOADED)
    assert new == VModelRecord(V("v"), "isvc", M("m1"), M("m1"))
    assert status_of(new) is VModelState.DEFINED


def test_update_only_on_a_missing_vmodel_is_not_found() -> None:
    with pytest.raises(VModelNotFound, match="vmodel 'v' not found"):
        decide_set(None, req("m1", update_only=True), None, LOADED1)


def test_update_only_on_an_existing_vmodel_updates() -> None:
    new = decide_set(vm("m1"), req("m2", update_only=True), LOADED2, LOADING)
    assert (new.active, new.target) == ("m1", "m2")


@pytest.mark.parametrize(
    ("request_", "error", "text"),
    [
        (SetVModel(V(""), M("m1")), InvalidArgument, "vModelId"),
        (SetVModel(V("v"), M("")), InvalidArgument, "targetModelId"),
    ],
)
def test_empty_ids_are_invalid(request_: SetVModel, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        decide_set(None, request_, None, LOADED1)


def test_unregistered_target_is_a_failed_precondition() -> None:
    with pytest.raises(FailedPrecondition, match="target model 'ghost' is not registered"):
        decide_set(vm("m1"), req("ghost"), LOADED1, MISSING)


# -- owner and compare-and-set -------------------------------------------------------------------
def test_owner_mismatch_is_already_exists() -> None:
    with pytest.raises(AlreadyExists, match="owned by 'isvc', not 'ksp'"):
        decide_set(vm("m1", owner="isvc"), req("m2", owner="ksp"), LOADED1, LOADED1)
    with pytest.raises(AlreadyExists):
        check_owner(vm("m1", owner="isvc"), "v", "ksp")


def test_empty_owner_in_the_request_matches_any_owner() -> None:
    check_owner(vm("m1", owner="isvc"), "v", "")
    check_owner(None, "v", "anyone")
    new = decide_set(vm("m1", owner="isvc"), req("m2"), NOT_LOADED, LOADED1)
    assert new.owner == "isvc"


def test_expected_target_must_match_the_current_target() -> None:
    existing = vm("m1", "m2")
    with pytest.raises(FailedPrecondition, match="target is 'm2', not the expected 'm1'"):
        decide_set(existing, req("m3", expected_target="m1"), LOADED2, LOADING)
    new = decide_set(existing, req("m3", expected_target="m2"), LOADED2, LOADING)
    assert (new.active, new.target) == ("m1", "m3")


def test_expected_target_on_create() -> None:
    # Creating with expected == new target is an idempotent create; any other expectation fails.
    assert decide_set(None, req("m1", expected_target="m1"), None, LOADED1).target == "m1"
    with pytest.raises(FailedPrecondition, match="target is '', not the expected 'm0'"):
        decide_set(None, req("m1", expected_target="m0"), None, LOADED1)


# -- switch now or transition --------------------------------------------------------------------
def test_force_switches_at_once_even_to_an_unloaded_target() -> None:
    new = decide_set(vm("m1"), req("m2", force=True), LOADED2, NOT_LOADED)
    assert (new.active, new.target) == ("m2", "m2") and status_of(new) is VModelState.DEFINED


def test_active_without_copies_switches_at_once() -> None:
    new = decide_set(vm("m1"), req("m2"), NOT_LOADED, NOT_LOADED)
    assert (new.active, new.target) == ("m2", "m2")


def test_active_model_gone_switches_at_once() -> None:
    assert decide_set(vm("m1"), req("m2"), None, NOT_LOADED).active == "m2"
    assert decide_set(vm("m1"), req("m2"), MISSING, NOT_LOADED).active == "m2"


def test_one_active_copy_and_a_loaded_target_switches_at_once() -> None:
    new = decide_set(vm("m1"), req("m2"), LOADED1, LOADED1)
    assert (new.active, new.target) == ("m2", "m2")


def test_loaded_active_and_unloaded_target_transitions() -> None:
    new = decide_set(vm("m1"), req("m2"), LOADED1, NOT_LOADED)
    assert (new.active, new.target, new.failed) == ("m1", "m2", False)
    assert new.transitioning and status_of(new) is VModelState.TRANSITIONING


def test_several_active_copies_transition_even_when_the_target_is_loaded() -> None:
    new = decide_set(vm("m1"), req("m2"), LOADED2, LOADED1)
    assert (new.active, new.target) == ("m1", "m2")
    assert advance(new, LOADED1).active == "m2"


def test_failed_target_starts_transition_failed() -> None:
    new = decide_set(vm("m1"), req("m2"), LOADED1, FAILED)
    assert (new.active, new.target, new.failed) == ("m1", "m2", True)
    assert status_of(new) is VModelState.TRANSITION_FAILED


def test_setting_the_active_model_again_cancels_a_transition() -> None:
    new = decide_set(vm("m1", "m2", failed=True), req("m1"), LOADED1, LOADED1)
    assert (new.active, new.target, new.failed) == ("m1", "m1", False)


def test_retargeting_mid_transition_keeps_the_active_model() -> None:
    new = decide_set(vm("m1", "m2"), req("m3"), LOADED2, LOADING)
    assert (new.active, new.target) == ("m1", "m3")


def test_switch_now_table() -> None:
    assert switch_now(True, LOADED2, NOT_LOADED)
    assert switch_now(False, None, NOT_LOADED)
    assert switch_now(False, MISSING, NOT_LOADED)
    assert switch_now(False, NOT_LOADED, NOT_LOADED)
    assert switch_now(False, LOADED1, LOADED1)
    assert not switch_now(False, LOADED1, LOADING)
    assert not switch_now(False, LOADED2, LOADED1)
    assert not switch_now(False, LOADED1, FAILED)


# -- advancing a transition ----------------------------------------------------------------------
def test_advance_swaps_when_the_target_is_loaded() -> None:
    after = advance(vm("m1", "m2"), LOADED1)
    assert (after.active, after.target, after.failed) == ("m2", "m2", False)
    assert status_of(after) is VModelState.DEFINED


def test_advance_waits_while_the_target_loads() -> None:
    before = vm("m1", "m2")
    assert advance(before, LOADING) is before
    assert advance(before, NOT_LOADED) is before


def test_advance_marks_and_clears_a_failed_target() -> None:
    failed = advance(vm("m1", "m2"), FAILED)
    assert failed.failed and failed.active == "m1" and status_of(failed) is VModelState.TRANSITION_FAILED
    assert advance(failed, FAILED) is failed
    retrying = advance(failed, LOADING)  # failure records expired: loading again
    assert not retrying.failed and status_of(retrying) is VModelState.TRANSITIONING
    assert advance(failed, LOADED1).active == "m2"


def test_advance_of_a_settled_vmodel_is_a_no_op() -> None:
    settled = vm("m1")
    assert advance(settled, FAILED) is settled


def test_status_of_and_referenced_models() -> None:
    assert status_of(None) is VModelState.NOT_FOUND
    assert status_of(vm("m1")) is VModelState.DEFINED
    assert referenced_models(vm("m1", "m2")) == {"m1", "m2"}
    assert referenced_models(vm("m1")) == {"m1"}
