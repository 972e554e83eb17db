"""Every ModelMesh metric has samples on a live ``/metrics`` after a scripted workload, and every
query of the shipped Grafana dashboard names only metrics that exist (issue 10, item 4).

Two real instances over a real etcd, on loopback:

- ``i0``: the built-in runtime in process, one load slot, room for three models, a payload sink;
- ``i1``: the adaptive eviction policy (its metrics, LRU shadow included, are on the dashboard), a runtime process of its own (this file run as a script: the built-in runtime behind the
  gRPC runtime API, whose loads report no size, so the mesh sizes each model after loading, and
  whose unloads of ``flaky-*`` fail once and of ``stuck-*`` every time).

The workload: loads queued behind the one slot and evictions on ``i0``, a cache miss (a request
for a model loaded nowhere), forwarded requests (through ``i1`` to copies on ``i0``), a load that
fails (a corrupt sklearn file), loads on ``i1`` (sized after loading), an unload that fails once
then works and one that fails every attempt, and inferences that reach the payload sink.
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

SUPPORT = Path(__file__).resolve().parents[2] / "support"
if str(SUPPORT) not in sys.path:  # run as a script (the runtime process below), not by pytest
    sys.path.insert(0, str(SUPPORT))

from kserve_mesh.core.errors import InternalError
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.runtime.spi import LoadResult, ModelRuntime

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "manifests" / "grafana" / "kserve-mesh-dashboard.json"

# REFERENCE.md §8, and the unload attempt failures ModelMesh counts too.
HISTOGRAMS = (
    "modelmesh_api_request_milliseconds", "modelmesh_invoke_model_milliseconds",
    "modelmesh_request_size_bytes", "modelmesh_response_size_bytes", "modelmesh_cache_miss_milliseconds",
    "modelmesh_loadmodel_milliseconds", "modelmesh_unloadmodel_milliseconds",
    "modelmesh_model_sizing_milliseconds", "modelmesh_req_queue_delay_milliseconds",
    "modelmesh_loading_queue_delay_milliseconds", "modelmesh_age_at_eviction_milliseconds",
    "modelmesh_loaded_model_size_bytes",
)  # fmt: skip
COUNTERS = ("modelmesh_loadmodel_failure", "modelmesh_unloadmodel_failure", "modelmesh_unloadmodel_attempt_failure")
GAUGES = (
    "modelmesh_models_loaded_total", "modelmesh_models_with_failure_total", "modelmesh_models_managed_total",
    "modelmesh_instance_lru_seconds", "modelmesh_instance_lru_age_seconds", "modelmesh_instance_capacity_bytes",
    "modelmesh_instance_used_bytes", "modelmesh_instance_used_bps", "modelmesh_instance_models_total",
)  # fmt: skip
# Dashboard series that come from outside the mesh: the kubelet's cAdvisor and kube-prometheus rules.
EXTERNAL = ("container_", "cluster:")

PAD = 1000
STRING_SIZE = 2048 + len("m0:") + PAD  # the built-in runtime's size of these string models


# -- the runtime process of i1 (this file run as a script) ---------------------------------------------
class WorkloadRuntime:
    """The built-in runtime, except: a load reports no size (the mesh asks ``model_size`` after it:
    the sizing step), and unloads of ``flaky-*`` fail once, of ``stuck-*`` every time."""

    def __init__(self, inner: ModelRuntime) -> None:
        self.inner = inner
        self.unloads: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def load_model(self, model_id: str, info: ModelInfo) -> LoadResult:
        await self.inner.load_model(model_id, info)
        return LoadResult(size_bytes=0)

    async def unload_model(self, model_id: str) -> None:
        self.unloads[model_id] += 1
        if model_id.startswith("stuck-") or (model_id.startswith("flaky-") and self.unloads[model_id] == 1):
            raise InternalError(f"unloading model '{model_id}' failed (test runtime)")
        await self.inner.unload_model(model_id)


async def _serve_runtime(models: Path) -> None:
    from kserve_mesh.runtime.builtin.runtime import BuiltinRuntime, RuntimeConfig
    from kserve_mesh.runtime.server import serve
    from kserve_mesh.storage import StoragePolicy, make_fetcher

    config = RuntimeConfig(capacity_bytes=64 << 20, max_loading_concurrency=2)
    inner = BuiltinRuntime(config, make_fetcher(None, None, StoragePolicy.of(allow_local_paths=[models])))
    server, port = await serve(config, "127.0.0.1", 0, runtime=WorkloadRuntime(inner))  # type: ignore[arg-type]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"runtime listening {port}", flush=True)
    await stop.wait()
    await server.stop(grace=1.0)
    await inner.close()


if __name__ == "__main__":
    asyncio.run(_serve_runtime(Path(sys.argv[1])))
    sys.exit(0)


# -- the test ---------------------------------------------------------------------------------------
from cluster_support import string_models, string_request
from etcd_fixture import start_etcd
from mesh_process import MeshProcess
from payload_sink import SinkProcess
from prom_text import dashboard_exprs, histogram_base, metric_names, promql_metric_names, total


@dataclass
class Workload:
    i0: MeshProcess
    i1: MeshProcess
    sink: SinkProcess
    models: Path


def _start_runtime(models: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, __file__, str(models)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("runtime listening "):
        proc.kill()
        proc.wait(10)
        raise RuntimeError(f"the test runtime did not start: {line!r}")
    return proc, int(line.split()[-1])


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workload]:
    root = tmp_path_factory.mktemp("metrics-workload")
    models = string_models(root / "models", [f"m{i}" for i in range(6)] + ["flaky-1", "stuck-1"], pad=PAD)
    (models / "broken").mkdir()
    (models / "broken" / "model.joblib").write_bytes(b"not a pickled model")
    etcd = start_etcd()
    sink = SinkProcess(root / "sink.jsonl")
    runtime, port = _start_runtime(models)
    common = ("--etcd-endpoints", etcd.client_url, "--allow-local-path", str(models), "--shutdown-grace-s", "2")
    started: list[MeshProcess] = []
    try:
        with ThreadPoolExecutor(2) as pool:  # both start at once
            futures = [
                pool.submit(MeshProcess.start, *common, "--instance-id", "i0", "--max-loading-concurrency", "1",
                            "--capacity-bytes", str(3 * STRING_SIZE + STRING_SIZE // 2),
                            "--payload-processors", sink.url(), command="instance", timeout=60),
                pool.submit(MeshProcess.start, *common, "--instance-id", "i1", "--runtime", "remote",
                            "--runtime-address", f"127.0.0.1:{port}", "--eviction-policy", "adaptive",
                            command="instance", timeout=60),
            ]
        errors = [f.exception() for f in futures if f.exception() is not None]
        started += [f.result() for f in futures if f.exception() is None]
        if errors:
            raise errors[0]  # type: ignore[misc]
        i0, i1 = started
        _wait_for(lambda: all(len(p.call("GET", "/mesh/v1/status")[1]["instances"]) == 2 for p in (i0, i1)),
                  "the instances did not see each other")
        yield Workload(i0, i1, sink, models)
    finally:
        for proc in started:
            proc.stop()
        runtime.send_signal(signal.SIGTERM)
        try:
            runtime.wait(10)
        except subprocess.TimeoutExpired:
            runtime.kill()
            runtime.wait(10)
        sink.stop()
        etcd.close()


def _wait_for(predicate, what: str, timeout_s: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.05)


def _register(p: MeshProcess, models: Path, model_id: str, model_type: str = "string") -> None:
    status, body = p.call("PUT", f"/mesh/v1/models/{urllib.parse.quote(model_id)}",
                          {"modelInfo": {"type": model_type, "path": str(models / model_id)}})
    assert status == 200, body


def _load_here(p: MeshProcess, model_id: str) -> tuple[int, object]:
    return p.call("POST", f"/v2/repository/models/{model_id}/load", {}, timeout=30)


def _infer(p: MeshProcess, model_id: str) -> tuple[int, object]:
    return p.call("POST", f"/v2/models/{model_id}/infer", string_request(), timeout=30)


def _holders(p: MeshProcess, model_id: str) -> list[str]:
    return p.call("GET", "/mesh/v1/status")[1]["placements"].get(model_id, [])


@pytest.fixture(scope="module")
def scrapes(workload: Workload) -> dict[str, str]:
    """Run the workload once; the metrics text of each instance after it."""
    i0, i1, models = workload.i0, workload.i1, workload.models
    for model_id in [f"m{i}" for i in range(6)] + ["flaky-1", "stuck-1"]:
        _register(i0, models, model_id)
    _register(i0, models, "broken", "sklearn")
    _wait_for(lambda: all(m in [s["modelId"] for s in i1.call("GET", "/mesh/v1/models")[1]["models"]]
                          for m in ("m4", "broken", "stuck-1")), "i1 did not see the registrations")

    # Five loads on i0 at once: one load slot (the others wait in its loading queue), room for three
    # (the least recently used copies are evicted).
    with ThreadPoolExecutor(5) as pool:
        loads = list(pool.map(lambda i: _load_here(i0, f"m{i}"), range(5)))
    assert all(status == 200 for status, _ in loads), loads

    # Through i0: a hit on a copy it holds, and a cache miss (m5 is loaded nowhere: it loads here or
    # on i1, and the request waits for it).
    loaded_on_i0 = [m for m in (f"m{i}" for i in range(5)) if _holders(i0, m) == ["i0"]]
    assert loaded_on_i0, "i0 kept no copy"
    for model_id in (loaded_on_i0[-1], "m5"):
        status, body = _infer(i0, model_id)
        assert status == 200, body
    # Through i1: forwarded to the copies on i0 (i1 holds none of them).
    for model_id in loaded_on_i0:
        status, body = _infer(i1, model_id)
        assert status == 200, body
    # A load that fails: the file is not a model.
    status, body = _infer(i0, "broken")
    assert status >= 400, body

    # On i1: loads its runtime reports without a size (sized after loading), then unloads: one that
    # fails once and is retried, one that fails every attempt.
    for model_id in ("flaky-1", "stuck-1"):
        status, body = _load_here(i1, model_id)
        assert status == 200, body
    for model_id in ("flaky-1", "stuck-1"):
        status, body = i1.call("POST", f"/v2/repository/models/{model_id}/unload", {}, timeout=30)
        assert status == 200, body
    status, body = _load_here(i1, "m5")  # a copy that stays: the adaptive policy has a next victim to value
    assert status == 200, body

    _wait_for(lambda: total(i0.metrics_text(), "kserve_mesh_payload_events_total", outcome="sent") >= 2,
              "no payload event was sent", 10.0)
    return {"i0": i0.metrics_text(), "i1": i1.metrics_text()}


def test_every_modelmesh_metric_has_samples(scrapes: dict[str, str]) -> None:
    for name in HISTOGRAMS:
        counts = {i: total(text, f"{name}_count") for i, text in scrapes.items()}
        assert any(counts.values()), f"{name}: no observation on any instance ({counts})"
    for name in COUNTERS:
        values = {i: total(text, name) for i, text in scrapes.items()}
        assert any(values.values()), f"{name}: zero on every instance ({values})"
        assert all(f"{name}_total" not in metric_names(text) for text in scrapes.values())
    for name in GAUGES:
        assert all(name in metric_names(text) for text in scrapes.values()), name


def test_the_workload_is_counted_where_it_happened(scrapes: dict[str, str]) -> None:
    i0, i1 = scrapes["i0"], scrapes["i1"]
    assert total(i0, "modelmesh_loading_queue_delay_milliseconds_sum") > 0  # loads waited for the slot
    assert total(i0, "modelmesh_age_at_eviction_milliseconds_count") >= 2  # five loads, room for three
    assert total(i1, "modelmesh_api_request_milliseconds_count") >= 1  # i1 received the forwarded ones...
    assert total(i0, "modelmesh_invoke_model_milliseconds_count") >= 2  # ...i0 ran them
    assert total(i1, "modelmesh_model_sizing_milliseconds_count") >= 2  # loads that reported no size
    assert total(i0, "modelmesh_model_sizing_milliseconds_count") == 0  # the built-in runtime reports it
    assert total(i1, "modelmesh_unloadmodel_attempt_failure") == 1 + 3  # flaky once, stuck every attempt
    assert total(i1, "modelmesh_unloadmodel_failure") == 1
    assert total(i0, "kserve_mesh_payload_events_total", outcome="sent") >= 2
    assert total(i0, "modelmesh_models_managed_total") == 9
    assert max(total(text, "modelmesh_models_with_failure_total") for text in scrapes.values()) == 1


def test_every_dashboard_query_names_metrics_that_exist(scrapes: dict[str, str]) -> None:
    live = set().union(*(metric_names(text) for text in scrapes.values()))
    exprs = dashboard_exprs(DASHBOARD)
    assert len(exprs) >= 40
    queried: set[str] = set()
    for title, expr in exprs:
        for name in promql_metric_names(expr):
            if name.startswith(EXTERNAL):
                continue
            assert name in live, f"panel {title!r} queries {name}, not on /metrics: {expr}"
            queried.add(name)
            base = histogram_base(name)
            if base != name:  # a histogram's series: it has observations somewhere
                assert any(total(text, f"{base}_count") for text in scrapes.values()), (title, name)
    # The dashboard shows every metric ModelMesh documents but the LRU timestamp (its age is shown).
    shown = {histogram_base(n) for n in queried}
    assert set(HISTOGRAMS + COUNTERS + GAUGES) - shown == {"modelmesh_instance_lru_seconds"}
    assert json.loads(DASHBOARD.read_text())["uid"] == "kserve-mesh"
