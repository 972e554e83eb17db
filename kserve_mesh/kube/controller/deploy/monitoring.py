"""The ServiceMonitor of a served namespace, for the Prometheus operator (pure).

Where the Prometheus operator is installed (its ``monitoring.coreos.com/v1`` API serves
``servicemonitors``), the controller keeps one ServiceMonitor, ``modelmesh-metrics-monitor`` (ModelMesh
Serving's name), in each namespace that has runtime pods: it selects the namespace's
``modelmesh-serving`` Service and scrapes its ``prometheus`` port every 30 s. It is made only while
``metrics.enabled`` is true and ``metrics.disablePrometheusOperatorSupport`` is not; otherwise the
one we made is deleted. Without the operator's API nothing is made (and nothing reported: the
Grafana dashboard and alerts in ``manifests/`` work with any Prometheus that scrapes the
``prometheus.io/*`` pod annotations the runtime pods carry).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kserve_mesh.kube.controller.deploy.config import ServingConfig
from kserve_mesh.kube.controller.deploy.objects import LABEL_SERVICE, MANAGED_BY, common_labels

SERVICE_MONITOR_NAME = "modelmesh-metrics-monitor"
MONITORING_API = "/apis/monitoring.coreos.com/v1"
SCRAPE_INTERVAL = "30s"


def service_monitor(config: ServingConfig, namespace: str, service_uid: str = "") -> dict[str, Any]:
    endpoint: dict[str, Any] = {"port": "prometheus", "path": "/metrics", "interval": SCRAPE_INTERVAL,
                                "scheme": "https" if config.tls_metrics else "http"}
    if config.tls_metrics:
        # The pods' certificate names the Service, not each pod: Prometheus reaches pods by IP.
        endpoint["tlsConfig"] = {"insecureSkipVerify": True}
    meta: dict[str, Any] = {"name": SERVICE_MONITOR_NAME, "namespace": namespace, "labels": common_labels(config)}
    if service_uid:  # goes with the Service (garbage-collected when it is deleted)
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Service", "name": config.service_name,
                                    "uid": service_uid, "controller": True, "blockOwnerDeletion": False}]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": {LABEL_SERVICE: config.service_name}},
            "namespaceSelector": {"matchNames": [namespace]},
            "endpoints": [endpoint],
        },
    }


def is_ours(obj: Mapping[str, Any] | None) -> bool:
    labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
    return labels.get("app.kubernetes.io/managed-by") == MANAGED_BY


def monitor_differs(desired: Mapping[str, Any], existing: Mapping[str, Any]) -> bool:
    have = existing.get("spec") or {}
    return any(have.get(k) != v for k, v in desired["spec"].items())


def serves_service_monitors(api_resources: Mapping[str, Any] | None) -> bool:
    """Whether the ``monitoring.coreos.com/v1`` APIResourceList (None: no such API) has ServiceMonitors."""
    return any(r.get("name") == "servicemonitors" for r in (api_resources or {}).get("resources") or [])
