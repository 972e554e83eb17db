"""HPAs for runtime Deployments (kube/controller/deploy/autoscaling.py and plan.py): KServe's
annotations read as ModelMesh Serving reads them, the HPA planned with its Deployment (created,
updated, deleted when the annotation goes or the runtime scales to zero), replicas left to it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kserve_mesh.kube.controller.deploy.autoscaling import (
    AUTOSCALER_CLASS,
    MAX_SCALE,
    METRICS,
    MIN_SCALE,
    TARGET_UTILIZATION,
    Autoscaling,
    autoscaling_of,
)
from kserve_mesh.kube.controller.deploy.config import ServingConfig
from kserve_mesh.kube.controller.deploy.objects import ANNOTATION_LAST_USED
from kserve_mesh.kube.controller.deploy.plan import HPA, Create, Delete, Patch, Warn, plan_namespace

CONFIG = ServingConfig(pods_per_runtime=2, scale_to_zero_grace_seconds=60)
BASE = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime",
        "metadata": {"name": "py", "uid": "u1"},
        "spec": {"containers": [{"name": "rt", "image": "img:1"}]}}


def runtime(**annotations: str) -> dict[str, Any]:
    rt = copy.deepcopy(BASE)
    rt["metadata"]["annotations"] = annotations
    return rt


def test_annotations_as_kserve_defines_them() -> None:
    assert autoscaling_of(runtime()) == (None, [])
    assert autoscaling_of(runtime(**{AUTOSCALER_CLASS: "none"})) == (None, [])
    assert autoscaling_of(runtime(**{AUTOSCALER_CLASS: "hpa"})) == (Autoscaling(1, 1, "cpu", 80), [])
    got, problems = autoscaling_of(runtime(**{AUTOSCALER_CLASS: "hpa", METRICS: "memory", TARGET_UTILIZATION: "60",
                                              MIN_SCALE: "2", MAX_SCALE: "6"}))
    assert got == Autoscaling(2, 6, "memory", 60) and problems == []
    assert autoscaling_of(runtime(**{AUTOSCALER_CLASS: "hpa", MIN_SCALE: "3"}))[0] == Autoscaling(3, 3, "cpu", 80)


@pytest.mark.parametrize(("annotations", "key", "used"), [
    ({METRICS: "gpu"}, METRICS, Autoscaling(1, 1, "cpu", 80)),
    ({TARGET_UTILIZATION: "0"}, TARGET_UTILIZATION, Autoscaling(1, 1, "cpu", 80)),
    ({TARGET_UTILIZATION: "lots"}, TARGET_UTILIZATION, Autoscaling(1, 1, "cpu", 80)),
    ({MIN_SCALE: "0"}, MIN_SCALE, Autoscaling(1, 1, "cpu", 80)),
    ({MIN_SCALE: "3", MAX_SCALE: "2"}, MAX_SCALE, Autoscaling(3, 3, "cpu", 80)),
])
def test_a_bad_annotation_is_a_problem_naming_it_and_its_default_is_used(
        annotations: dict[str, str], key: str, used: Autoscaling) -> None:
    got, problems = autoscaling_of(runtime(**{AUTOSCALER_CLASS: "hpa", **annotations}))
    assert got == used and [p.annotation for p in problems] == [key]
    assert str(problems[0]).startswith(f"{key}: ")


def test_an_autoscaler_class_we_do_not_have_makes_no_hpa_and_says_so() -> None:
    got, problems = autoscaling_of(runtime(**{AUTOSCALER_CLASS: "kpa"}))
    assert got is None and "'kpa' is not supported" in problems[0].message


def _apply(actions: list[Any], deployments: dict[str, Any], hpas: dict[str, Any]) -> None:
    """Carry out a plan on plain dicts (merge patches are shallow enough here)."""
    for a in actions:
        store = hpas if a.kind == HPA else deployments if a.kind == "Deployment" else None
        if store is None:
            continue
        if isinstance(a, Create):
            store["py"] = copy.deepcopy(a.body)
        elif isinstance(a, Patch):
            obj = store["py"]
            for part in ("metadata", "spec"):
                for k, v in (a.body.get(part) or {}).items():
                    if k == "annotations":
                        ann = obj["metadata"].setdefault("annotations", {})
                        ann.update(v)
                        for gone in [x for x, y in ann.items() if y is None]:
                            del ann[gone]
                    else:
                        obj[part][k] = copy.deepcopy(v)
        elif isinstance(a, Delete):
            store.pop("py", None)


def test_the_hpa_is_created_updated_and_deleted_with_its_annotations_and_owns_the_replicas() -> None:
    deployments: dict[str, Any] = {}
    hpas: dict[str, Any] = {}
    rt = runtime(**{AUTOSCALER_CLASS: "hpa", MIN_SCALE: "2", MAX_SCALE: "5", TARGET_UTILIZATION: "70"})
    actions = plan_namespace(CONFIG, "ns", {"py": rt}, {"py"}, deployments, True, 1000.0, hpas=hpas)
    _apply(actions, deployments, hpas)
    assert deployments["py"]["spec"]["replicas"] == 2  # min-scale
    hpa = hpas["py"]
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["metadata"]["name"] == "modelmesh-serving-py"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "modelmesh-serving-py"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
    assert hpa["metadata"]["ownerReferences"][0]["kind"] == "ServingRuntime"
    # Nothing to do on the next pass; the HPA scaling the Deployment to 4 is left alone.
    assert plan_namespace(CONFIG, "ns", {"py": rt}, {"py"}, deployments, True, 1001.0, hpas=hpas) == []
    deployments["py"]["spec"]["replicas"] = 4
    assert plan_namespace(CONFIG, "ns", {"py": rt}, {"py"}, deployments, True, 1002.0, hpas=hpas) == []
    # A changed annotation updates the HPA (not the Deployment's replicas).
    rt["metadata"]["annotations"][MAX_SCALE] = "8"
    actions = plan_namespace(CONFIG, "ns", {"py": rt}, {"py"}, deployments, True, 1003.0, hpas=hpas)
    assert [(type(a), a.kind) for a in actions] == [(Patch, HPA)]
    _apply(actions, deployments, hpas)
    assert hpas["py"]["spec"]["maxReplicas"] == 8 and deployments["py"]["spec"]["replicas"] == 4
    # The annotation goes: the HPA is deleted and podsPerRuntime is back in charge.
    del rt["metadata"]["annotations"][AUTOSCALER_CLASS]
    actions = plan_namespace(CONFIG, "ns", {"py": rt}, {"py"}, deployments, True, 1004.0, hpas=hpas)
    assert {(type(a), a.kind) for a in actions} == {(Delete, HPA), (Patch, "Deployment")}
    _apply(actions, deployments, hpas)
    assert hpas == {} and deployments["py"]["spec"]["replicas"] == 2


def test_an_unused_autoscaled_runtime_keeps_its_hpa_for_the_grace_period_then_scales_to_zero() -> None:
    deployments: dict[str, Any] = {}
    hpas: dict[str, Any] = {}
    rt = runtime(**{AUTOSCALER_CLASS: "hpa", MAX_SCALE: "3"})
    _apply(plan_namespace(CONFIG, "ns", {"py": rt}, {"py"}, deployments, True, 0.0, hpas=hpas), deployments, hpas)
    deployments["py"]["spec"]["replicas"] = 3  # the HPA scaled up
    actions = plan_namespace(CONFIG, "ns", {"py": rt}, set(), deployments, True, 10.0, hpas=hpas)
    assert [(type(a), a.kind) for a in actions] == [(Patch, "Deployment")]  # marked unused only
    _apply(actions, deployments, hpas)
    assert deployments["py"]["metadata"]["annotations"][ANNOTATION_LAST_USED] == "10"
    assert deployments["py"]["spec"]["replicas"] == 3 and "py" in hpas
    actions = plan_namespace(CONFIG, "ns", {"py": rt}, set(), deployments, True, 71.0, hpas=hpas)
    assert [(type(a), a.kind) for a in actions] == [(Delete, HPA), (Patch, "Deployment")]
    _apply(actions, deployments, hpas)
    assert hpas == {} and deployments["py"]["spec"]["replicas"] == 0
    # Used again: back at min-scale with a new HPA.
    actions = plan_namespace(CONFIG, "ns", {"py": rt}, {"py"}, deployments, True, 80.0, hpas=hpas)
    _apply(actions, deployments, hpas)
    assert deployments["py"]["spec"]["replicas"] == 1 and hpas["py"]["spec"]["maxReplicas"] == 3


def test_a_runtime_that_is_gone_takes_its_hpa_with_it_and_problems_become_warnings() -> None:
    deployments: dict[str, Any] = {}
    hpas: dict[str, Any] = {}
    rt = runtime(**{AUTOSCALER_CLASS: "hpa", METRICS: "gpu"})
    actions = plan_namespace(CONFIG, "ns", {"py": rt}, {"py"}, deployments, True, 0.0, hpas=hpas)
    warns = [a for a in actions if isinstance(a, Warn)]
    assert [(w.kind, w.name, w.reason) for w in warns] == [("ServingRuntime", "py", "InvalidAutoscaling")]
    assert warns[0].message.startswith(f"{METRICS}: must be cpu or memory")
    _apply(actions, deployments, hpas)
    actions = plan_namespace(CONFIG, "ns", {}, set(), deployments, True, 1.0, hpas=hpas)
    assert {(type(a), a.kind) for a in actions} == {(Delete, HPA), (Delete, "Deployment")}
