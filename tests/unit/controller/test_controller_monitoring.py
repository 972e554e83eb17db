"""The ServiceMonitor of a served namespace (kube/controller/deploy/monitoring.py, runtime_sync.py) on
a fake Kubernetes API: made only where the Prometheus operator's API exists, with metrics on and
``metrics.disablePrometheusOperatorSupport`` off; deleted (ours only) when either changes."""

from __future__ import annotations

from dataclasses import replace

from test_controller_plan import RT, FakeKube

from kserve_mesh.kube.controller.deploy.config import ServingConfig
from kserve_mesh.kube.controller.deploy.monitoring import service_monitor
from kserve_mesh.kube.controller.runtime_sync import RuntimeSync

SM = "/apis/monitoring.coreos.com/v1/namespaces/ns/servicemonitors/modelmesh-metrics-monitor"
API = "/apis/monitoring.coreos.com/v1"


def sync_with(kube: FakeKube, config: ServingConfig) -> RuntimeSync:
    async def source() -> ServingConfig:
        return config

    sync = RuntimeSync(kube, source, lambda ns: {"py": RT})
    sync.monitoring_ttl_s = 0
    sync.use("ns", "InferenceService/a", "py")
    return sync


async def test_no_prometheus_operator_api_means_no_service_monitor() -> None:
    kube = FakeKube()
    await sync_with(kube, ServingConfig()).sync_namespace("ns")
    assert "/api/v1/namespaces/ns/services/modelmesh-serving" in kube.objects  # the Service is made
    assert ("GET", API) in kube.calls and not any("servicemonitors" in p for _, p in kube.calls)


async def test_the_service_monitor_follows_the_config_where_the_operator_is_installed() -> None:
    kube = FakeKube()
    kube.objects[API] = {"kind": "APIResourceList", "resources": [{"name": "servicemonitors"}]}
    config = ServingConfig()
    sync = sync_with(kube, config)
    await sync.sync_namespace("ns")
    sm = kube.objects[SM]
    assert sm["spec"] == {"selector": {"matchLabels": {"modelmesh-service": "modelmesh-serving"}},
                          "namespaceSelector": {"matchNames": ["ns"]},
                          "endpoints": [{"port": "prometheus", "path": "/metrics", "interval": "30s",
                                         "scheme": "http"}]}
    service = kube.objects["/api/v1/namespaces/ns/services/modelmesh-serving"]
    assert service["metadata"]["labels"]["modelmesh-service"] == "modelmesh-serving"  # what it selects
    assert {p["name"] for p in service["spec"]["ports"]} >= {"prometheus"}
    # TLS metrics: scraped over https.
    tls = replace(config, tls_secret_name="t", metrics_scheme="https")
    assert service_monitor(tls, "ns")["spec"]["endpoints"][0]["scheme"] == "https"
    # disablePrometheusOperatorSupport: ours is deleted ...
    off = ServingConfig.from_configmap({"config.yaml": "metrics: {disablePrometheusOperatorSupport: true}"})
    await sync_with(kube, off).sync_namespace("ns")
    assert SM not in kube.objects
    # ... and one that someone else made is left alone.
    kube.objects[SM] = {"metadata": {"name": "modelmesh-metrics-monitor", "labels": {"team": "x"}}, "spec": {}}
    await sync_with(kube, off).sync_namespace("ns")
    assert SM in kube.objects
    del kube.objects[SM]
    # metrics.enabled false: none either.
    await sync_with(kube, ServingConfig(metrics_enabled=False)).sync_namespace("ns")
    assert SM not in kube.objects
