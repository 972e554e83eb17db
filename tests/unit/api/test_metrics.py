"""MeshMetrics: scrape ``render()`` and check the ``modelmesh_*`` names, types, labels and values as
a Prometheus server reads the text (``exposition.py``; prometheus_client's own parser renames
counter samples, so the wire text is read as it is)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from kserve_mesh.api.metrics import LOAD_FAILURE, UNLOAD_ATTEMPT_FAILURE, MeshMetrics
from prom_text import families, metric_names, sample

HISTOGRAMS = {
    "modelmesh_api_request_milliseconds",
    "modelmesh_invoke_model_milliseconds",
    "modelmesh_request_size_bytes",
    "modelmesh_response_size_bytes",
    "modelmesh_cache_miss_milliseconds",
    "modelmesh_loadmodel_milliseconds",
    "modelmesh_unloadmodel_milliseconds",
    "modelmesh_model_sizing_milliseconds",
    "modelmesh_req_queue_delay_milliseconds",
    "modelmesh_loading_queue_delay_milliseconds",
    "modelmesh_age_at_eviction_milliseconds",
    "modelmesh_loaded_model_size_bytes",
}
COUNTERS = {
    "modelmesh_loadmodel_failure",
    "modelmesh_unloadmodel_failure",
    "modelmesh_unloadmodel_attempt_failure",
}
GAUGES = {
    "modelmesh_models_loaded_total",
    "modelmesh_models_with_failure_total",
    "modelmesh_models_managed_total",
    "modelmesh_instance_lru_seconds",
    "modelmesh_instance_lru_age_seconds",
    "modelmesh_instance_capacity_bytes",
    "modelmesh_instance_used_bytes",
    "modelmesh_instance_used_bps",
    "modelmesh_instance_models_total",
}
PAYLOADS = {"kserve_mesh_payload_events_total", "kserve_mesh_payload_queued", "kserve_mesh_payload_in_flight"}
# Memory truth (issue 16); the runtime's resident, baseline and unaccounted gauges only once it reports memory.
MEMORY = {"kserve_mesh_cache_accounted_bytes", "kserve_mesh_cache_unaccounted_counted_bytes",
          "kserve_mesh_runtime_recycles_total", "kserve_mesh_model_size_mispredictions_total"}


class Sink:
    def __init__(self, sink: str, sent: int, dropped: int, failed: int, queued: int, in_flight: int) -> None:
        self.sink, self.sent, self.dropped, self.failed = sink, sent, dropped, failed
        self.queued, self.in_flight = queued, in_flight


def text(metrics: MeshMetrics) -> str:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    return body.decode()


def exercise(metrics: MeshMetrics) -> None:
    metrics.observe_api_request(
        "ModelInfer", "OK", 3.5, model_id="m1", vmodel_id="vm", request_bytes=1000, response_bytes=200
    )
    metrics.observe_api_request("registerModel", "ALREADY_EXISTS", 1.0)
    metrics.observe_invoke("ModelInfer", "OK", 2.0, model_id="m1")
    metrics.observe_cache_miss(150.0, model_id="m1")
    metrics.observe_request_queue_delay(0.7, model_id="m1")
    metrics.observe_load(120.0, 5_000_000, model_id="m1")
    metrics.load_failed()
    metrics.load_failed()
    metrics.observe_unload(8.0, model_id="m1")
    metrics.unload_failed()
    metrics.unload_attempt_failed()
    metrics.unload_attempt_failed()
    metrics.unload_attempt_failed()
    metrics.observe_sizing(4.0, model_id="m1")
    metrics.observe_loading_queue_delay(12.0, model_id="m1")
    metrics.observe_eviction(90_000.0, model_id="m1")
    metrics.set_cache(capacity_bytes=1_000_000, used_bytes=250_000, models=3, lru_time_s=1.7e9, lru_age_s=42.0)
    metrics.set_cluster(models_managed=10, models_loaded=4, models_with_failure=1)
    metrics.set_payloads([Sink("http://sink:8080/", 7, 2, 1, 3, 1)])


def test_every_reference_metric_is_exposed_with_its_type() -> None:
    metrics = MeshMetrics()
    exercise(metrics)
    types = families(text(metrics))
    for name in HISTOGRAMS:
        assert types[name] == "histogram", name
    for name in COUNTERS:
        assert types[name] == "counter", name
    for name in GAUGES:
        assert types[name] == "gauge", name
    assert types["kserve_mesh_payload_events_total"] == "counter"
    # prometheus_client adds a ``<name>_created`` timestamp family per histogram; nothing else.
    assert {name.removesuffix("_created") for name in types} == HISTOGRAMS | COUNTERS | GAUGES | PAYLOADS | MEMORY


def test_failure_counters_have_modelmesh_names_without_total_suffix() -> None:
    """ModelMesh's dashboard queries ``modelmesh_loadmodel_failure{...}``: the sample has that name."""
    metrics = MeshMetrics(per_model=True)  # counters never carry model labels, as in ModelMesh
    exercise(metrics)
    body = text(metrics)
    assert sample(body, "modelmesh_loadmodel_failure") == 2
    assert sample(body, "modelmesh_unloadmodel_failure") == 1
    assert sample(body, "modelmesh_unloadmodel_attempt_failure") == 3
    assert not {f"{name}_total" for name in COUNTERS} & metric_names(body)
    assert "# TYPE modelmesh_loadmodel_failure counter\nmodelmesh_loadmodel_failure 2.0\n" in body
    assert metrics.count(LOAD_FAILURE) == 2 and metrics.count(UNLOAD_ATTEMPT_FAILURE) == 3
    # The whole text still parses as the Prometheus text format.
    assert {f.name for f in text_string_to_metric_families(body)} >= COUNTERS


def test_request_metrics_carry_method_and_code() -> None:
    metrics = MeshMetrics()
    exercise(metrics)
    body = text(metrics)
    infer = {"method": "ModelInfer", "code": "OK"}
    assert sample(body, "modelmesh_api_request_milliseconds_count", **infer) == 1
    assert sample(body, "modelmesh_api_request_milliseconds_sum", **infer) == 3.5
    assert sample(body, "modelmesh_api_request_milliseconds_bucket", **infer, le="5.0") == 1
    assert sample(body, "modelmesh_api_request_milliseconds_bucket", **infer, le="2.0") == 0
    register = {"method": "registerModel", "code": "ALREADY_EXISTS"}
    assert sample(body, "modelmesh_api_request_milliseconds_count", **register) == 1
    assert sample(body, "modelmesh_request_size_bytes_sum", **infer) == 1000
    assert sample(body, "modelmesh_response_size_bytes_sum", **infer) == 200
    assert sample(body, "modelmesh_response_size_bytes_bucket", **infer, le="128.0") == 0
    assert sample(body, "modelmesh_response_size_bytes_bucket", **infer, le="512.0") == 1
    assert sample(body, "modelmesh_invoke_model_milliseconds_sum", **infer) == 2
    # No model labels unless per-model metrics are on.
    assert "modelId" not in body and "vModelId" not in body


def test_lifecycle_histograms_and_gauges_values() -> None:
    metrics = MeshMetrics()
    exercise(metrics)
    body = text(metrics)
    assert sample(body, "modelmesh_loaded_model_size_bytes_sum") == 5_000_000
    assert sample(body, "modelmesh_loadmodel_milliseconds_count") == 1
    assert sample(body, "modelmesh_unloadmodel_milliseconds_sum") == 8
    assert sample(body, "modelmesh_model_sizing_milliseconds_sum") == 4
    assert sample(body, "modelmesh_loading_queue_delay_milliseconds_sum") == 12
    assert sample(body, "modelmesh_req_queue_delay_milliseconds_sum") == 0.7
    assert sample(body, "modelmesh_cache_miss_milliseconds_sum") == 150
    assert sample(body, "modelmesh_age_at_eviction_milliseconds_sum") == 90_000
    # Eviction ages in ModelMesh's buckets: 30 s ... 90 days.
    assert sample(body, "modelmesh_age_at_eviction_milliseconds_bucket", le="30000.0") == 0
    assert sample(body, "modelmesh_age_at_eviction_milliseconds_bucket", le="300000.0") == 1
    assert sample(body, "modelmesh_age_at_eviction_milliseconds_bucket", le="7.776e+09") == 1
    expected_gauges = {
        "modelmesh_instance_capacity_bytes": 1_000_000,
        "modelmesh_instance_used_bytes": 250_000,
        "modelmesh_instance_used_bps": 2_500,
        "modelmesh_instance_models_total": 3,
        "modelmesh_instance_lru_seconds": 1.7e9,
        "modelmesh_instance_lru_age_seconds": 42,
        "modelmesh_models_managed_total": 10,
        "modelmesh_models_loaded_total": 4,
        "modelmesh_models_with_failure_total": 1,
    }
    for name, value in expected_gauges.items():
        assert sample(body, name) == value, name


def test_payload_sinks_by_outcome() -> None:
    metrics = MeshMetrics()
    body = text(metrics)
    assert "kserve_mesh_payload_events_total{" not in body  # no sinks: the families, no samples
    exercise(metrics)
    body = text(metrics)
    sink = "http://sink:8080/"
    assert sample(body, "kserve_mesh_payload_events_total", sink=sink, outcome="sent") == 7
    assert sample(body, "kserve_mesh_payload_events_total", sink=sink, outcome="dropped") == 2
    assert sample(body, "kserve_mesh_payload_events_total", sink=sink, outcome="failed") == 1
    assert sample(body, "kserve_mesh_payload_queued", sink=sink) == 3
    assert sample(body, "kserve_mesh_payload_in_flight", sink=sink) == 1
    metrics.set_payloads([])
    assert "kserve_mesh_payload_queued{" not in text(metrics)


def test_per_model_labels() -> None:
    metrics = MeshMetrics(per_model=True)
    exercise(metrics)
    body = text(metrics)
    infer = {"method": "ModelInfer", "code": "OK", "modelId": "m1", "vModelId": "vm"}
    assert sample(body, "modelmesh_api_request_milliseconds_count", **infer) == 1
    assert sample(body, "modelmesh_request_size_bytes_count", **infer) == 1
    # A request without a model (management call) gets empty model labels.
    management = {"method": "registerModel", "code": "ALREADY_EXISTS", "modelId": "", "vModelId": ""}
    assert sample(body, "modelmesh_api_request_milliseconds_count", **management) == 1
    # Lifecycle histograms: modelId and an empty vModelId, as ModelMesh labels them.
    assert sample(body, "modelmesh_loadmodel_milliseconds_count", modelId="m1", vModelId="") == 1
    assert sample(body, "modelmesh_cache_miss_milliseconds_count", modelId="m1", vModelId="") == 1
    assert sample(body, "modelmesh_loading_queue_delay_milliseconds_count", modelId="m1", vModelId="") == 1


def test_registries_are_injectable_and_independent() -> None:
    registry = CollectorRegistry()
    first = MeshMetrics(registry)
    second = MeshMetrics()  # its own registry: no clash with the first's names
    first.load_failed()
    first.observe_load(5.0)
    assert first.registry is registry
    assert registry.get_sample_value("modelmesh_loadmodel_milliseconds_count") == 1
    assert second.registry.get_sample_value("modelmesh_loadmodel_milliseconds_count") == 0
    assert first.count(LOAD_FAILURE) == 1 and second.count(LOAD_FAILURE) == 0


def test_used_bps_with_zero_capacity_is_zero() -> None:
    metrics = MeshMetrics()
    metrics.set_cache(capacity_bytes=0, used_bytes=0, models=0, lru_time_s=0, lru_age_s=0)
    assert metrics.registry.get_sample_value("modelmesh_instance_used_bps") == 0
