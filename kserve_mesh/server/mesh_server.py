"""``MeshServer``: one mesh instance, built from its settings, started and stopped in order.

Store -> runtime (``runtime_setup``) -> instance -> payload logger -> gRPC and REST front doors
(``doors``) -> metrics port -> the mesh (etcd) -> stored KServe resources and the models folder.
``stop()`` undoes it in reverse order; ``run()`` prints ``kserve-mesh ready: ...`` with the bound
addresses once everything serves, and drains on SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import signal
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc
import uvicorn

from kserve_mesh import __version__
from kserve_mesh.api.grpc_health import HealthService
from kserve_mesh.api.grpc_native import NativeServer
from kserve_mesh.api.rest import build_app, serve_infer_first
from kserve_mesh.api.telemetry import Telemetry
from kserve_mesh.core.cache import CacheLedger
from kserve_mesh.core.clock import SystemClock
from kserve_mesh.core.errors import InvalidArgument, MeshError, Unavailable
from kserve_mesh.core.ids import InstanceId
from kserve_mesh.core.records import InstanceRecord, ModelInfo
from kserve_mesh.mesh.cluster import Cluster
from kserve_mesh.mesh.dataplane import DataPlane
from kserve_mesh.mesh.instance import Instance
from kserve_mesh.mesh.management import Management
from kserve_mesh.mesh.memory import MemorySettings, MemoryWatch
from kserve_mesh.mesh.payloads import PayloadLogger
from kserve_mesh.mesh.peers import PeerPool
from kserve_mesh.mesh.registry import Registry
from kserve_mesh.mesh.runtime_process import RuntimeProcess, RuntimeSupervisor
from kserve_mesh.runtime.spi import ModelRuntime
from kserve_mesh.server.doors import advertised_host, guarded_asgi, start_grpc, start_rest
from kserve_mesh.server.runtime_setup import builtin_type_check, make_runtime, wait_runtime_ready
from kserve_mesh.server.security import Security
from kserve_mesh.server.views import instance_json, placements
from kserve_mesh.settings import MeshSettings
from kserve_mesh.storage import StoragePolicy, model_check
from kserve_mesh.store.base import Store
from kserve_mesh.store.keys import Keys
from kserve_mesh.store.memory import MemoryStore

log = logging.getLogger(__name__)

RECYCLE_DRAIN_GRACE_S = 30.0  # a planned runtime restart waits this long for requests in flight


@dataclass(frozen=True, slots=True)
class Endpoints:
    rest: str
    grpc: str
    metrics: str


def _etcd_store(endpoints: str) -> Store:
    from kserve_mesh.store.etcd import EtcdStore

    return EtcdStore(endpoints)


class MeshServer:
    def __init__(self, settings: MeshSettings) -> None:
        self.settings = settings
        self.clock = SystemClock()
        self.instance_id = InstanceId(settings.instance_id or f"{socket.gethostname()}-{os.getpid()}")
        self.store: Store = MemoryStore() if not settings.etcd_endpoints else _etcd_store(settings.etcd_endpoints)
        self.runtime: ModelRuntime | None = None
        self.runtime_process: RuntimeProcess | None = None
        self.supervisor: RuntimeSupervisor | None = None
        self.memory: MemoryWatch | None = None
        self.instance: Instance | None = None
        self.telemetry: Telemetry | None = None
        self.payloads: PayloadLogger | None = None
        self.security = Security(None, None, "")
        self._grpc: grpc.aio.Server | NativeServer | None = None
        self._health: HealthService | None = None
        self._rest: uvicorn.Server | None = None
        self._rest_task: asyncio.Task[None] | None = None
        self._metrics_httpd = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.endpoints: Endpoints | None = None  # where peers reach this instance
        self.public: Endpoints | None = None  # where clients do (the shared ports with share_ports)
        self.cluster: Cluster | None = None
        self.peers: PeerPool | None = None
        self.shutting_down = False
        self.duties = None
        self.kube = None
        self._started_ms = 0
        self._follow_stop: asyncio.Event | None = None
        self._follow_task: asyncio.Task[None] | None = None
        self._reload_task: asyncio.Task[None] | None = None

    @property
    def tls(self):  # type: ignore[no-untyped-def]
        return self.security.tls

    @property
    def auth(self):  # type: ignore[no-untyped-def]
        return self.security.auth

    def _cache_dir(self) -> Path:
        """Where downloaded models go: the configured folder, or a temp dir removed at stop."""
        if self.settings.cache_dir is not None:
            return self.settings.cache_dir
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="kserve-mesh-cache-")
        return Path(self._tmp.name)

    # -- starting --------------------------------------------------------------------------------
    async def start(self) -> Endpoints:
        s = self.settings
        # Each gRPC call makes short-lived objects that survive one collection (a reference
        # cycle per received call, inside grpc.aio), ~1.5 us each to free. At 700 the collector ran
        # hundreds of times a second and promoted live request objects into the old generations;
        # at 50,000 each pause was 30-50 ms and made up the p99; at 5,000 pauses are 2-7 ms
        # (benchmarks/density.py, with the pauses logged by a gc callback).
        gc.set_threshold(5_000, 50, 100)
        self.security = Security.load(s)  # TLS material and the auth file, before anything listens
        self._started_ms = self.clock.now_ms()
        await self._connect_store()
        registry = await self._start_instance()
        assert self.instance is not None and self.telemetry is not None
        plane = DataPlane(self.instance, __version__, observer=self.telemetry,
                          payloads=self.payloads if self.payloads is not None and self.payloads.enabled else None)
        mgmt = Management(self.instance)
        self._grpc, self._health, grpc_port, peer_grpc_port = await start_grpc(s, self.security, plane, mgmt,
                                                                               self.instance)
        self._health.start()
        rest_port, peer_rest_port = await self._start_rest(plane, mgmt)
        metrics_tls = self.tls.server_context() if self.tls is not None and s.tls_metrics else None
        self._metrics_httpd, metrics_port = self.telemetry.serve(s.host, s.metrics_port, ssl_context=metrics_tls)
        if self.security.reloadable:
            self._reload_task = asyncio.create_task(self.security.reload_forever(s.tls_reload_s),
                                                    name="reload-tls-auth")

        host = advertised_host(s.host, s.advertise_host)  # what peers connect to: never a wildcard
        web = "https" if self.tls is not None else "http"
        # Peers reach this instance at its own ports (with share_ports, not the shared ones, which
        # could land on another instance); clients are told the shared ones.
        self.endpoints = Endpoints(f"{web}://{host}:{peer_rest_port}", f"{host}:{peer_grpc_port}",
                                   f"{'https' if metrics_tls else 'http'}://{host}:{metrics_port}/metrics")
        self.public = Endpoints(f"{web}://{host}:{rest_port}", f"{host}:{grpc_port}", self.endpoints.metrics)
        assert self.kube is not None
        self.kube.set_endpoints(grpc=self.public.grpc, rest=self.public.rest)
        if s.etcd_endpoints:
            await self._join_cluster(registry)
        await self.kube.resync()  # re-apply stored InferenceServices / Predictors
        if s.models_dir is not None:
            await self.register_folder(s.models_dir, load_now=s.load_models_at_start)
        return self.endpoints

    async def _connect_store(self) -> None:
        if isinstance(self.store, MemoryStore):
            self.store.start()
            return
        deadline = self.clock.monotonic() + 60
        while True:
            try:
                await self.store.connect()  # type: ignore[attr-defined]
                return
            except MeshError as exc:
                if self.clock.monotonic() > deadline:
                    raise Unavailable(f"etcd at {self.settings.etcd_endpoints} is not reachable: {exc}") from exc
                log.info("waiting for etcd: %s", exc)
                await asyncio.sleep(0.5)

    async def _start_instance(self) -> Registry:
        """The runtime (waited for until READY and then watched), the instance over it, its telemetry
        and its payload logger."""
        s = self.settings
        self.runtime, self.runtime_process = await make_runtime(s, self._cache_dir())
        cache = await wait_runtime_ready(s, self.runtime, self.runtime_process, self.clock)
        self.telemetry = Telemetry(self.clock, per_model=s.per_model_metrics)
        registry = Registry(self.store, Keys.for_namespace(s.namespace))
        self.instance = Instance(self.instance_id, registry, self.runtime, cache, self.clock, metrics=self.telemetry,
                                 check_model=model_check(s.storage_config, StoragePolicy.from_settings(s),
                                                         check_type=builtin_type_check(s)))
        self.telemetry.bind(self.instance, asyncio.get_running_loop())
        await self.instance.start()
        if s.runtime != "inprocess":  # a runtime reached over gRPC: restart a dead or hung child, follow a remote one
            cache = self.instance.cache
            self.supervisor = RuntimeSupervisor(
                self.runtime, self.runtime_process,  # type: ignore[arg-type]  # a GrpcRuntimeClient
                on_lost=self.instance.runtime_lost, on_back=self.instance.runtime_back,
                check_interval_s=s.runtime_check_interval_s, check_timeout_s=s.runtime_check_timeout_s,
                backoff_max_s=s.runtime_restart_backoff_max_s,
                on_drain=lambda: cache.drain_for_restart(RECYCLE_DRAIN_GRACE_S))
            self.supervisor.start()
        self.memory = MemoryWatch(
            self.runtime, self.instance.cache,
            MemorySettings(reconcile=s.memory_reconcile, margin_bytes=s.memory_margin_bytes,
                           recycle_bytes=s.memory_recycle_bytes, interval_s=s.memory_check_interval_s,
                           misprediction_factor=s.size_misprediction_factor),
            recycle=self.supervisor.recycle if self.supervisor is not None and self.runtime_process else None,
            on_recycling=lambda _on: self.cluster.publish_soon() if self.cluster is not None else None)
        self.instance.memory = self.memory
        self.instance.cache.on_sized = self.memory.load_sized
        self.memory.start()
        self.payloads = PayloadLogger.from_setting(s.payload_processors, source=f"kserve-mesh/{self.instance_id}",
                                                   namespace=s.namespace, queue_size=s.payload_queue_size)
        self.payloads.start()
        self.telemetry.bind_payloads(self.payloads)
        return registry

    async def _start_rest(self, plane: DataPlane, mgmt: Management) -> tuple[int, int]:
        from kserve_mesh.api.rest_kube import router as kube_router
        from kserve_mesh.kube import KubeService

        assert self.instance is not None
        s = self.settings
        self.kube = KubeService.for_instance(self.instance, self.store, Keys.for_namespace(s.namespace), self.clock)
        app = build_app(plane, mgmt, __version__, extra_status=self.status, routers=[kube_router(self.kube)])
        asgi = guarded_asgi(s, serve_infer_first(app), self.security)
        self._rest, self._rest_task, port, peer_port = await start_rest(s, asgi, self.security)
        return port, peer_port

    async def _join_cluster(self, registry: Registry) -> None:
        assert self.instance is not None
        self.peers = PeerPool(self.settings.grpc_max_message_bytes, tls=self.tls, token=self.security.peer_token)
        self.cluster = Cluster(self.store, registry.keys, self.instance_id, self.clock, self.instance_record,
                               on_leave=self.peers.forget)
        self.instance.attach(self.cluster, self.peers)
        await self.cluster.start()
        from kserve_mesh.mesh.duties import Duties

        s = self.settings
        self.duties = Duties(self.instance, threshold_rpm=s.scaleup_rpm_threshold, rate_check_s=s.rate_check_s,
                             scale_down_s=s.scale_down_s, janitor_s=max(s.rate_check_s, 5.0))
        self.duties.start()
        self._follow_stop = asyncio.Event()
        self._follow_task = asyncio.create_task(registry.follow(self._follow_stop), name="registry-follow")

    async def register_folder(self, folder: Path, *, load_now: bool) -> int:
        """Register each model in ``folder`` (a sub-folder or file per model, id = its name)."""
        from kserve_mesh.runtime.builtin.models import detect_model_type

        assert self.instance is not None
        count = 0
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.suffix in (".json", ".md"):
                continue
            try:
                model_type = detect_model_type(path)
            except MeshError as exc:
                log.warning("skipping %s: %s", path, exc)
                continue
            model_id = path.stem if path.is_file() else path.name
            try:
                await self.instance.register(model_id, ModelInfo(model_type, str(path.resolve())), load_now=load_now)
            except InvalidArgument as exc:  # e.g. a link that leads out of the models folder
                log.warning("skipping %s: %s", path, exc)
                continue
            count += 1
        log.info("registered %d models from %s", count, folder)
        return count

    # -- views -----------------------------------------------------------------------------------
    def instance_record(self) -> InstanceRecord:
        assert self.instance is not None and self.endpoints is not None
        cache = self.instance.cache_summary(lru_default_ms=self.clock.now_ms() - 3_600_000 * 24)
        return InstanceRecord(
            self.instance_id, self.endpoints.grpc, cache.capacity_bytes, cache.used_bytes,
            cache.copies, cache.lru_time_ms,
            loading_threads=cache.loading_threads,
            loads_in_progress=cache.loads_in_progress,
            requests_per_minute=self.telemetry.requests_per_minute() if self.telemetry else 0,
            shutting_down=self.shutting_down, recycling=self.memory is not None and self.memory.recycling,
            start_time_ms=self._started_ms, version=__version__,
            labels=(f"rest={self.endpoints.rest}", f"metrics={self.endpoints.metrics}", f"pid={os.getpid()}"),
            victim_value=_victim_value(self.instance.cache.ledger),
        )

    def status(self) -> dict[str, object]:
        assert self.instance is not None
        cache = self.instance.cache_summary(lru_default_ms=self.clock.now_ms())
        registered, vmodels = self.instance.registry_counts()
        live = self.cluster.instances if self.cluster is not None else {self.instance_id: None}
        return {
            "instanceId": self.instance_id,
            "version": __version__,
            "capacityBytes": cache.capacity_bytes,
            "usedBytes": cache.used_bytes,
            "modelsRegistered": registered,
            "modelsLoaded": sum(1 for e in self.instance.local_copies() if e.state.name == "LOADED"),
            "vmodels": vmodels,
            "loadsInProgress": cache.loads_in_progress,
            "loadsQueued": cache.loads_queued,
            "requestsPerMinute": self.telemetry.requests_per_minute() if self.telemetry else 0,
            "lruTime": cache.lru_time_ms,
            "runtime": self.settings.runtime,
            "modelTypes": ["sklearn", "xgboost", "lightgbm", "onnx", "pytorch", "tensorflow", "keras", "openvino_ir",
                           "python", "string"],
            "endpoints": dataclasses.asdict(self.endpoints) if self.endpoints else {},
            "pid": os.getpid(),
            "runtimePid": self.runtime_process.pid if self.runtime_process is not None else 0,
            "memory": self.memory.snapshot.as_json() if self.memory is not None else {},
            "gpu": self.instance.cache.gpu.summary(self.instance.cache.copies),
            "shuttingDown": self.shutting_down,
            "leader": bool(self.cluster and self.cluster.is_leader),
            "instances": [instance_json(r) for r in sorted(self.cluster.instances.values(), key=lambda r: r.instance_id)]
            if self.cluster is not None else [instance_json(self.instance_record())],
            "placements": placements(self.instance.model_records(), live),
        }

    # -- stopping --------------------------------------------------------------------------------
    async def stop(self) -> None:
        if self.instance is not None:
            self.instance.ready = False
        if self._health is not None:
            await self._health.stop()  # NOT_SERVING at once; Watch streams end
        if self.memory is not None:  # no recycle starts while stopping
            await self.memory.stop()
        if self.supervisor is not None:  # first: nothing restarts the runtime while it is stopped
            await self.supervisor.stop()
        if self._reload_task is not None:
            self._reload_task.cancel()
            await asyncio.gather(self._reload_task, return_exceptions=True)
        if self.duties is not None:
            await self.duties.stop()
        if self.cluster is not None:
            await self.cluster.stop(leave=True)
        if self._follow_stop is not None and self._follow_task is not None:
            self._follow_stop.set()
            self._follow_task.cancel()
            await asyncio.gather(self._follow_task, return_exceptions=True)
        if self.peers is not None:
            await self.peers.close()
        await self._stop_doors()
        if self.instance is not None:
            await self.instance.stop()
        if self.runtime is not None:
            await self.runtime.close()
        if self.runtime_process is not None:
            await self.runtime_process.stop()
            self.runtime_process.cleanup()
        await self.store.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    async def _stop_doors(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=2)
        if self._rest is not None:
            self._rest.should_exit = True
            if self._rest_task is not None:
                await asyncio.gather(self._rest_task, return_exceptions=True)
        if self.payloads is not None:
            await self.payloads.stop()  # what the sinks have not taken within its drain time counts as dropped
        if self._metrics_httpd is not None:
            self._metrics_httpd.shutdown()
            self._metrics_httpd.server_close()

    async def run(self, on_ready=None) -> None:  # type: ignore[no-untyped-def]
        """Start, announce, serve until SIGINT/SIGTERM, stop."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            endpoints = await self.start()
            shared = ""
            if self.settings.share_ports and self.public is not None:
                shared = f" shared: rest={self.public.rest} grpc={self.public.grpc}"
            print(f"kserve-mesh ready: rest={endpoints.rest} grpc={endpoints.grpc} metrics={endpoints.metrics}"
                  f"{shared}", flush=True)
            if on_ready is not None:
                await on_ready(self)
            await stop.wait()
            await self.drain()
        finally:
            await self.stop()

    async def drain(self) -> None:
        """SIGTERM in a mesh: stop taking new placements, re-home recent models, then leave."""
        if self.cluster is None or self.instance is None:
            return
        from kserve_mesh.mesh.drain import drain

        self.shutting_down = True
        self.instance.shutting_down = True
        self.cluster.publish_soon()
        await asyncio.sleep(0.2)  # let the record go out before the re-homing starts
        await drain(self.instance, self.settings.shutdown_grace_s)


def _victim_value(ledger: CacheLedger) -> int:
    """The eviction policy's value of the next victim, for placement (-1: none, or the lru policy)."""
    if ledger.policy_name == "lru":
        return -1
    value = ledger.next_victim_value()
    return -1 if value is None else round(value)
