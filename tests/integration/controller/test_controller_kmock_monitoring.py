"""The controller's ServiceMonitor against kmock serving the Prometheus operator's API and a real
mesh: once a namespace has runtime pods, ``modelmesh-metrics-monitor`` selects its Service's
prometheus port; ``metrics.disablePrometheusOperatorSupport: true`` in the ConfigMap deletes it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Controller, Kube, wait_for
from mesh_process import MeshProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

KMOCK_ARGS = ("--prometheus-operator",)
SYSTEM = "mon-system"
NS = "mon-a"
SM = f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/servicemonitors/modelmesh-metrics-monitor"
CONFIG = f"/api/v1/namespaces/{SYSTEM}/configmaps/model-serving-config"


def test_service_monitor_made_where_the_operator_is_and_removed_when_disabled(
        kube: Kube, mesh: MeshProcess, start_controller: Callable[..., Controller], models_dir: Path) -> None:
    kube.namespace(SYSTEM, enabled=False)
    kube.namespace(NS, enabled=True)
    kube.create(f"/api/v1/namespaces/{SYSTEM}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "model-serving-config"},
        "data": {"config.yaml": "podsPerRuntime: 1\n"}})
    ctl = start_controller("--controller-namespace", SYSTEM)
    kube.create(f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices", {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "iris-mon", "namespace": NS,
                     "annotations": {"serving.kserve.io/deploymentMode": "ModelMesh"}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"},
                                         "storageUri": str(models_dir / "sklearn-iris")}}}})
    sm = wait_for("the ServiceMonitor", lambda: kube.get(SM), timeout=60, log=ctl.log)
    service = kube.get(f"/api/v1/namespaces/{NS}/services/modelmesh-serving")
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NS]}
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["path"] == "/metrics"
    assert sm["metadata"]["ownerReferences"][0]["uid"] == service["metadata"]["uid"]

    assert kube.call("PATCH", CONFIG, {"data": {"config.yaml": (
        "podsPerRuntime: 1\nmetrics: {disablePrometheusOperatorSupport: true}\n")}})[0] == 200
    wait_for("the ServiceMonitor to be deleted", lambda: kube.get(SM) is None, timeout=60, log=ctl.log)
