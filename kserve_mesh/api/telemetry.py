"""Telemetry of one instance: feeds the ``modelmesh_*`` metrics from mesh events, keeps the
requests-per-minute rate, and serves ``/metrics`` on its own port.

It is the observer of every part that has something to count:

- the data plane (``request_done``: ``api_request_milliseconds``, ``request_size_bytes``,
  ``response_size_bytes``) and the hops (``invoked``: ``invoke_model_milliseconds``, one runtime
  call on this instance);
- the cache (``cache_events.CacheObserver``: cache misses, request and loading queue delays, model
  sizing, loads, evictions, unloads and their failed attempts);
- the payload logger (``bind_payloads``: ``kserve_mesh_payload_*``, read at scrape time);
- the memory watch (``instance.memory``: ``kserve_mesh_runtime_*_bytes`` and the cache's accounted
  bytes, read at scrape time; the runtime's RSS is the watch's last reading).

The ``method`` label is the short method name, as ModelMesh writes it by default: a gRPC method's
last path part (``inference.GRPCInferenceService/ModelInfer`` -> ``ModelInfer``); REST routes
(``POST /v2/models/{name}/infer``) stay as they are.

Gauges (capacity, used bytes, copies, LRU time, model counts, payload queues) are read from the
instance at scrape time, so a scrape always shows the cache as it is at that moment, never a stale
sample.
"""

from __future__ import annotations

import asyncio
import http.server
import logging
import ssl
import threading
import time
from collections.abc import Iterable
from typing import Any, Protocol

from kserve_mesh.api.errors import status_name
from kserve_mesh.api.metrics import MemoryNumbers, MeshMetrics, PolicyNumbers, SinkCounts
from kserve_mesh.core.clock import Clock
from kserve_mesh.core.rates import RateCounter

log = logging.getLogger(__name__)

_METHOD_LABELS_MAX = 1024  # method labels remembered (method names are a small, fixed set)


class PayloadCounters(Protocol):
    """What telemetry reads of the payload logger (``mesh.payloads.PayloadLogger``)."""

    def counters(self) -> Iterable[SinkCounts]: ...


class Telemetry:
    def __init__(self, clock: Clock, *, per_model: bool = False, metrics: MeshMetrics | None = None) -> None:
        self.clock = clock
        self.metrics = metrics or MeshMetrics(per_model=per_model)
        self.per_model = self.metrics.per_model
        self.rate = RateCounter()
        self.instance: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.payloads: PayloadCounters | None = None
        self._lock = threading.Lock()
        self._methods: dict[str, str] = {}

    def bind(self, instance: Any, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Read gauges from ``instance``; on ``loop`` (the instance's own thread) when given."""
        self.instance = instance
        self.loop = loop

    def bind_payloads(self, logger: PayloadCounters | None) -> None:
        """Export ``logger``'s per-sink counters at every scrape."""
        self.payloads = logger

    def _method(self, method: str) -> str:
        label = self._methods.get(method)
        if label is None:
            label = method.rsplit("/", 1)[-1] if "/" in method and " " not in method else method
            if len(self._methods) < _METHOD_LABELS_MAX:
                self._methods[method] = label
        return label

    def _model(self, model_id: str | None) -> str | None:
        return model_id if self.per_model else None

    # -- events from the front doors and the hops ------------------------------------------------
    def request(self, method: str, code: str, seconds: float, model_id: str | None = None) -> None:
        """An external request that ended with status ``code`` (a gRPC status name)."""
        self.rate.hit(self.clock.monotonic())
        self.metrics.observe_api_request(self._method(method), code, seconds * 1000.0,
                                         model_id=self._model(model_id))

    def request_done(self, method: str, error: BaseException | None, seconds: float, model_id: str, *,
                     vmodel_id: str = "", request_bytes: int | None = None,
                     response_bytes: int | None = None) -> None:
        """An inference ended (the data plane's ``RequestObserver``): its time, outcome and, when
        known, its request and response payload sizes."""
        self.rate.hit(self.clock.monotonic())
        per_model = self.per_model
        self.metrics.observe_api_request(
            self._method(method), status_name(error), seconds * 1000.0,
            model_id=model_id if per_model else None, vmodel_id=vmodel_id if per_model else None,
            request_bytes=request_bytes, response_bytes=response_bytes)

    def invoked(self, method: str, error: BaseException | None, seconds: float, model_id: str,
                vmodel_id: str = "") -> None:
        """One runtime invocation on this instance ended (the hops' ``InvokeObserver``)."""
        per_model = self.per_model
        self.metrics.observe_invoke(self._method(method), status_name(error), seconds * 1000.0,
                                    model_id=model_id if per_model else None,
                                    vmodel_id=vmodel_id if per_model else None)

    def requests_per_minute(self) -> int:
        return self.rate.per_minute(self.clock.monotonic())

    # -- events from the cache (cache_events.CacheObserver) --------------------------------------
    def cache_miss(self, model_id: str, seconds: float) -> None:
        self.metrics.observe_cache_miss(seconds * 1000.0, model_id=self._model(model_id))

    def request_queued(self, model_id: str, seconds: float) -> None:
        self.metrics.observe_request_queue_delay(seconds * 1000.0, model_id=self._model(model_id))

    def load_started(self, model_id: str, queued_s: float) -> None:
        self.metrics.observe_loading_queue_delay(queued_s * 1000.0, model_id=self._model(model_id))

    def model_sized(self, model_id: str, seconds: float) -> None:
        self.metrics.observe_sizing(seconds * 1000.0, model_id=self._model(model_id))

    def load_finished(self, outcome: Any) -> None:
        if outcome.ok:
            self.metrics.observe_load(outcome.duration_s * 1000.0, outcome.size_bytes or None,
                                      model_id=self._model(outcome.model_id))
        else:
            self.metrics.load_failed()

    def evicted(self, model_id: str, idle_ms: int) -> None:
        self.metrics.observe_eviction(idle_ms, model_id=self._model(model_id))

    def unload_attempt_failed(self, model_id: str) -> None:
        self.metrics.unload_attempt_failed()

    def unload_finished(self, model_id: str, seconds: float, ok: bool) -> None:
        if ok:
            self.metrics.observe_unload(seconds * 1000.0, model_id=self._model(model_id))
        else:
            self.metrics.unload_failed()

    # -- scrape ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        if self.payloads is not None:
            self.metrics.set_payloads(self.payloads.counters())
        inst = self.instance
        if inst is None:
            return
        now_ms = self.clock.now_ms()
        cache = inst.cache_summary(now_ms)
        lru_ms = cache.lru_time_ms
        self.metrics.set_cache(capacity_bytes=cache.capacity_bytes, used_bytes=cache.used_bytes,
                               models=cache.copies, lru_time_s=lru_ms / 1000.0,
                               lru_age_s=max(0.0, (now_ms - lru_ms) / 1000.0))
        self._refresh_memory(inst)
        self._refresh_policy(inst)
        self._refresh_batches(inst)
        records = inst.model_records()
        self.metrics.set_cluster(models_managed=len(records), models_loaded=sum(1 for r in records if r.instances),
                                 models_with_failure=sum(1 for r in records if r.failures))

    def _refresh_memory(self, inst: Any) -> None:
        ledger = getattr(getattr(inst, "cache", None), "ledger", None)
        if ledger is None:  # an instance without a cache ledger (a test double)
            return
        watch = getattr(inst, "memory", None)
        snap = watch.snapshot if watch is not None else None
        gpu = getattr(inst.cache, "gpu", None)
        self.metrics.set_memory(MemoryNumbers(
            resident_bytes=snap.resident_bytes if snap is not None else 0,
            baseline_bytes=snap.baseline_bytes if snap is not None else 0,
            accounted_bytes=ledger.accounted_bytes if snap is None or not snap.known else snap.accounted_bytes,
            counted_bytes=ledger.unaccounted_bytes,
            recycles=watch.recycles if watch is not None else 0,
            mispredictions=watch.mispredictions if watch is not None else 0,
            gpu_capacity_bytes=gpu.capacity_bytes if gpu is not None else 0,
            gpu_used_bytes=gpu.used_bytes(inst.cache.copies) if gpu is not None and gpu.enabled else 0,
        ))

    def _refresh_batches(self, inst: Any) -> None:
        """``kserve_mesh_batch_size``: from the runtime itself when it is in this process (it has
        ``batch_stats``), else from its last runtimeStatus (the memory watch reads it)."""
        stats = getattr(getattr(inst, "runtime", None), "batch_stats", None)
        if callable(stats):
            snap = stats()
            self.metrics.set_batches(snap.counts, snap.total)
            return
        watch = getattr(inst, "memory", None)
        counts, total = getattr(watch, "batch_sizes", ((), 0))
        self.metrics.set_batches(counts, total)

    def _refresh_policy(self, inst: Any) -> None:
        ledger = getattr(getattr(inst, "cache", None), "ledger", None)
        if ledger is None:  # an instance without a cache ledger (a test double)
            return
        stats = ledger.policy_stats()
        window = stats.get("window_fraction")
        self.metrics.set_policy(PolicyNumbers(
            policy=ledger.policy_name, requests=int(stats["requests"]), hits=int(stats["hits"]),
            evictions=int(stats["evictions"]), refused=int(stats["evicted_unused"]),
            evicted_value=stats.get("evicted_value", 0.0), victim_value=ledger.next_victim_value()
            if ledger.policy_name != "lru" else None, window_fraction=window,
            lru_shadow_hits=stats.get("lru_shadow_hits"), lru_shadow_wins=stats.get("lru_shadow_wins"),
        ))

    def scrape(self) -> tuple[bytes, str]:
        with self._lock:
            if self.loop is not None and self.loop.is_running():
                # The cache is the event loop's: read it there, for a consistent snapshot.
                asyncio.run_coroutine_threadsafe(self._refresh_async(), self.loop).result(10)
            else:
                self.refresh()
            return self.metrics.render()

    async def _refresh_async(self) -> None:
        self.refresh()

    def serve(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
              timeout_s: float = 10.0) -> tuple[http.server.ThreadingHTTPServer, int]:
        """Serve ``/metrics`` in a daemon thread; returns the server (to shut down) and its port.
        With ``ssl_context`` the port speaks TLS (the handshake runs in the connection's own thread,
        so a slow client never holds up the others); a client silent for ``timeout_s`` is dropped."""
        telemetry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = timeout_s

            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "metrics are at /metrics")
                    return
                try:
                    body, content_type = telemetry.scrape()
                except Exception:  # never a traceback to the scraper
                    log.exception("metrics scrape failed")
                    self.send_error(500, "metrics scrape failed; see the server log")
                    return
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        httpd = _MetricsServer((host, port), Handler)
        httpd.daemon_threads = True
        httpd.ssl_context = ssl_context
        httpd.handshake_timeout_s = timeout_s
        threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()
        return httpd, httpd.server_port


class _MetricsServer(http.server.ThreadingHTTPServer):
    ssl_context: ssl.SSLContext | None = None
    handshake_timeout_s = 10.0

    def finish_request(self, request: Any, client_address: Any) -> None:
        """In the connection's thread: the TLS handshake (bounded), then the request."""
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(self.handshake_timeout_s)
        try:
            secure = self.ssl_context.wrap_socket(request, server_side=True)  # takes over the socket
        except (OSError, ssl.SSLError) as exc:
            log.debug("metrics TLS handshake with %s failed: %s", client_address, exc)
            return
        try:
            super().finish_request(secure, client_address)
        finally:
            secure.close()


def elapsed(start: float) -> float:
    return time.perf_counter() - start
