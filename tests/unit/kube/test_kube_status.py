"""Mesh vmodel/model states -> InferenceService and Predictor status, field by field as ModelMesh
wrote them (quick start's `kubectl describe isvc` output is the reference)."""

from __future__ import annotations

from kserve_mesh.core.records import ModelState, VModelState
from kserve_mesh.kube.core.status import (
    PredictorState,
    ServiceEndpoints,
    SpecProblem,
    isvc_status,
    predictor_state,
    predictor_status,
    rfc3339,
)
from kserve_mesh.kube.core.views import CopyInfo, ModelStatusInfo, VModelStatusInfo

NOW = 1_700_000_000_000
EP = ServiceEndpoints("modelmesh-serving.modelmesh-serving:8033", "http://modelmesh-serving.modelmesh-serving:8008")
A, B = "m__isvc-aaaaaaaaaa", "m__isvc-bbbbbbbbbb"


def ms(model_id: str, state: ModelState, *copies: CopyInfo, errors: tuple[str, ...] = ()) -> ModelStatusInfo:
    return ModelStatusInfo(model_id, state, errors, copies)


def loaded(model_id: str, n: int = 1) -> ModelStatusInfo:
    return ms(model_id, ModelState.LOADED, *(CopyInfo(f"pod-{i}", ModelState.LOADED, NOW) for i in range(n)))


def vm(state: VModelState, active: ModelStatusInfo, target: ModelStatusInfo | None = None) -> VModelStatusInfo:
    return VModelStatusInfo("m", state, active.model_id, (target or active).model_id, "isvc", active, target)


def test_quickstart_describe_output() -> None:
    state = predictor_state(vm(VModelState.DEFINED, loaded(A, 2)))
    status = isvc_status(state, EP, now_ms=NOW)
    assert status["modelStatus"] == {
        "transitionStatus": "UpToDate",
        "states": {"activeModelState": "Loaded", "targetModelState": ""},
        "copies": {"failedCopies": 0, "totalCopies": 2},
    }
    url = "grpc://modelmesh-serving.modelmesh-serving:8033"
    assert status["url"] == url
    assert status["components"] == {"predictor": {"url": url, "grpcUrl": url,
                                                  "restUrl": "http://modelmesh-serving.modelmesh-serving:8008"}}
    assert [(c["type"], c["status"]) for c in status["conditions"]] == [("PredictorReady", "True"), ("Ready", "True")]
    assert all(c["lastTransitionTime"] == rfc3339(NOW) for c in status["conditions"])


def test_model_states_map_like_modelmesh_serving() -> None:
    for mesh_state, shown in [(ModelState.NOT_LOADED, "Standby"), (ModelState.LOADING, "Loading"),
                              (ModelState.LOADED, "Loaded"), (ModelState.LOADING_FAILED, "FailedToLoad"),
                              (ModelState.NOT_FOUND, "Pending")]:
        assert predictor_state(vm(VModelState.DEFINED, ms(A, mesh_state))).active_state == shown


def test_no_vmodel_is_pending_and_not_ready() -> None:
    for vmodel in (None, VModelStatusInfo("m", VModelState.NOT_FOUND)):
        state = predictor_state(vmodel)
        assert state == PredictorState()
        status = isvc_status(state, EP, now_ms=NOW)
        assert status["modelStatus"]["states"]["activeModelState"] == "Pending"
        assert "url" not in status and "components" not in status
        assert {c["status"] for c in status["conditions"]} == {"False"}
        assert status["conditions"][0]["reason"] == "ModelNotReady"


def test_transition_in_progress_shows_the_target_state() -> None:
    state = predictor_state(vm(VModelState.TRANSITIONING, loaded(A), ms(B, ModelState.LOADING,
                                                                         CopyInfo("pod-0", ModelState.LOADING, NOW))))
    assert (state.active_state, state.target_state, state.transition) == ("Loaded", "Loading", "InProgress")
    assert state.available and state.total_copies == 1 and state.failure is None


def test_failed_target_blocks_the_transition_with_failure_info() -> None:
    failed = ms(B, ModelState.LOADING_FAILED, CopyInfo("pod-1", ModelState.LOADING_FAILED, NOW - 5000),
                errors=("model file is corrupt",))
    state = predictor_state(vm(VModelState.TRANSITION_FAILED, loaded(A), failed))
    assert (state.active_state, state.target_state, state.transition) == ("Loaded", "FailedToLoad",
                                                                          "BlockedByFailedLoad")
    assert state.failed_copies == 1 and state.available
    status = isvc_status(state, EP, now_ms=NOW)
    assert status["modelStatus"]["lastFailureInfo"] == {
        "reason": "ModelLoadFailed", "message": "model file is corrupt", "modelRevisionName": B,
        "location": "pod-1", "time": rfc3339(NOW - 5000)}
    assert status["conditions"][0]["status"] == "True"  # the active model still serves


def test_failed_only_model_is_not_ready() -> None:
    failed = ms(A, ModelState.LOADING_FAILED, CopyInfo("pod-0", ModelState.LOADING_FAILED, NOW), errors=("boom",))
    state = predictor_state(vm(VModelState.DEFINED, failed))
    assert state.active_state == "FailedToLoad" and not state.available
    status = isvc_status(state, EP, now_ms=NOW)
    assert status["modelStatus"]["lastFailureInfo"]["modelRevisionName"] == A
    assert status["conditions"][0] == {"type": "PredictorReady", "status": "False",
                                       "lastTransitionTime": rfc3339(NOW), "reason": "ModelLoadFailed",
                                       "message": "boom"}
    assert "url" not in status


def test_no_supporting_runtime_for_a_new_model() -> None:
    problem = SpecProblem("NoSupportingRuntime", "no ServingRuntime supports model format 'tensorflow'", A)
    state = predictor_state(None, problem)
    assert (state.active_state, state.transition) == ("FailedToLoad", "BlockedByFailedLoad")
    info = isvc_status(state, EP, now_ms=NOW)["modelStatus"]["lastFailureInfo"]
    assert info == {"reason": "NoSupportingRuntime", "message": problem.message, "modelRevisionName": A,
                    "time": rfc3339(NOW)}


def test_runtime_problem_for_an_update_keeps_the_active_model() -> None:
    problem = SpecProblem("RuntimeNotRecognized", "runtime 'x' not found", B)
    state = predictor_state(vm(VModelState.DEFINED, loaded(A)), problem)
    assert (state.active_state, state.target_state, state.transition) == ("Loaded", "FailedToLoad",
                                                                          "BlockedByFailedLoad")
    assert state.available and state.failure is not None and state.failure.reason == "RuntimeNotRecognized"


def test_invalid_spec_keeps_serving_what_the_mesh_has() -> None:
    problem = SpecProblem("InvalidPredictorSpec", "spec.predictor.model.foo: unknown field", invalid=True)
    state = predictor_state(vm(VModelState.DEFINED, loaded(A)), problem)
    assert (state.active_state, state.transition) == ("Loaded", "InvalidSpec")
    info = isvc_status(state, EP, now_ms=NOW)["modelStatus"]["lastFailureInfo"]
    assert info["reason"] == "InvalidPredictorSpec" and "modelRevisionName" not in info


def test_times_stay_put_while_nothing_changes() -> None:
    problem = SpecProblem("NoSupportingRuntime", "none", A)
    first = isvc_status(predictor_state(None, problem), EP, now_ms=NOW)
    later = isvc_status(predictor_state(None, problem), EP, now_ms=NOW + 60_000, previous=first)
    assert later == first
    ready = isvc_status(predictor_state(vm(VModelState.DEFINED, loaded(A))), EP, now_ms=NOW + 90_000, previous=later)
    assert all(c["lastTransitionTime"] == rfc3339(NOW + 90_000) for c in ready["conditions"])


def test_observed_generation_and_no_endpoints() -> None:
    state = predictor_state(vm(VModelState.DEFINED, loaded(A)))
    assert isvc_status(state, EP, now_ms=NOW, generation=3)["observedGeneration"] == 3
    no_ep = isvc_status(state, None, now_ms=NOW)
    assert "url" not in no_ep and no_ep["conditions"][0]["status"] == "False"


def test_predictor_status_fields() -> None:
    failed = ms(B, ModelState.LOADING_FAILED, CopyInfo("pod-1", ModelState.LOADING_FAILED, NOW), errors=("bad",))
    state = predictor_state(vm(VModelState.TRANSITION_FAILED, loaded(A, 2), failed))
    status = predictor_status(state, EP, now_ms=NOW)
    assert status == {
        "available": True, "transitionStatus": "BlockedByFailedLoad", "activeModelState": "Loaded",
        "targetModelState": "FailedToLoad", "totalCopies": 2, "failedCopies": 1,
        "grpcEndpoint": "grpc://modelmesh-serving.modelmesh-serving:8033",
        "httpEndpoint": "http://modelmesh-serving.modelmesh-serving:8008",
        "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "bad", "modelId": B, "location": "pod-1",
                            "time": rfc3339(NOW)},
    }
