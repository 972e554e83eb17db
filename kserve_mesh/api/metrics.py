"""Every ``modelmesh_*`` Prometheus metric of an instance, defined in one place (REFERENCE.md §8),
and the ``kserve_mesh_*`` metrics of what ModelMesh did not have (payload logging, memory truth).

Memory truth (issue 16) is named ``kserve_mesh_*``, not ``modelmesh_instance_*``: ModelMesh never
exported these, its dashboards do not query them, and a ``modelmesh_`` name would claim an upstream
metric that does not exist (and could collide with one it adds). ``kserve_mesh_runtime_resident_bytes``
(the runtime process' RSS), ``kserve_mesh_runtime_baseline_bytes`` (its RSS holding no models, plus
the libraries it imported), ``kserve_mesh_cache_accounted_bytes`` (the copies' sizes in the ledger),
``kserve_mesh_runtime_unaccounted_bytes`` (resident - baseline - accounted: the drift),
``kserve_mesh_cache_unaccounted_counted_bytes`` (what of it the ledger counts as used, beyond the
margin; ``modelmesh_instance_used_bytes`` includes it), and the counters
``kserve_mesh_runtime_recycles_total`` and ``kserve_mesh_model_size_mispredictions_total``.
The resident, baseline and unaccounted gauges are absent while the runtime does not report memory.

The eviction policy (issue 12) is ``kserve_mesh_cache_*`` too: ``kserve_mesh_cache_policy_info``
(label ``policy``: lru | adaptive), ``kserve_mesh_cache_requests_total`` / ``_hits_total`` and the
gauge ``kserve_mesh_cache_hit_ratio`` (requests that found a loaded copy here), the counters
``kserve_mesh_cache_evictions_total`` and ``kserve_mesh_cache_admissions_refused_total`` (evicted
copies that never served a request after their load: the policy let them in only to make them the
next victims), ``kserve_mesh_cache_evicted_value_total`` (the policy's value of the evicted copies:
estimated requests x load milliseconds per MB; 0 under LRU), the gauge
``kserve_mesh_cache_victim_value`` (the value of the copy that would go first; absent under LRU)
and ``kserve_mesh_cache_window_fraction`` (adaptive: the recency window's share of the capacity);
under ``adaptive`` also ``kserve_mesh_cache_lru_shadow_hits_total`` (requests plain LRU of the same
capacity would have hit: compare with ``_hits_total``) and ``kserve_mesh_cache_lru_shadow_wins_total``
(duel periods LRU won clearly, after which the policy re-ranks its protected copies).
The ``modelmesh_instance_lru_*`` gauges keep ModelMesh's meaning (the oldest last use of a loaded
copy) under every policy.

Adaptive batching (issue 15) is the histogram ``kserve_mesh_batch_size``: requests predicted by one
model call of a batched model, in this instance's runtime (no model label: one series set per
instance). It is read from the runtime at scrape time (in process), or from its last
``runtimeStatus`` (a runtime process: up to ``memory_check_interval_s`` old; it restarts from zero
when the runtime process does); absent while the runtime has batched nothing.

Names, labels, units and buckets follow ModelMesh (its ``Metric.java`` / ``Metrics.java``), so its
Grafana dashboard and alerts work unchanged. Metrics are registered on an injectable
``CollectorRegistry`` (a fresh one by default), so tests and several instances in one process never
share or clean up global state. The mesh calls the small typed helpers below (through
``api/telemetry.Telemetry``); nothing else touches the metric objects.

Labels:

- request metrics (``api_request``, ``invoke_model``, request/response sizes): ``method``, ``code``;
- with ``per_model=True`` every request metric also carries ``modelId`` and ``vModelId``, and the
  model lifecycle histograms (load, unload, sizing, cache miss, queue delays, eviction age, loaded
  size) carry ``modelId`` and an empty ``vModelId``, as ModelMesh's do. Off by default: one label
  value per model is a cardinality cost. Counters and gauges never carry model labels.

Times are milliseconds, sizes bytes.

**Counter names.** ModelMesh's failure counters are exposed without a ``_total`` suffix
(``modelmesh_loadmodel_failure 3``): its Java client predates that convention, and its dashboard
queries ``increase(modelmesh_loadmodel_failure{...}[...])``. ``prometheus_client`` always appends
``_total`` to a counter (``CounterMetricFamily`` included), so these three counters are kept here
and written after the registry's text by ``render()``, as ``# TYPE <name> counter`` and one
sample named ``<name>``. That is valid in the Prometheus text format 0.0.4 that ``/metrics``
serves (the suffix is a naming convention there; only OpenMetrics requires it), and it is exactly
what ModelMesh itself exposes, so one name serves every existing query; a second ``_total``
series would double what sums over ``modelmesh_.*failure.*`` count. Our own new counters
(``kserve_mesh_payload_events_total``) follow today's convention.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from kserve_mesh.core.batching import BATCH_SIZE_BUCKETS

# ModelMesh's buckets. Latency in ms: sub-millisecond hits to 5-minute loads.
MS_BUCKETS = (
    0.5, 1, 2, 5, 10, 20, 50, 75, 100, 200, 500,
    1_000, 2_000, 5_000, 10_000, 20_000, 60_000, 120_000, 300_000,
)  # fmt: skip
_MINUTE_MS = 60_000
_HOUR_MS = 60 * _MINUTE_MS
_DAY_MS = 24 * _HOUR_MS
# Age of a copy at eviction, in ms: 30 s to 90 days.
AGE_BUCKETS = (
    30_000, 5 * _MINUTE_MS, 15 * _MINUTE_MS, _HOUR_MS, 4 * _HOUR_MS, 12 * _HOUR_MS,
    _DAY_MS, 7 * _DAY_MS, 30 * _DAY_MS, 90 * _DAY_MS,
)  # fmt: skip
# Request and response payloads: 128 B to 2 MiB in powers of four.
MESSAGE_SIZE_BUCKETS = tuple(float(128 * 4**i) for i in range(8))
# Loaded model sizes: 256 KiB to 4 GiB in powers of four.
MODEL_SIZE_BUCKETS = tuple(float(256 * 1024 * 4**i) for i in range(8))

_PREFIX = "modelmesh_"

LOAD_FAILURE = "modelmesh_loadmodel_failure"
UNLOAD_FAILURE = "modelmesh_unloadmodel_failure"
UNLOAD_ATTEMPT_FAILURE = "modelmesh_unloadmodel_attempt_failure"
_PLAIN_COUNTERS = {
    LOAD_FAILURE: "Model load failures",
    UNLOAD_FAILURE: "Unload model failures (not counting multiple attempts for same copy)",
    UNLOAD_ATTEMPT_FAILURE: "Unload model attempt failures",
}

PAYLOAD_OUTCOMES = ("sent", "dropped", "failed")

class SinkCounts(Protocol):
    """What the payload metrics read of one sink (``mesh.payload_sinks.SinkCounters``)."""

    sink: str
    sent: int
    dropped: int
    failed: int
    queued: int
    in_flight: int


_CHILDREN_KEPT = 4096
"""Label sets whose request histograms are kept at hand (``labels()`` costs ~3 µs a call, several
times per request); past this many (per-model metrics over many models) they are looked up."""


def _child(metric: Histogram, labels: tuple[str, ...]) -> Histogram:
    """The labelled child, or the metric itself when it has no labels."""
    return metric.labels(*labels) if labels else metric


class _PayloadCollector:
    """``kserve_mesh_payload_*`` from the sinks' counters as last read (``MeshMetrics.set_payloads``)."""

    def __init__(self) -> None:
        self.sinks: tuple[SinkCounts, ...] = ()

    def collect(self) -> Iterator[Metric]:
        sinks = self.sinks
        events = CounterMetricFamily(
            "kserve_mesh_payload_events", "Payload events per sink, by outcome: sent, dropped (queue full "
            "or closed) or failed (not delivered after the retries)", labels=("sink", "outcome"),
        )  # fmt: skip
        queued = GaugeMetricFamily(
            "kserve_mesh_payload_queued", "Payload events waiting in a sink's queue", labels=("sink",)
        )
        in_flight = GaugeMetricFamily(
            "kserve_mesh_payload_in_flight", "Payload events being sent to a sink", labels=("sink",)
        )
        for s in sinks:
            for outcome in PAYLOAD_OUTCOMES:
                events.add_metric((s.sink, outcome), getattr(s, outcome))
            queued.add_metric((s.sink,), s.queued)
            in_flight.add_metric((s.sink,), s.in_flight)
        yield from (events, queued, in_flight)


@dataclass(frozen=True, slots=True)
class MemoryNumbers:
    """The memory truth as last read (``mesh.memory.MemorySnapshot`` has these fields)."""

    resident_bytes: int = 0
    baseline_bytes: int = 0
    accounted_bytes: int = 0
    counted_bytes: int = 0
    recycles: int = 0
    mispredictions: int = 0
    gpu_capacity_bytes: int = 0  # GPU memory accounting (core/gpu.py); 0: no GPU
    gpu_used_bytes: int = 0


class _MemoryCollector:
    """``kserve_mesh_runtime_*`` / ``kserve_mesh_cache_*`` memory metrics (module docstring)."""

    def __init__(self) -> None:
        self.numbers = MemoryNumbers()

    def collect(self) -> Iterator[Metric]:
        n = self.numbers

        def gauge(name: str, doc: str, value: int) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        if n.resident_bytes > 0:
            yield gauge("kserve_mesh_runtime_resident_bytes", "Resident set size of the runtime process",
                        n.resident_bytes)
            yield gauge("kserve_mesh_runtime_baseline_bytes", "Resident size of the runtime process holding no "
                        "models, plus the libraries it imported for loads", n.baseline_bytes)
            yield gauge("kserve_mesh_runtime_unaccounted_bytes", "Resident memory of the runtime that neither its "
                        "baseline nor the models' accounted sizes explain (resident - baseline - accounted)",
                        n.resident_bytes - n.baseline_bytes - n.accounted_bytes)
        yield gauge("kserve_mesh_cache_accounted_bytes", "Sizes of the model copies in this instance's cache "
                    "(loading, loaded, unloading)", n.accounted_bytes)
        yield gauge("kserve_mesh_cache_unaccounted_counted_bytes", "Unaccounted runtime memory beyond the margin "
                    "that the cache counts as used (included in modelmesh_instance_used_bytes)", n.counted_bytes)
        if n.gpu_capacity_bytes > 0:
            yield gauge("kserve_mesh_gpu_capacity_bytes", "GPU memory the runtime's models may use", n.gpu_capacity_bytes)
            yield gauge("kserve_mesh_gpu_used_bytes", "GPU memory held by the model copies in this instance's cache",
                        n.gpu_used_bytes)
        yield CounterMetricFamily("kserve_mesh_runtime_recycles", "Planned restarts of the runtime process "
                                  "because it held memory no model accounts for", value=n.recycles)
        yield CounterMetricFamily("kserve_mesh_model_size_mispredictions", "Loads whose size was far off its "
                                  "prediction or its measured resident growth", value=n.mispredictions)


@dataclass(frozen=True, slots=True)
class PolicyNumbers:
    """The eviction policy's numbers as last read (``CacheLedger.policy_stats``)."""

    policy: str = ""
    requests: int = 0
    hits: int = 0
    evictions: int = 0
    refused: int = 0
    evicted_value: float = 0.0
    victim_value: float | None = None
    window_fraction: float | None = None
    lru_shadow_hits: float | None = None
    lru_shadow_wins: float | None = None


class _PolicyCollector:
    """``kserve_mesh_cache_*`` eviction policy metrics (module docstring)."""

    def __init__(self) -> None:
        self.numbers = PolicyNumbers()

    def collect(self) -> Iterator[Metric]:
        n = self.numbers
        if not n.policy:
            return
        info = GaugeMetricFamily("kserve_mesh_cache_policy_info", "The eviction policy of this instance's cache",
                                 labels=("policy",))
        info.add_metric((n.policy,), 1)
        yield info
        yield CounterMetricFamily("kserve_mesh_cache_requests", "Requests for a copy in this instance's cache "
                                  "(hits, and misses that loaded a copy)", value=n.requests)
        yield CounterMetricFamily("kserve_mesh_cache_hits", "Requests that found a loaded copy", value=n.hits)
        yield GaugeMetricFamily("kserve_mesh_cache_hit_ratio", "Hits / requests since the instance started",
                                value=n.hits / n.requests if n.requests else 0.0)
        yield CounterMetricFamily("kserve_mesh_cache_evictions", "Copies evicted to make room", value=n.evictions)
        yield CounterMetricFamily("kserve_mesh_cache_admissions_refused", "Evicted copies that served no request "
                                  "after their load (admitted only as the next victim)", value=n.refused)
        yield CounterMetricFamily("kserve_mesh_cache_evicted_value", "The policy's value of the evicted copies "
                                  "(estimated requests x load ms per MB; 0 under lru)", value=n.evicted_value)
        if n.victim_value is not None:
            yield GaugeMetricFamily("kserve_mesh_cache_victim_value", "The policy's value of the copy that would be "
                                    "evicted first", value=n.victim_value)
        if n.window_fraction is not None:
            yield GaugeMetricFamily("kserve_mesh_cache_window_fraction", "Share of the capacity in the adaptive "
                                    "policy's recency window (tuned online)", value=n.window_fraction)
        if n.lru_shadow_hits is not None:
            yield CounterMetricFamily("kserve_mesh_cache_lru_shadow_hits", "Requests plain LRU of the same "
                                      "capacity would have hit (the adaptive policy's shadow)", value=n.lru_shadow_hits)
        if n.lru_shadow_wins is not None:
            yield CounterMetricFamily("kserve_mesh_cache_lru_shadow_wins", "Duel periods in which the LRU shadow "
                                      "hit clearly more (the adaptive policy then re-ranked protected copies)",
                                      value=n.lru_shadow_wins)


class _BatchCollector:
    """``kserve_mesh_batch_size`` from the runtime's batch counts as last read (module docstring)."""

    def __init__(self) -> None:
        self.counts: tuple[int, ...] = ()
        self.total = 0

    def collect(self) -> Iterator[Metric]:
        counts, total = self.counts, self.total
        if not any(counts):
            return
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*BATCH_SIZE_BUCKETS, None), counts, strict=False):
            running += count
            buckets.append(("+Inf" if bound is None else floatToGoString(bound), running))
        if buckets[-1][0] != "+Inf":
            buckets.append(("+Inf", sum(counts)))
        yield HistogramMetricFamily("kserve_mesh_batch_size", "Requests predicted together by one model call "
                                    "(adaptive batching) in this instance's runtime", buckets=buckets,
                                    sum_value=total)


class MeshMetrics:
    """The metrics of one instance, with helpers the mesh calls."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, per_model: bool = False
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.per_model = per_model
        self._declare_histograms(
            ("method", "code") + (("modelId", "vModelId") if per_model else ()),
            ("modelId", "vModelId") if per_model else (),
        )
        self._declare_gauges()
        self._counts = dict.fromkeys(_PLAIN_COUNTERS, 0)
        self._counts_lock = threading.Lock()
        self._payloads = _PayloadCollector()
        self.registry.register(self._payloads)  # type: ignore[arg-type]
        self._memory = _MemoryCollector()
        self.registry.register(self._memory)  # type: ignore[arg-type]
        self._policy = _PolicyCollector()
        self.registry.register(self._policy)  # type: ignore[arg-type]
        self._batches = _BatchCollector()
        self.registry.register(self._batches)  # type: ignore[arg-type]

    def _declare_histograms(self, req: tuple[str, ...], mdl: tuple[str, ...]) -> None:
        """Request histograms labelled ``req``, model lifecycle ones ``mdl``."""
        self._request_children: dict[tuple[str, ...], list[Histogram | None]] = {}

        def hist(
            name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]
        ) -> Histogram:
            return Histogram(_PREFIX + name, doc, labels, registry=self.registry, buckets=buckets)

        self.api_request_ms = hist(
            "api_request_milliseconds", "External inference request time, end to end", req,
            MS_BUCKETS,
        )  # fmt: skip
        self.invoke_model_ms = hist(
            "invoke_model_milliseconds", "Internal model server inference request time (one "
            "runtime call on this instance)", req, MS_BUCKETS,
        )  # fmt: skip
        self.request_size = hist(
            "request_size_bytes", "Inference request payload size", req, MESSAGE_SIZE_BUCKETS
        )
        self.response_size = hist(
            "response_size_bytes", "Inference response payload size", req, MESSAGE_SIZE_BUCKETS
        )
        self._request_metrics = (self.api_request_ms, self.request_size, self.response_size, self.invoke_model_ms)
        self.cache_miss_ms = hist(
            "cache_miss_milliseconds", "Cache miss delay: how long a request waited here for its "
            "model's load", mdl, MS_BUCKETS,
        )  # fmt: skip
        self.load_ms = hist(
            "loadmodel_milliseconds", "Time taken to load model", mdl, MS_BUCKETS
        )
        self.unload_ms = hist(
            "unloadmodel_milliseconds", "Time taken to unload model", mdl, MS_BUCKETS
        )
        self.sizing_ms = hist(
            "model_sizing_milliseconds", "Time taken to perform model sizing", mdl, MS_BUCKETS
        )
        self.req_queue_delay_ms = hist(
            "req_queue_delay_milliseconds", "Time an inference request spent queued here before "
            "its runtime call started", mdl, MS_BUCKETS,
        )  # fmt: skip
        self.loading_queue_delay_ms = hist(
            "loading_queue_delay_milliseconds", "Time spent in model loading queue", mdl,
            MS_BUCKETS,
        )  # fmt: skip
        self.age_at_eviction_ms = hist(
            "age_at_eviction_milliseconds", "Time since model was last used when evicted", mdl,
            AGE_BUCKETS,
        )  # fmt: skip
        self.loaded_model_size = hist(
            "loaded_model_size_bytes", "Reported size of loaded model", mdl, MODEL_SIZE_BUCKETS
        )

    def _declare_gauges(self) -> None:
        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(_PREFIX + name, doc, registry=self.registry)

        self.models_loaded = gauge(
            "models_loaded_total", "Total number of models with at least one loaded copy"
        )
        self.models_with_failure = gauge(
            "models_with_failure_total", "Total number of models with one or more recent load "
            "failures",
        )  # fmt: skip
        self.models_managed = gauge("models_managed_total", "Total number of models managed")
        self.lru_time_s = gauge(
            "instance_lru_seconds", "Last used time of least recently used model in pod (in secs "
            "since epoch)",
        )  # fmt: skip
        self.lru_age_s = gauge(
            "instance_lru_age_seconds", "Last used age of least recently used model in pod (secs "
            "ago)",
        )  # fmt: skip
        self.capacity_bytes = gauge(
            "instance_capacity_bytes", "Effective model capacity of pod"
        )
        self.used_bytes = gauge(
            "instance_used_bytes", "Amount of capacity currently in use by loaded models"
        )
        self.used_bps = gauge(
            "instance_used_bps", "Amount of capacity used in basis points (100ths of percent)"
        )
        self.instance_models = gauge(
            "instance_models_total", "Number of model copies loaded in pod"
        )

    # ---- label helpers ----

    def _req(
        self, method: str, code: str, model_id: str | None, vmodel_id: str | None
    ) -> tuple[str, ...]:
        if self.per_model:
            return (method, code, model_id or "", vmodel_id or "")
        return (method, code)

    def _mdl(self, model_id: str | None) -> tuple[str, ...]:
        return (model_id or "", "") if self.per_model else ()

    def _inc(self, name: str) -> None:
        with self._counts_lock:
            self._counts[name] += 1

    def count(self, name: str) -> int:
        """The value of one of the plain (unsuffixed) counters, e.g. ``LOAD_FAILURE``."""
        with self._counts_lock:
            return self._counts[name]

    # ---- requests ----

    def _request_child(self, index: int, labels: tuple[str, ...]) -> Histogram:
        """The child labelled ``labels`` of request histogram ``index`` (``_request_metrics``),
        kept at hand once made; made only when first observed, so no empty series appears."""
        children = self._request_children.get(labels)
        if children is None:
            children = [None] * len(self._request_metrics)
            if len(self._request_children) < _CHILDREN_KEPT:
                self._request_children[labels] = children
        child = children[index]
        if child is None:
            child = children[index] = _child(self._request_metrics[index], labels)
        return child

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
        self._request_child(0, labels).observe(ms)
        if request_bytes is not None:
            self._request_child(1, labels).observe(request_bytes)
        if response_bytes is not None:
            self._request_child(2, labels).observe(response_bytes)

    def observe_invoke(
        self,
        method: str,
        code: str,
        ms: float,
        *,
        model_id: str | None = None,
        vmodel_id: str | None = None,
    ) -> None:
        """One runtime invocation on this instance (a forward is the peer's invocation)."""
        self._request_child(3, self._req(method, code, model_id, vmodel_id)).observe(ms)

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

    def load_failed(self) -> None:
        self._inc(LOAD_FAILURE)

    def observe_unload(self, ms: float, *, model_id: str | None = None) -> None:
        """A successful unload and its time."""
        _child(self.unload_ms, self._mdl(model_id)).observe(ms)

    def unload_failed(self) -> None:
        """A copy's unload failed for good (every attempt failed)."""
        self._inc(UNLOAD_FAILURE)

    def unload_attempt_failed(self) -> None:
        """One unload attempt failed (retried or not)."""
        self._inc(UNLOAD_ATTEMPT_FAILURE)

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
        """Mesh-wide model counts."""
        self.models_managed.set(models_managed)
        self.models_loaded.set(models_loaded)
        self.models_with_failure.set(models_with_failure)

    def set_memory(self, numbers: MemoryNumbers) -> None:
        """The memory truth as read now (exposed until the next call)."""
        self._memory.numbers = numbers

    def set_policy(self, numbers: PolicyNumbers) -> None:
        """The eviction policy's numbers as read now (exposed until the next call)."""
        self._policy.numbers = numbers

    def set_batches(self, counts: Iterable[int], total: int) -> None:
        """The runtime's batch sizes as read now: model calls per ``BATCH_SIZE_BUCKETS`` bucket (then
        one more for larger; not cumulative) and the requests of all of them."""
        self._batches.counts, self._batches.total = tuple(counts), total

    def set_payloads(self, sinks: Iterable[SinkCounts]) -> None:
        """The payload sinks' counters, as read now (exposed until the next call)."""
        self._payloads.sinks = tuple(sinks)

    # ---- exposition ----

    def render(self) -> tuple[bytes, str]:
        """The text exposition for a ``/metrics`` endpoint: (body, content type). The content type
        names format 0.0.4, the one whose rules the unsuffixed counters follow (every name here is
        a classic one, so the text is the same in format 1.0.0)."""
        with self._counts_lock:
            counts = dict(self._counts)
        plain = "".join(
            f"# HELP {name} {doc}\n# TYPE {name} counter\n{name} {floatToGoString(counts[name])}\n"
            for name, doc in _PLAIN_COUNTERS.items()
        )
        return generate_latest(self.registry) + plain.encode(), CONTENT_TYPE_PLAIN_0_0_4
