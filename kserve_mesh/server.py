"""The composition root: builds one mesh instance from settings and runs its front doors.

Store -> runtime (in-process, a child process, or remote) -> instance -> gRPC (V2 + management),
REST (V2 + management) and metrics servers. Everything started here is stopped here, in reverse
order, and a line ``kserve-mesh ready: ...`` on stdout tells a supervisor (or a test) the bound
addresses.
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
from kserve_mesh.api import grpc_mgmt, grpc_v2
from kserve_mesh.api.auth import Authenticator, GuardedServer, Role, guard_asgi, with_tls_identity
from kserve_mesh.api.browser_guard import guard_browsers
from kserve_mesh.api.grpc_health import HealthService, add_health_and_reflection
from kserve_mesh.api.rest import build_app, serve_infer_first
from kserve_mesh.api.telemetry import Telemetry
from kserve_mesh.core.clock import SystemClock
from kserve_mesh.core.errors import InvalidArgument, MeshError, Unavailable
from kserve_mesh.core.ids import InstanceId
from kserve_mesh.core.net import is_loopback
from kserve_mesh.core.records import InstanceRecord, ModelInfo
from kserve_mesh.mesh.cache_manager import CacheConfig
from kserve_mesh.mesh.cluster import Cluster
from kserve_mesh.mesh.dataplane import DataPlane
from kserve_mesh.mesh.instance import Instance
from kserve_mesh.mesh.management import Management
from kserve_mesh.mesh.peers import PeerPool
from kserve_mesh.mesh.registry import Registry
from kserve_mesh.mesh.runtime_process import RuntimeProcess, RuntimeSupervisor
from kserve_mesh.mesh.tls import TlsFiles, TlsMaterial
from kserve_mesh.runtime.spi import ModelRuntime, RuntimeState
from kserve_mesh.settings import MeshSettings
from kserve_mesh.storage import StoragePolicy, model_check
from kserve_mesh.store.base import Store
from kserve_mesh.store.keys import Keys
from kserve_mesh.store.memory import MemoryStore

log = logging.getLogger(__name__)

RUNTIME_READY_TIMEOUT_S = 180.0


@dataclass(frozen=True, slots=True)
class Endpoints:
    rest: str
    grpc: str
    metrics: str


def instance_json(r: InstanceRecord) -> dict[str, object]:
    labels = dict(label.split("=", 1) for label in r.labels if "=" in label)
    return {"instanceId": r.instance_id, "grpc": r.endpoint, "rest": labels.get("rest", ""),
            "metrics": labels.get("metrics", ""), "pid": int(labels.get("pid", "0") or 0),
            "capacityBytes": r.capacity_bytes, "usedBytes": r.used_bytes, "models": r.model_count,
            "requestsPerMinute": r.requests_per_minute, "lruTime": r.lru_time_ms,
            "loadsInProgress": r.loads_in_progress, "shuttingDown": r.shutting_down,
            "startTime": r.start_time_ms, "version": r.version}


def child_args(s: MeshSettings, cache_dir: Path) -> list[str]:
    """The runtime child's flags that carry the instance's settings (cache, loading, storage)."""
    args = ["--capacity-bytes", str(s.capacity_bytes),
            "--max-loading-concurrency", str(s.max_loading_concurrency),
            "--model-loading-timeout-ms", str(s.model_loading_timeout_ms),
            "--default-model-size-bytes", str(s.default_model_size_bytes),
            "--cache-dir", str(cache_dir)]
    if s.storage_config is not None:
        args += ["--storage-config", str(s.storage_config)]
    return args + StoragePolicy.from_settings(s).flags()  # the same folders, claims and hosts


def _etcd_store(endpoints: str) -> Store:
    from kserve_mesh.store.etcd import EtcdStore

    return EtcdStore(endpoints)


def _bound_port(server: uvicorn.Server) -> int:
    for srv in server.servers:
        for sock in srv.sockets:
            return int(sock.getsockname()[1])
    raise RuntimeError("the REST server has no socket")


def advertised_host(bind_host: str, advertise_host: str = "") -> str:
    """The address other instances use for this one: ``advertise_host`` when set, else the bind
    address, except that a wildcard (0.0.0.0, ::, '') becomes this machine's own address (a pod's IP
    on Kubernetes), since a peer connecting to 0.0.0.0 would reach itself."""
    if advertise_host:
        return advertise_host
    if bind_host not in ("0.0.0.0", "::", ""):
        return f"[{bind_host}]" if ":" in bind_host and not bind_host.startswith("[") else bind_host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


class MeshServer:
    def __init__(self, settings: MeshSettings) -> None:
        self.settings = settings
        self.clock = SystemClock()
        self.instance_id = InstanceId(settings.instance_id or f"{socket.gethostname()}-{os.getpid()}")
        self.store: Store = MemoryStore() if not settings.etcd_endpoints else _etcd_store(settings.etcd_endpoints)
        self.runtime: ModelRuntime | None = None
        self.runtime_process: RuntimeProcess | None = None
        self.supervisor: RuntimeSupervisor | None = None
        self.instance: Instance | None = None
        self.telemetry: Telemetry | None = None
        self._grpc: grpc.aio.Server | None = None
        self._rest: uvicorn.Server | None = None
        self._rest_task: asyncio.Task[None] | None = None
        self._metrics_httpd = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.endpoints: Endpoints | None = None
        self.cluster: Cluster | None = None
        self.peers: PeerPool | None = None
        self.shutting_down = False
        self.duties = None
        self.kube = None
        self._started_ms = 0
        self._follow_stop: asyncio.Event | None = None
        self._follow_task: asyncio.Task[None] | None = None
        self.tls: TlsMaterial | None = None
        self.auth: Authenticator | None = None
        self._peer_token = ""
        self._reload_task: asyncio.Task[None] | None = None
        self._health: HealthService | None = None

    # -- building --------------------------------------------------------------------------------
    def _fetcher(self):  # type: ignore[no-untyped-def]
        from kserve_mesh.storage import make_fetcher

        return make_fetcher(self.settings.storage_config, self._cache_dir(), StoragePolicy.from_settings(self.settings))

    def _cache_dir(self) -> Path:
        """Where downloaded models go: the configured folder, or a temp dir removed at stop."""
        if self.settings.cache_dir is not None:
            return self.settings.cache_dir
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="kserve-mesh-cache-")
        return Path(self._tmp.name)

    async def _make_runtime(self) -> ModelRuntime:
        s = self.settings
        if s.runtime == "inprocess":
            from kserve_mesh.runtime.builtin.runtime import BuiltinRuntime, RuntimeConfig

            config = RuntimeConfig(capacity_bytes=s.capacity_bytes, max_loading_concurrency=s.max_loading_concurrency,
                                   model_loading_timeout_ms=s.model_loading_timeout_ms,
                                   default_model_size_bytes=s.default_model_size_bytes)
            return BuiltinRuntime(config, self._fetcher())
        from kserve_mesh.runtime.grpc_client import GrpcRuntimeClient

        address = s.runtime_address
        if s.runtime == "process":
            # On a Unix socket in a private folder (mesh/runtime_process.py), never a loopback port.
            self.runtime_process = RuntimeProcess(child_args(s, self._cache_dir() / "runtime"))
            address = await self.runtime_process.start()
        return GrpcRuntimeClient(address)

    async def _wait_runtime_ready(self, runtime: ModelRuntime) -> CacheConfig:
        """Poll runtimeStatus (each call bounded) until READY; fail at once if the child exits."""
        s = self.settings
        deadline = self.clock.monotonic() + RUNTIME_READY_TIMEOUT_S
        pause = 0.1
        while True:
            try:
                status = await asyncio.wait_for(runtime.runtime_status(), s.runtime_check_timeout_s)
                if status.state is RuntimeState.READY:
                    return CacheConfig(status.capacity_bytes, status.max_loading_concurrency,
                                       status.model_loading_timeout_ms / 1000, status.default_model_size_bytes)
            except (MeshError, TimeoutError) as exc:
                log.info("runtime not ready yet: %s", exc or "no answer to runtimeStatus")
            child = self.runtime_process
            if child is not None and child.returncode is not None:
                from kserve_mesh.mesh.runtime_process import describe_exit

                raise Unavailable(f"the runtime process exited ({describe_exit(child.returncode)})")
            if self.clock.monotonic() > deadline:
                raise Unavailable(f"the runtime was not READY within {RUNTIME_READY_TIMEOUT_S:g} s")
            await asyncio.sleep(pause)
            pause = min(2.0, pause * 2)

    def _start_supervision(self) -> None:
        """Watch a runtime reached over gRPC: restart a dead or hung child, follow a remote one."""
        s = self.settings
        if s.runtime == "inprocess" or self.instance is None or self.runtime is None:
            return
        self.supervisor = RuntimeSupervisor(
            self.runtime, self.runtime_process,  # type: ignore[arg-type]  # a GrpcRuntimeClient
            on_lost=self.instance.runtime_lost, on_back=self.instance.runtime_back,
            check_interval_s=s.runtime_check_interval_s, check_timeout_s=s.runtime_check_timeout_s,
            backoff_max_s=s.runtime_restart_backoff_max_s)
        self.supervisor.start()

    async def _stop_supervision(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop()

    # -- security --------------------------------------------------------------------------------
    def _load_security(self) -> None:
        """TLS material and the auth file, read and checked before anything listens."""
        s = self.settings
        if s.tls_cert is not None and s.tls_key is not None:
            self.tls = TlsMaterial(TlsFiles(s.tls_cert, s.tls_key, s.tls_client_ca, s.tls_client_auth, s.tls_ca,
                                            s.tls_server_name))
        if s.auth_enabled:
            assert s.auth_file is not None  # settings refuse auth without a file
            self.auth = Authenticator(s.auth_file)
        if s.peer_token_file is not None:
            try:
                self._peer_token = s.peer_token_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidArgument(f"cannot read the peer token file {s.peer_token_file}: {exc}") from None
            if not self._peer_token:
                raise InvalidArgument(f"the peer token file {s.peer_token_file} is empty")
        if self.auth is None or not s.etcd_endpoints:
            return
        # In a mesh, peers call each other: their credential must be one this instance accepts as admin
        # (all instances share the auth file), or their client certificates must be required.
        if self._peer_token:
            peer = self.auth.principal(f"Bearer {self._peer_token}")
            if peer is None or peer.role is not Role.ADMIN:
                raise InvalidArgument(f"the token in {s.peer_token_file} is not an admin token of the auth file "
                                      f"{s.auth_file}: peers would refuse this instance's forwarded requests")
        elif s.tls_client_auth != "require":
            raise InvalidArgument("authentication is on in a mesh of several instances, so instances must "
                                  "authenticate to each other: give --peer-token-file (an admin token of the "
                                  "auth file), or require client certificates (--tls-client-auth require) and "
                                  "name the instances' certificate in the auth file's identities")

    async def _reload_security(self) -> None:
        """Re-read certificate files and the auth file when they change (no restart)."""
        while True:
            await asyncio.sleep(self.settings.tls_reload_s)
            try:
                if self.tls is not None:
                    self.tls.reload_if_changed()
                if self.auth is not None:
                    self.auth.reload_if_changed()
            except Exception:  # a failed check must not end the checking
                log.exception("checking the TLS and auth files failed")

    # -- running ---------------------------------------------------------------------------------
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

    async def start(self) -> Endpoints:
        s = self.settings
        # Young collections every 5,000 allocations (CPython's default is 700). A collection's pause
        # is about its garbage: under load most young garbage is gRPC's (8 objects in a reference
        # cycle per received call, inside grpc.aio), ~1.5 us each to free. At 700 the collector ran
        # hundreds of times a second and promoted live request objects into the old generations;
        # at 50,000 each pause was 30-50 ms and made up the p99; at 5,000 pauses are 2-7 ms
        # (benchmarks/density.py, with the pauses logged by a gc callback).
        gc.set_threshold(5_000, 50, 100)
        self._load_security()
        self._started_ms = self.clock.now_ms()
        await self._connect_store()
        self.runtime = await self._make_runtime()
        cache = await self._wait_runtime_ready(self.runtime)
        self.telemetry = Telemetry(self.clock, per_model=s.per_model_metrics)
        registry = Registry(self.store, Keys.for_namespace(s.namespace))
        self.instance = Instance(self.instance_id, registry, self.runtime, cache, self.clock, metrics=self.telemetry,
                                 check_model=model_check(s.storage_config, StoragePolicy.from_settings(s)))
        self.telemetry.bind(self.instance, asyncio.get_running_loop())
        await self.instance.start()
        self._start_supervision()

        options = [("grpc.max_send_message_length", s.grpc_max_message_bytes),
                   ("grpc.max_receive_message_length", s.grpc_max_message_bytes),
                   ("grpc.so_reuseport", 0),
                   # a client that never finishes its TLS handshake / HTTP/2 preface is dropped in time
                   ("grpc.server_handshake_timeout_ms", int(s.http_header_timeout_s * 1000))]
        self._grpc = grpc.aio.server(options=options, maximum_concurrent_rpcs=s.grpc_max_concurrent_rpcs)
        services = GuardedServer(self._grpc, self.auth) if self.auth is not None else self._grpc
        plane = DataPlane(self.instance, __version__, observer=self.telemetry)
        mgmt = Management(self.instance)
        services.add_generic_rpc_handlers((grpc_v2.handler(plane),))
        grpc_mgmt.add_to_server(mgmt, services)
        self._health = add_health_and_reflection(services, self.instance)  # grpc.health.v1, reflection
        grpc_address = f"{s.host}:{s.grpc_port}"
        if self.tls is not None:
            grpc_port = self._grpc.add_secure_port(grpc_address, self.tls.grpc_server_credentials())
        else:
            grpc_port = self._grpc.add_insecure_port(grpc_address)
        if grpc_port == 0:
            raise Unavailable(f"cannot bind the gRPC port {s.host}:{s.grpc_port}")
        await self._grpc.start()
        self._health.start()

        from kserve_mesh.api.rest_kube import router as kube_router
        from kserve_mesh.kube import KubeService

        self.kube = KubeService.for_instance(self.instance, self.store, Keys.for_namespace(s.namespace), self.clock)
        app = build_app(plane, mgmt, __version__, extra_status=self.status, routers=[kube_router(self.kube)])
        asgi = serve_infer_first(app)
        if self.auth is not None:
            asgi = guard_asgi(asgi, self.auth)
        # Web pages must not drive the mesh through a browser (CSRF, and DNS rebinding of a loopback mesh).
        asgi = guard_browsers(asgi, check_host=self.auth is None and is_loopback(s.host),
                              extra_hosts=[s.advertise_host, socket.gethostname()])
        if self.tls is not None:
            # asyncio gives a TLS handshake 60 s; a client must finish it within the header timeout.
            asyncio.constants.SSL_HANDSHAKE_TIMEOUT = s.http_header_timeout_s  # type: ignore[attr-defined]
        from kserve_mesh.api.http_limits import limited_protocol

        config = uvicorn.Config(asgi, host=s.host, port=s.rest_port, log_level="warning", access_log=False,
                                lifespan="on", timeout_graceful_shutdown=5,
                                http=limited_protocol(max_body_bytes=s.rest_max_body_bytes,
                                                      header_timeout_s=s.http_header_timeout_s,
                                                      body_timeout_s=s.http_body_timeout_s))
        if self.tls is not None:
            config.load()
            config.ssl = self.tls.server_context()  # always the current certificate (see mesh/tls.py)
            if s.tls_client_auth != "none":
                config.http_protocol_class = with_tls_identity(config.http_protocol_class)
        self._rest = uvicorn.Server(config)
        self._rest.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._rest_task = asyncio.create_task(self._rest.serve(), name="rest")
        async with asyncio.timeout(30):
            while not self._rest.started:
                if self._rest_task.done():
                    raise Unavailable(f"cannot serve REST on {s.host}:{s.rest_port}")
                await asyncio.sleep(0.01)
        rest_port = _bound_port(self._rest)
        metrics_tls = self.tls.server_context() if self.tls is not None and s.tls_metrics else None
        self._metrics_httpd, metrics_port = self.telemetry.serve(s.host, s.metrics_port, ssl_context=metrics_tls)
        if self.tls is not None or self.auth is not None:
            self._reload_task = asyncio.create_task(self._reload_security(), name="reload-tls-auth")

        host = advertised_host(s.host, s.advertise_host)  # what peers connect to: never a wildcard
        web = "https" if self.tls is not None else "http"
        self.endpoints = Endpoints(f"{web}://{host}:{rest_port}", f"{host}:{grpc_port}",
                                   f"{'https' if metrics_tls else 'http'}://{host}:{metrics_port}/metrics")
        self.kube.set_endpoints(grpc=f"{host}:{grpc_port}", rest=f"{web}://{host}:{rest_port}")
        if s.etcd_endpoints:
            await self._join_cluster(registry)
        await self.kube.resync()  # re-apply stored InferenceServices / Predictors
        if s.models_dir is not None:
            await self.register_folder(s.models_dir, load_now=s.load_models_at_start)
        return self.endpoints

    async def _join_cluster(self, registry: Registry) -> None:
        assert self.instance is not None
        self.peers = PeerPool(self.settings.grpc_max_message_bytes, tls=self.tls, token=self._peer_token)
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

    def instance_record(self) -> InstanceRecord:
        assert self.instance is not None and self.endpoints is not None
        cache = self.instance.cache_summary(lru_default_ms=self.clock.now_ms() - 3_600_000 * 24)
        return InstanceRecord(
            self.instance_id, self.endpoints.grpc, cache.capacity_bytes, cache.used_bytes,
            cache.copies, cache.lru_time_ms,
            loading_threads=cache.loading_threads,
            loads_in_progress=cache.loads_in_progress,
            requests_per_minute=self.telemetry.requests_per_minute() if self.telemetry else 0,
            shutting_down=self.shutting_down, start_time_ms=self._started_ms, version=__version__,
            labels=(f"rest={self.endpoints.rest}", f"metrics={self.endpoints.metrics}", f"pid={os.getpid()}"),
        )

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

    def status(self) -> dict[str, object]:
        assert self.instance is not None
        cache = self.instance.cache_summary(lru_default_ms=self.clock.now_ms())
        registered, vmodels = self.instance.registry_counts()
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
            "modelTypes": ["sklearn", "xgboost", "lightgbm", "onnx", "string"],
            "endpoints": dataclasses.asdict(self.endpoints) if self.endpoints else {},
            "pid": os.getpid(),
            "runtimePid": self.runtime_process.pid if self.runtime_process is not None else 0,
            "shuttingDown": self.shutting_down,
            "leader": bool(self.cluster and self.cluster.is_leader),
            "instances": [instance_json(r) for r in sorted(self.cluster.instances.values(), key=lambda r: r.instance_id)]
            if self.cluster is not None else [instance_json(self.instance_record())],
            "placements": self._placements(),
        }

    def _placements(self) -> dict[str, list[str]]:
        """Where each model's copies live (model id -> instance ids)."""
        assert self.instance is not None
        live = self.cluster.instances if self.cluster is not None else {self.instance_id: None}
        out: dict[str, list[str]] = {}
        for rec in self.instance.model_records():
            where = sorted(i for i in rec.instances if i in live)
            if where:
                out[rec.model_id] = where
        return out

    async def stop(self) -> None:
        if self.instance is not None:
            self.instance.ready = False
        if self._health is not None:
            await self._health.stop()  # NOT_SERVING at once; Watch streams end
        await self._stop_supervision()  # first: nothing restarts the runtime while it is stopped
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
        if self._grpc is not None:
            await self._grpc.stop(grace=2)
        if self._rest is not None:
            self._rest.should_exit = True
            if self._rest_task is not None:
                await asyncio.gather(self._rest_task, return_exceptions=True)
        if self._metrics_httpd is not None:
            self._metrics_httpd.shutdown()
            self._metrics_httpd.server_close()
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

    async def run(self, on_ready=None) -> None:  # type: ignore[no-untyped-def]
        """Start, announce, serve until SIGINT/SIGTERM, stop."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            endpoints = await self.start()
            print(f"kserve-mesh ready: rest={endpoints.rest} grpc={endpoints.grpc} metrics={endpoints.metrics}",
                  flush=True)
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
