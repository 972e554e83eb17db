"""Every ``modelmesh_*`` Prometheus metric of an instance, defined in one place (REFERENCE.md §8).

Names match ModelMesh so existing dashboards keep working. Metrics are registered on an injectable
``CollectorRegistry`` (a fresh one by default), so tests and several instances in one process never
share or clean up global state. The mesh calls the small typed helpers below; nothing else touches
the metric objects.

Labels:

- request metrics (``api_request``, ``invoke_model``, request/response sizes): ``method``, ``code``;
- with ``per_model=True`` every request metric also carries ``modelId`` and ``vModelId``, and the
  model lifecycle metrics (load, unload, sizing, cache miss, eviction age, loaded size, failures)
  carry ``modelId``. Off by default: one label value per model is a cardinality cost.

Times are milliseconds, sizes bytes; counters are exposed with Prometheus' ``_total`` suffix.
Cluster-wide gauges (``models_managed_total``, ``models_with_failure_total``,
``models_loaded_total``) are for the leader to set; instance gauges for every instance.
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

# Latency in ms: from sub-millisecond local hits to multi-minute loads of large models.
MS_BUCKETS = (
    0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500,
    1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000,
)  # fmt: skip
# Payloads: 64 B to 64 MiB in powers of four (default gRPC max message is 16 MiB).
PAYLOAD_BUCKETS = tuple(float(64 * 4**i) for i in range(11))
# Model sizes: 4 KiB to 64 GiB in powers of four.
MODEL_SIZE_BUCKETS = tuple(float(4096 * 4**i) for i in range(13))

_PREFIX = "modelmesh_"

M = TypeVar("M", Histogram, Counter)


def _child(metric: M, labels: tuple[str, ...]) -> M:
    """The labelled child, or the metric itself when it has no labels."""
    return metric.labels(*labels) if labels else metric


class MeshMetrics:
    """The metrics of one instance, with helpers the mesh calls."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, per_model: bool = False
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.per_model = per_model
        req = ("method", "code") + (("modelId", "vModelId") if per_model else ())
        mdl = ("modelId",) if per_model else ()

        def hist(
            name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]
        ) -> Histogram:
            return Histogram(_PREFIX + name, doc, labels, registry=self.registry, buckets=buckets)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(_PREFIX + name, doc, registry=self.registry)

        def counter(name: str, doc: str) -> Counter:
            return Counter(_PREFIX + name, doc, mdl, registry=self.registry)

        self.api_request_ms = hist(
            "api_request_milliseconds", "Time of an external API request, end to end", req,
            MS_BUCKETS,
        )  # fmt: skip
        self.invoke_model_ms = hist(
            "invoke_model_milliseconds", "Time of a model invocation by this instance (local or "
            "forwarded)", req, MS_BUCKETS,
        )  # fmt: skip
        self.request_size = hist(
            "request_size_bytes", "Inference request payload size", req, PAYLOAD_BUCKETS
        )
        self.response_size = hist(
            "response_size_bytes", "Inference response payload size", req, PAYLOAD_BUCKETS
        )
        self.cache_miss_ms = hist(
            "cache_miss_milliseconds", "Delay a request spent waiting for its model to load", mdl,
            MS_BUCKETS,
        )  # fmt: skip
        self.load_ms = hist("loadmodel_milliseconds", "Time to load a model", mdl, MS_BUCKETS)
        self.unload_ms = hist("unloadmodel_milliseconds", "Time to unload a model", mdl, MS_BUCKETS)
        self.sizing_ms = hist(
            "model_sizing_milliseconds", "Time to size a loaded model", mdl, MS_BUCKETS
        )
        self.req_queue_delay_ms = hist(
            "req_queue_delay_milliseconds", "Time a request waited for a model's concurrency slot",
            mdl, MS_BUCKETS,
        )  # fmt: skip
        self.loading_queue_delay_ms = hist(
            "loading_queue_delay_milliseconds", "Time a load waited in the loading queue", mdl,
            MS_BUCKETS,
        )  # fmt: skip
        self.age_at_eviction_ms = hist(
            "age_at_eviction_milliseconds", "Time since last use of a model copy when evicted",
            mdl, MS_BUCKETS,
        )  # fmt: skip
        self.loaded_model_size = hist(
            "loaded_model_size_bytes", "Size of a model once loaded", mdl, MODEL_SIZE_BUCKETS
        )
        self.load_failures = counter("loadmodel_failure", "Failed model loads")
        self.unload_failures = counter("unloadmodel_failure", "Failed model unloads")
        self.models_loaded = gauge("models_loaded_total", "Models with at least one loaded copy")
        self.models_with_failure = gauge(
            "models_with_failure_total", "Models with a recent load failure"
        )
        self.models_managed = gauge("models_managed_total", "Models registered in the mesh")
        self.lru_time_s = gauge(
            "instance_lru_seconds", "Last-used time of the least recently used model (epoch s)"
        )
        self.lru_age_s = gauge(
            "instance_lru_age_seconds", "Age of the least recently used model in this instance"
        )
        self.capacity_bytes = gauge("instance_capacity_bytes", "Cache capacity of this instance")
        self.used_bytes = gauge("instance_used_bytes", "Cache space in use in this instance")
        self.used_bps = gauge(
            "instance_used_bps", "Cache space in use, in basis points of capacity (0-10000)"
        )
        self.instance_models = gauge("instance_models_total", "Model copies in this instance")

    # ---- label helpers ----

    def _req(
        self, method: str, code: str, model_id: str | None, vmodel_id: str | None
    ) -> tuple[str, ...]:
        if self.per_model:
            return (method, code, model_id or "", vmodel_id or "")
        return (method, code)

    def _mdl(self, model_id: str | None) -> tuple[str, ...]:
        return (model_id or "",) if self.per_model else ()

    # ---- requests ----

    def observe_api_request(
        self,
        method: str,
        code: str,
        ms: float,
        *,
        model_id: str | None = None,
        vmodel_id: str | None = None,
        request_bytes: int | None = None,
        response_bytes: int | None = None,
    ) -> None:
        """One external request: its latency and (when known) payload sizes.

        ``code`` is the gRPC status name (``OK``, ``NOT_FOUND``, ...) as ModelMesh reports it."""
        labels = self._req(method, code, model_id, vmodel_id)
        _child(self.api_request_ms, labels).observe(ms)
        if request_bytes is not None:
            _child(self.request_size, labels).observe(request_bytes)
        if response_bytes is not None:
            _child(self.response_size, labels).observe(response_bytes)

    def observe_invoke(
        self,
        method: str,
        code: str,
        ms: float,
        *,
        model_id: str | None = None,
        vmodel_id: str | None = None,
    ) -> None:
        """One model invocation by this instance (served locally or forwarded to a peer)."""
        _child(self.invoke_model_ms, self._req(method, code, model_id, vmodel_id)).observe(ms)

    def observe_cache_miss(self, ms: float, *, model_id: str | None = None) -> None:
        _child(self.cache_miss_ms, self._mdl(model_id)).observe(ms)

    def observe_request_queue_delay(self, ms: float, *, model_id: str | None = None) -> None:
        _child(self.req_queue_delay_ms, self._mdl(model_id)).observe(ms)

    # ---- model lifecycle ----

    def observe_load(
        self, ms: float, size_bytes: int | None = None, *, model_id: str | None = None
    ) -> None:
        """A successful load: its time and, when known, the model's loaded size."""
        labels = self._mdl(model_id)
        _child(self.load_ms, labels).observe(ms)
        if size_bytes is not None:
            _child(self.loaded_model_size, labels).observe(size_bytes)

    def load_failed(self, *, model_id: str | None = None) -> None:
        _child(self.load_failures, self._mdl(model_id)).inc()

    def observe_unload(self, ms: float, *, model_id: str | None = None) -> None:
        _child(self.unload_ms, self._mdl(model_id)).observe(ms)

    def unload_failed(self, *, model_id: str | None = None) -> None:
        _child(self.unload_failures, self._mdl(model_id)).inc()

    def observe_sizing(self, ms: float, *, model_id: str | None = None) -> None:
        _child(self.sizing_ms, self._mdl(model_id)).observe(ms)

    def observe_loading_queue_delay(self, ms: float, *, model_id: str | None = None) -> None:
        _child(self.loading_queue_delay_ms, self._mdl(model_id)).observe(ms)

    def observe_eviction(self, age_ms: float, *, model_id: str | None = None) -> None:
        """A copy was evicted ``age_ms`` after its last use."""
        _child(self.age_at_eviction_ms, self._mdl(model_id)).observe(age_ms)

    # ---- gauges ----

    def set_cache(
        self,
        *,
        capacity_bytes: int,
        used_bytes: int,
        models: int,
        lru_time_s: float,
        lru_age_s: float,
    ) -> None:
        """This instance's cache: capacity, use (also in basis points), copies, LRU time/age."""
        self.capacity_bytes.set(capacity_bytes)
        self.used_bytes.set(used_bytes)
        bps = (used_bytes * 10_000) // capacity_bytes if capacity_bytes > 0 else 0
        self.used_bps.set(bps)
        self.instance_models.set(models)
        self.lru_time_s.set(lru_time_s)
        self.lru_age_s.set(lru_age_s)

    def set_cluster(
        self, *, models_managed: int, models_loaded: int, models_with_failure: int
    ) -> None:
        """Mesh-wide model counts (the leader sets these)."""
        self.models_managed.set(models_managed)
        self.models_loaded.set(models_loaded)
        self.models_with_failure.set(models_with_failure)

    # ---- exposition ----

    def render(self) -> tuple[bytes, str]:
        """The text exposition for a ``/metrics`` endpoint: (body, content type)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
