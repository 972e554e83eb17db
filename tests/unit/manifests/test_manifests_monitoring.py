"""The monitoring manifests (components/monitoring, in overlays/monitoring): every alert parses as
PromQL (promql-parser) and names only series a mesh instance exposes (the names found with the
dashboard test's tokenizer and its list of exposed names, both imported), each alert is complete,
and each ServiceMonitor selects a Service of the install on a port that Service has. The Prometheus
operator's objects are checked here against the fields the operator reads, since
kubernetes-validate has no schema for them."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import promql_parser
import pytest
from manifests_checks import KUSTOMIZATIONS, REPO, by_kind, one, render
from prom_text import promql_metric_names

OVERLAY = "overlays/monitoring"
DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d)$")


def dashboard_test() -> ModuleType:
    """tests/unit/api/test_metrics_dashboard.py, for its ``exposed_names`` (not copied)."""
    path = REPO / "tests" / "unit" / "api" / "test_metrics_dashboard.py"
    spec = importlib.util.spec_from_file_location("_metrics_dashboard_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def alerts() -> list[dict]:
    rule = one(render(OVERLAY), "PrometheusRule", "kserve-mesh-alerts")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_the_component_is_only_where_the_operator_is_asked_for() -> None:
    for kustomization in KUSTOMIZATIONS:
        objects = render(kustomization)
        kinds = {o["kind"] for o in objects}
        if kustomization == OVERLAY:
            assert {"PrometheusRule", "ServiceMonitor"} <= kinds
        else:  # applying these needs the operator's CRDs, which a plain install must not
            assert not {"PrometheusRule", "ServiceMonitor"} & kinds, kustomization


def test_alerts_cover_load_failures_and_capacity_pressure() -> None:
    names = {a["alert"] for a in alerts()}
    assert {"KServeMeshModelLoadFailures", "KServeMeshModelsInFailedState", "KServeMeshCapacityPressure",
            "KServeMeshEvictionChurn", "KServeMeshCacheMissRateHigh"} <= names
    assert len(names) == len(alerts())  # unique


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_every_alert_parses_and_names_only_series_the_mesh_exposes(alert: dict) -> None:
    expr = alert["expr"]
    promql_parser.parse(expr)  # raises ValueError on a syntax error
    names = promql_metric_names(expr)
    assert names, expr
    exposed = dashboard_test().exposed_names()
    assert names <= exposed, f"{alert['alert']}: {sorted(names - exposed)} not exposed by an instance"


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_every_alert_is_complete(alert: dict) -> None:
    assert set(alert) == {"alert", "expr", "for", "labels", "annotations"}
    assert DURATION.match(alert["for"])
    assert alert["labels"]["severity"] in ("warning", "critical")
    assert alert["annotations"]["summary"] and alert["annotations"]["description"]


def test_the_parser_and_the_name_check_can_fail() -> None:
    with pytest.raises(ValueError):
        promql_parser.parse("sum by (namespace (modelmesh_loadmodel_failure")
    assert promql_metric_names("rate(modelmesh_no_such_series_total[5m])") - dashboard_test().exposed_names()


def test_each_service_monitor_selects_a_service_on_a_port_it_has() -> None:
    objects = render(OVERLAY)
    monitors = by_kind(objects, "ServiceMonitor")
    assert monitors
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        spec = monitor["spec"]
        assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
        wanted = spec["selector"]["matchLabels"]
        services = [s for s in by_kind(objects, "Service")
                    if wanted.items() <= (s["metadata"].get("labels") or {}).items()
                    and s["metadata"]["namespace"] == monitor["metadata"]["namespace"]]
        assert len(services) == 1, monitor["metadata"]["name"]
        ports = {p["name"] for p in services[0]["spec"]["ports"]}
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scheme", "tlsConfig"}
            assert endpoint["port"] in ports and DURATION.match(endpoint["interval"])
    # The etcd one reaches etcd's metrics listener.
    etcd = one(objects, "StatefulSet", "kserve-mesh-etcd")["spec"]["template"]["spec"]["containers"][0]
    listen = {e["name"]: e.get("value") for e in etcd["env"]}["ETCD_LISTEN_METRICS_URLS"]
    service = one(objects, "Service", "kserve-mesh-etcd")
    metrics = next(p for p in service["spec"]["ports"] if p["name"] == "metrics")
    assert listen.endswith(f":{metrics['port']}")


def test_the_controller_and_the_component_agree_on_what_a_runtime_service_is_called() -> None:
    """The controller's own ServiceMonitor selects the label its runtime Service carries."""
    from kserve_mesh.kube.controller.deploy.config import ServingConfig
    from kserve_mesh.kube.controller.deploy.monitoring import service_monitor
    from kserve_mesh.kube.controller.deploy.objects import runtime_service

    config = ServingConfig()
    monitor = service_monitor(config, "ns")
    service = runtime_service(config, "ns")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert Path(REPO / "manifests/grafana/kserve-mesh-dashboard.json").is_file()
