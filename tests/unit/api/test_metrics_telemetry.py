"""Telemetry: the events of the data plane, the hops and the payload logger become the metrics
ModelMesh names (method labels shortened as ModelMesh does, codes from the error), and the gauges
and payload counters are read at scrape time."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass, field

import pytest
from prom_text import sample

from kserve_mesh.api import metrics
from kserve_mesh.api.telemetry import Telemetry
from kserve_mesh.core.clock import ManualClock
from kserve_mesh.core.errors import ModelNotFound, Overloaded
from kserve_mesh.mesh.cache_events import LoadOutcome
from kserve_mesh.mesh.payloads import PayloadLogger


def scrape(telemetry: Telemetry) -> str:
    body, _ = telemetry.scrape()
    return body.decode()


def test_request_done_records_time_code_and_sizes() -> None:
    telemetry = Telemetry(ManualClock())
    telemetry.request_done("inference.GRPCInferenceService/ModelInfer", None, 0.004, "m1", vmodel_id="v",
                           request_bytes=300, response_bytes=100)
    telemetry.request_done("inference.GRPCInferenceService/ModelInfer", ModelNotFound("m9"), 0.001, "m9")
    telemetry.request_done("POST /v2/models/{name}/infer", Overloaded("busy"), 0.002, "m1", request_bytes=50)
    text = scrape(telemetry)
    ok = {"method": "ModelInfer", "code": "OK"}
    assert sample(text, "modelmesh_api_request_milliseconds_count", **ok) == 1
    assert sample(text, "modelmesh_api_request_milliseconds_sum", **ok) == 4.0
    assert sample(text, "modelmesh_request_size_bytes_sum", **ok) == 300
    assert sample(text, "modelmesh_response_size_bytes_sum", **ok) == 100
    assert sample(text, "modelmesh_api_request_milliseconds_count", method="ModelInfer", code="NOT_FOUND") == 1
    rest = {"method": "POST /v2/models/{name}/infer", "code": "RESOURCE_EXHAUSTED"}
    assert sample(text, "modelmesh_request_size_bytes_count", **rest) == 1
    assert "modelmesh_response_size_bytes_count{" + 'code="RESOURCE_EXHAUSTED"' not in text
    assert telemetry.requests_per_minute() == 3


def test_invoked_records_one_runtime_call_per_invocation() -> None:
    telemetry = Telemetry(ManualClock())
    telemetry.invoked("inference.GRPCInferenceService/ModelInfer", None, 0.002, "m1")
    telemetry.invoked("inference.GRPCInferenceService/ModelInfer", None, 0.003, "m1", "v")
    telemetry.invoked("POST /v2/models/{name}/infer", ModelNotFound("m1"), 0.001, "m1")
    text = scrape(telemetry)
    assert sample(text, "modelmesh_invoke_model_milliseconds_count", method="ModelInfer", code="OK") == 2
    assert sample(text, "modelmesh_invoke_model_milliseconds_sum", method="ModelInfer", code="OK") == 5.0
    assert sample(text, "modelmesh_invoke_model_milliseconds_count", method="POST /v2/models/{name}/infer",
                  code="NOT_FOUND") == 1
    assert "modelmesh_api_request_milliseconds_count{" not in text  # an invocation is not an API request


def test_request_series_past_the_kept_label_sets_still_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The labelled children kept at hand: counts are the same for label sets kept and looked up."""
    monkeypatch.setattr(metrics, "_CHILDREN_KEPT", 2)
    telemetry = Telemetry(ManualClock(), per_model=True)
    for _ in range(3):
        for model in ("m1", "m2", "m3", "m4"):
            telemetry.request_done("inference.GRPCInferenceService/ModelInfer", None, 0.001, model,
                                   request_bytes=10)
            telemetry.invoked("inference.GRPCInferenceService/ModelInfer", None, 0.002, model)
    text = scrape(telemetry)
    for model in ("m1", "m2", "m3", "m4"):
        labels = {"method": "ModelInfer", "code": "OK", "modelId": model, "vModelId": ""}
        assert sample(text, "modelmesh_api_request_milliseconds_count", **labels) == 3
        assert sample(text, "modelmesh_invoke_model_milliseconds_sum", **labels) == 6.0
        assert sample(text, "modelmesh_request_size_bytes_sum", **labels) == 30
    assert "modelmesh_response_size_bytes_count{" not in text  # never observed: no series
    assert len(telemetry.metrics._request_children) == 2


def test_per_model_labels_carry_model_and_vmodel() -> None:
    telemetry = Telemetry(ManualClock(), per_model=True)
    telemetry.request_done("inference.GRPCInferenceService/ModelInfer", None, 0.004, "m1", vmodel_id="v")
    telemetry.invoked("inference.GRPCInferenceService/ModelInfer", None, 0.002, "m1", "v")
    telemetry.cache_miss("m1", 0.5)
    telemetry.load_finished(LoadOutcome("m1", True, size_bytes=1 << 20, duration_s=0.25))  # type: ignore[arg-type]
    text = scrape(telemetry)
    labels = {"method": "ModelInfer", "code": "OK", "modelId": "m1", "vModelId": "v"}
    assert sample(text, "modelmesh_api_request_milliseconds_count", **labels) == 1
    assert sample(text, "modelmesh_invoke_model_milliseconds_count", **labels) == 1
    assert sample(text, "modelmesh_cache_miss_milliseconds_sum", modelId="m1", vModelId="") == 500
    assert sample(text, "modelmesh_loadmodel_milliseconds_sum", modelId="m1", vModelId="") == 250
    assert sample(text, "modelmesh_loaded_model_size_bytes_sum", modelId="m1", vModelId="") == 1 << 20


def test_cache_events_feed_their_metrics() -> None:
    telemetry = Telemetry(ManualClock())
    telemetry.cache_miss("m", 0.120)
    telemetry.request_queued("m", 0.0)
    telemetry.request_queued("m", 0.120)
    telemetry.load_started("m", 0.030)
    telemetry.model_sized("m", 0.002)
    telemetry.load_finished(LoadOutcome("m", True, size_bytes=4096, duration_s=0.080))  # type: ignore[arg-type]
    telemetry.load_finished(LoadOutcome("m", False, duration_s=0.010))  # type: ignore[arg-type]
    telemetry.evicted("m", 90_000)
    telemetry.unload_attempt_failed("m")
    telemetry.unload_finished("m", 0.004, True)
    telemetry.unload_finished("m", 1.5, False)
    text = scrape(telemetry)
    assert sample(text, "modelmesh_cache_miss_milliseconds_sum") == 120
    assert sample(text, "modelmesh_req_queue_delay_milliseconds_count") == 2
    assert sample(text, "modelmesh_req_queue_delay_milliseconds_sum") == 120
    assert sample(text, "modelmesh_loading_queue_delay_milliseconds_sum") == 30
    assert sample(text, "modelmesh_model_sizing_milliseconds_sum") == 2
    assert sample(text, "modelmesh_loadmodel_milliseconds_count") == 1  # successful loads only
    assert sample(text, "modelmesh_loaded_model_size_bytes_sum") == 4096
    assert sample(text, "modelmesh_loadmodel_failure") == 1
    assert sample(text, "modelmesh_age_at_eviction_milliseconds_sum") == 90_000
    assert sample(text, "modelmesh_unloadmodel_attempt_failure") == 1
    assert sample(text, "modelmesh_unloadmodel_milliseconds_count") == 1  # successful unloads only
    assert sample(text, "modelmesh_unloadmodel_failure") == 1


@dataclass
class Record:
    instances: dict[str, int] = field(default_factory=dict)
    failures: tuple[str, ...] = ()


@dataclass
class Summary:
    capacity_bytes: int
    used_bytes: int
    copies: int
    lru_time_ms: int


class FakeInstance:
    def cache_summary(self, lru_default_ms: int) -> Summary:
        return Summary(1000, 250, 2, lru_default_ms - 30_000)

    def model_records(self) -> list[Record]:
        return [Record({"i0": 1}), Record({"i1": 1, "i0": 1}), Record(), Record(failures=("boom",))]


def test_gauges_are_read_at_scrape_time() -> None:
    clock = ManualClock()
    telemetry = Telemetry(clock)
    telemetry.bind(FakeInstance())
    text = scrape(telemetry)
    assert sample(text, "modelmesh_instance_capacity_bytes") == 1000
    assert sample(text, "modelmesh_instance_used_bytes") == 250
    assert sample(text, "modelmesh_instance_used_bps") == 2500
    assert sample(text, "modelmesh_instance_models_total") == 2
    assert sample(text, "modelmesh_instance_lru_age_seconds") == 30
    assert sample(text, "modelmesh_instance_lru_seconds") == (clock.now_ms() - 30_000) / 1000
    assert sample(text, "modelmesh_models_managed_total") == 4
    assert sample(text, "modelmesh_models_loaded_total") == 2  # models with a copy anywhere
    assert sample(text, "modelmesh_models_with_failure_total") == 1


async def test_payload_logger_counters_are_exported_at_scrape_time() -> None:
    logger = PayloadLogger.from_setting("http://127.0.0.1:9/sink http://127.0.0.1:9/only?modelId=other",
                                        source="kserve-mesh/test", queue_size=2)
    telemetry = Telemetry(ManualClock())
    telemetry.bind_payloads(logger)
    every, only = logger.sinks
    for i in range(3):  # no worker runs: two queue up, the third is dropped
        logger.request("m1", f"r{i}", b"{}")
    text = scrape(telemetry)
    assert sample(text, "kserve_mesh_payload_queued", sink=every) == 2
    assert sample(text, "kserve_mesh_payload_events_total", sink=every, outcome="dropped") == 1
    assert sample(text, "kserve_mesh_payload_events_total", sink=every, outcome="sent") == 0
    assert sample(text, "kserve_mesh_payload_events_total", sink=every, outcome="failed") == 0
    assert sample(text, "kserve_mesh_payload_in_flight", sink=every) == 0
    assert sample(text, "kserve_mesh_payload_queued", sink=only) == 0  # another model's sink
    await logger.stop()


def test_metrics_port_serves_the_text() -> None:
    telemetry = Telemetry(ManualClock())
    telemetry.request_done("inference.GRPCInferenceService/ModelInfer", None, 0.001, "m")
    server, port = telemetry.serve("127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert sample(text, "modelmesh_api_request_milliseconds_count", method="ModelInfer", code="OK") == 1
    assert "\nmodelmesh_loadmodel_failure 0.0\n" in text
