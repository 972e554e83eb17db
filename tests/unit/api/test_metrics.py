"""MeshMetrics: scrape ``render()`` and check the ``modelmesh_*`` names, labels and values."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from kserve_mesh.api.metrics import MeshMetrics

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
COUNTERS = {"modelmesh_loadmodel_failure", "modelmesh_unloadmodel_failure"}
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


def scrape(metrics: MeshMetrics) -> dict[str, tuple[str, list[Sample]]]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {
        family.name: (family.type, family.samples)
        for family in text_string_to_metric_families(body.decode())
    }


def sample(samples: list[Sample], name: str, **labels: str) -> float:
    matches = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(matches) == 1, f"{name}{labels} not in {samples}"
    return matches[0]


def exercise(metrics: MeshMetrics) -> None:
    metrics.observe_api_request(
        "inference.GRPCInferenceService/ModelInfer",
        "OK",
        3.5,
        model_id="m1",
        vmodel_id="vm",
        request_bytes=1000,
        response_bytes=200,
    )
    metrics.observe_api_request("mmesh.ModelMesh/registerModel", "ALREADY_EXISTS", 1.0)
    metrics.observe_invoke("ModelInfer", "OK", 2.0, model_id="m1")
    metrics.observe_cache_miss(150.0, model_id="m1")
    metrics.observe_request_queue_delay(0.7, model_id="m1")
    metrics.observe_load(120.0, 5_000_000, model_id="m1")
    metrics.load_failed(model_id="m2")
    metrics.load_failed(model_id="m2")
    metrics.observe_unload(8.0, model_id="m1")
    metrics.unload_failed(model_id="m1")
    metrics.observe_sizing(4.0, model_id="m1")
    metrics.observe_loading_queue_delay(12.0, model_id="m1")
    metrics.observe_eviction(90_000.0, model_id="m1")
    metrics.set_cache(
        capacity_bytes=1_000_000, used_bytes=250_000, models=3, lru_time_s=1.7e9, lru_age_s=42.0
    )
    metrics.set_cluster(models_managed=10, models_loaded=4, models_with_failure=1)


def test_every_reference_metric_is_exposed_with_its_type() -> None:
    metrics = MeshMetrics()
    exercise(metrics)
    families = scrape(metrics)
    for name in HISTOGRAMS:
        assert families[name][0] == "histogram", name
    for name in COUNTERS:
        assert families[name][0] == "counter", name
    for name in GAUGES:
        assert families[name][0] == "gauge", name
    # prometheus_client adds a ``<name>_created`` timestamp family per series; nothing else.
    assert {name.removesuffix("_created") for name in families} == HISTOGRAMS | COUNTERS | GAUGES


def test_request_metrics_carry_method_and_code() -> None:
    metrics = MeshMetrics()
    exercise(metrics)
    families = scrape(metrics)
    _, api = families["modelmesh_api_request_milliseconds"]
    infer = {"method": "inference.GRPCInferenceService/ModelInfer", "code": "OK"}
    assert sample(api, "modelmesh_api_request_milliseconds_count", **infer) == 1
    assert sample(api, "modelmesh_api_request_milliseconds_sum", **infer) == 3.5
    assert sample(api, "modelmesh_api_request_milliseconds_bucket", **infer, le="5.0") == 1
    assert sample(api, "modelmesh_api_request_milliseconds_bucket", **infer, le="2.0") == 0
    register = {"method": "mmesh.ModelMesh/registerModel", "code": "ALREADY_EXISTS"}
    assert sample(api, "modelmesh_api_request_milliseconds_count", **register) == 1
    _, req = families["modelmesh_request_size_bytes"]
    assert sample(req, "modelmesh_request_size_bytes_sum", **infer) == 1000
    _, resp = families["modelmesh_response_size_bytes"]
    assert sample(resp, "modelmesh_response_size_bytes_sum", **infer) == 200
    _, invoke = families["modelmesh_invoke_model_milliseconds"]
    assert (
        sample(invoke, "modelmesh_invoke_model_milliseconds_sum", method="ModelInfer", code="OK")
        == 2
    )
    # No modelId label unless per-model metrics are on.
    assert all("modelId" not in s.labels for _, samples in families.values() for s in samples)


def test_lifecycle_counters_and_gauges_values() -> None:
    metrics = MeshMetrics()
    exercise(metrics)
    families = scrape(metrics)
    _, failures = families["modelmesh_loadmodel_failure"]
    assert sample(failures, "modelmesh_loadmodel_failure_total") == 2
    _, unload_failures = families["modelmesh_unloadmodel_failure"]
    assert sample(unload_failures, "modelmesh_unloadmodel_failure_total") == 1
    _, sizes = families["modelmesh_loaded_model_size_bytes"]
    assert sample(sizes, "modelmesh_loaded_model_size_bytes_sum") == 5_000_000
    _, load = families["modelmesh_loadmodel_milliseconds"]
    assert sample(load, "modelmesh_loadmodel_milliseconds_count") == 1
    _, evict = families["modelmesh_age_at_eviction_milliseconds"]
    assert sample(evict, "modelmesh_age_at_eviction_milliseconds_sum") == 90_000
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
        assert sample(families[name][1], name) == value, name


def test_per_model_labels() -> None:
    metrics = MeshMetrics(per_model=True)
    exercise(metrics)
    families = scrape(metrics)
    _, api = families["modelmesh_api_request_milliseconds"]
    assert (
        sample(
            api,
            "modelmesh_api_request_milliseconds_count",
            method="inference.GRPCInferenceService/ModelInfer",
            code="OK",
            modelId="m1",
            vModelId="vm",
        )
        == 1
    )
    # A request without a model (management call) gets empty model labels.
    assert (
        sample(
            api,
            "modelmesh_api_request_milliseconds_count",
            method="mmesh.ModelMesh/registerModel",
            code="ALREADY_EXISTS",
            modelId="",
            vModelId="",
        )
        == 1
    )
    _, failures = families["modelmesh_loadmodel_failure"]
    assert sample(failures, "modelmesh_loadmodel_failure_total", modelId="m2") == 2
    _, load = families["modelmesh_loadmodel_milliseconds"]
    assert sample(load, "modelmesh_loadmodel_milliseconds_count", modelId="m1") == 1


def test_registries_are_injectable_and_independent() -> None:
    registry = CollectorRegistry()
    first = MeshMetrics(registry)
    second = MeshMetrics()  # its own registry: no clash with the first's names
    first.load_failed()
    assert first.registry is registry
    assert registry.get_sample_value("modelmesh_loadmodel_failure_total") == 1
    assert second.registry.get_sample_value("modelmesh_loadmodel_failure_total") == 0


def test_used_bps_with_zero_capacity_is_zero() -> None:
    metrics = MeshMetrics()
    metrics.set_cache(capacity_bytes=0, used_bytes=0, models=0, lru_time_s=0, lru_age_s=0)
    assert metrics.registry.get_sample_value("modelmesh_instance_used_bps") == 0
