"""HPAs for runtime Deployments against kmock and a real mesh: a ServingRuntime annotated
``serving.kserve.io/autoscalerClass: hpa`` in use gets an autoscaling/v2 HorizontalPodAutoscaler
(min/max/metric/target from KServe's annotations), updated when the annotations change, with the
Deployment's replicas left to it, a bad annotation reported as a Warning Event naming it, and
deleted when the annotation goes (podsPerRuntime back in charge). The annotation on an
InferenceService is an Event naming the runtime to annotate instead."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, Controller, Kube, wait_for
from mesh_process import MeshProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "hpa-a"
RUNTIMES = f"/apis/serving.kserve.io/v1alpha1/namespaces/{NS}/servingruntimes"
HPA = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/modelmesh-serving-hpa-python"
DEPLOYMENT = f"/apis/apps/v1/namespaces/{NS}/deployments/modelmesh-serving-hpa-python"
A = "serving.kserve.io/"


def spec_of(kube: Kube, path: str) -> dict[str, Any]:
    return (kube.get(path) or {}).get("spec") or {}


def test_hpa_created_updated_and_deleted_with_the_runtime_annotations(
        kube: Kube, mesh: MeshProcess, start_controller: Callable[..., Controller], models_dir: Path) -> None:
    kube.namespace("hpa-system", enabled=False)
    kube.namespace(NS, enabled=True)
    runtime = yaml.safe_load((ROOT / "manifests/base/runtimes/kserve-mesh-python.yaml").read_text())
    runtime["kind"] = "ServingRuntime"
    runtime["metadata"].update(name="hpa-python", namespace=NS, annotations={
        A + "autoscalerClass": "hpa", A + "min-scale": "2", A + "max-scale": "4", A + "metrics": "cpu",
        A + "targetUtilizationPercentage": "75"})
    kube.create(RUNTIMES, runtime)
    ctl = start_controller("--controller-namespace", "hpa-system")
    kube.create(f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices", {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "iris-hpa", "namespace": NS,
                     "annotations": {"serving.kserve.io/deploymentMode": "ModelMesh",
                                     A + "autoscalerClass": "hpa"}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "runtime": "hpa-python",
                                         "storageUri": str(models_dir / "sklearn-iris")}}}})

    hpa = wait_for("the HPA", lambda: kube.get(HPA), timeout=60, log=ctl.log)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "modelmesh-serving-hpa-python"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 75}}}]
    assert hpa["metadata"]["ownerReferences"][0]["name"] == "hpa-python"
    assert spec_of(kube, DEPLOYMENT)["replicas"] == 2
    # On the InferenceService the annotation does nothing by itself: one Event says where it belongs.
    on_model = wait_for("an AutoscalerOnModel Event", lambda: [
        e for e in (kube.get(f"/api/v1/namespaces/{NS}/events") or {"items": []})["items"]
        if e["reason"] == "AutoscalerOnModel"], timeout=60, log=ctl.log)
    assert on_model[0]["involvedObject"]["name"] == "iris-hpa" and "ServingRuntime hpa-python" in on_model[0]["message"]

    # The HPA scales the Deployment; the annotations change: the HPA follows, the replicas stay its.
    assert kube.call("PATCH", DEPLOYMENT, {"spec": {"replicas": 3}})[0] == 200
    assert kube.call("PATCH", f"{RUNTIMES}/hpa-python", {"metadata": {"annotations": {
        A + "max-scale": "6", A + "metrics": "memory"}}})[0] == 200
    wait_for("the HPA to follow the annotations", lambda: spec_of(kube, HPA).get("maxReplicas") == 6
             and spec_of(kube, HPA)["metrics"][0]["resource"]["name"] == "memory", timeout=60, log=ctl.log)
    assert spec_of(kube, DEPLOYMENT)["replicas"] == 3

    # A bad annotation: a Warning Event naming it on the runtime; its default is used.
    assert kube.call("PATCH", f"{RUNTIMES}/hpa-python", {"metadata": {"annotations": {
        A + "targetUtilizationPercentage": "lots"}}})[0] == 200
    events = wait_for("an InvalidAutoscaling Event", lambda: [
        e for e in (kube.get(f"/api/v1/namespaces/{NS}/events") or {"items": []})["items"]
        if e["reason"] == "InvalidAutoscaling"], timeout=60, log=ctl.log)
    assert events[0]["involvedObject"]["name"] == "hpa-python" and events[0]["type"] == "Warning"
    assert events[0]["message"].startswith(f"{A}targetUtilizationPercentage: must be an integer 1-100")
    wait_for("the default target", lambda: spec_of(kube, HPA)["metrics"][0]["resource"]["target"][
        "averageUtilization"] == 80, timeout=60, log=ctl.log)

    # The annotation goes: the HPA is deleted and podsPerRuntime (2) sets the replicas again.
    assert kube.call("PATCH", f"{RUNTIMES}/hpa-python", {"metadata": {"annotations": {
        A + "autoscalerClass": None}}})[0] == 200
    wait_for("the HPA to be deleted", lambda: kube.get(HPA) is None, timeout=60, log=ctl.log)
    wait_for("podsPerRuntime replicas", lambda: spec_of(kube, DEPLOYMENT)["replicas"] == 2, timeout=60,
             log=ctl.log)
