"""Property test of vmodel transitions (issue text: "a vmodel always has a servable active model
during a transition").

A Hypothesis state machine plays a mesh: a few registered models whose states only move forward
(NOT_LOADED -> LOADING -> LOADED, or -> LOADING_FAILED and back to LOADING when the failure records
expire; a LOADED model stays LOADED with one or more copies), and a client that points one vmodel
at random targets with setVModel. After each model state change the mesh advances the vmodel, as
the instance does on a load outcome. Invariant: once the vmodel's active model is LOADED, it stays
pointed at a LOADED model across every setVModel without ``force`` and every advance: the old
model until the target is LOADED, then the target.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from kserve_mesh.core.errors import FailedPrecondition
from kserve_mesh.core.ids import ModelId, VModelId
from kserve_mesh.core.records import ModelState, VModelRecord, VModelState
from kserve_mesh.core.vmodel import ModelView, SetVModel, advance, decide_set, status_of

MODELS = [ModelId(f"m{i}") for i in range(5)]
VM = VModelId("vm")
OWNER = "isvc"

# Forward moves of a model's state in a mesh that never unloads.
NEXT_STATES = {
    ModelState.NOT_LOADED: [ModelState.LOADING],
    ModelState.LOADING: [ModelState.LOADED, ModelState.LOADING_FAILED],
    ModelState.LOADING_FAILED: [ModelState.LOADING, ModelState.LOADED],
    ModelState.LOADED: [ModelState.LOADED],  # copies may change, never to zero
}


class VModelMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.states: dict[ModelId, ModelState] = dict.fromkeys(MODELS, ModelState.NOT_LOADED)
        self.copies: dict[ModelId, int] = dict.fromkeys(MODELS, 0)
        self.vm: VModelRecord | None = None
        self.transitions = 0

    def view(self, model: ModelId) -> ModelView:
        state = self.states.get(model, ModelState.NOT_FOUND)
        return ModelView(state, self.copies.get(model, 0))

    def serving(self) -> bool:
        return self.vm is not None and self.states[self.vm.active] is ModelState.LOADED

    @initialize(model=st.sampled_from(MODELS), loaded=st.booleans())
    def create(self, model: ModelId, loaded: bool) -> None:
        if loaded:
            self.states[model], self.copies[model] = ModelState.LOADED, 1
        self.vm = decide_set(None, SetVModel(VM, model, owner=OWNER), None, self.view(model))
        assert (self.vm.active, self.vm.target, self.vm.owner) == (model, model, OWNER)

    @rule(new_target=st.sampled_from(MODELS), force=st.booleans(), update_only=st.booleans())
    def set_vmodel(self, new_target: ModelId, force: bool, update_only: bool) -> None:
        assert self.vm is not None
        was_serving = self.serving()
        before = self.vm
        req = SetVModel(VM, new_target, owner=OWNER, force=force, update_only=update_only)
        self.vm = decide_set(before, req, self.view(before.active), self.view(new_target))
        assert self.vm.target == new_target and self.vm.active in (before.active, new_target)
        if self.vm.active != before.active:
            assert self.vm.active == new_target  # only ever switch to the requested new_target
        if was_serving and not force:
            assert self.serving(), f"setVModel {new_target} left {self.vm.active} ({self.states[self.vm.active]})"
        if self.vm.transitioning:
            self.transitions += 1
            assert self.vm.active == before.active
            assert self.vm.failed == (self.states[new_target] is ModelState.LOADING_FAILED)

    @rule()
    def set_unregistered_target_is_refused(self) -> None:
        assert self.vm is not None
        before = self.vm
        with pytest.raises(FailedPrecondition):
            decide_set(
                before,
                SetVModel(VM, ModelId("ghost"), owner=OWNER),
                self.view(before.active),
                self.view(ModelId("ghost")),
            )
        assert self.vm is before

    @rule(model=st.sampled_from(MODELS), data=st.data())
    def mesh_changes_a_model(self, model: ModelId, data: st.DataObject) -> None:
        assert self.vm is not None
        was_serving = self.serving()
        new_state = data.draw(st.sampled_from(NEXT_STATES[self.states[model]]))
        self.states[model] = new_state
        self.copies[model] = data.draw(st.integers(1, 3)) if new_state is ModelState.LOADED else 0
        before = self.vm
        self.vm = advance(before, self.view(before.target))
        if before.transitioning and self.states[before.target] is ModelState.LOADED:
            assert self.vm.active == before.target and not self.vm.transitioning
        else:
            assert self.vm.active == before.active  # the old model serves until the target is LOADED
        if was_serving:
            assert self.serving()

    @invariant()
    def status_agrees_with_the_record(self) -> None:
        if self.vm is None:
            return
        status = status_of(self.vm)
        if not self.vm.transitioning:
            assert status is VModelState.DEFINED
        elif self.vm.failed:
            assert status is VModelState.TRANSITION_FAILED
        else:
            assert status is VModelState.TRANSITIONING


VModelMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestVModelProperties = VModelMachine.TestCase
