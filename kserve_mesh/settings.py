"""All configuration of a mesh process, typed, read once at the process edge.

Values come from (lowest to highest precedence) defaults, ``KSERVE_MESH_*`` environment variables,
and command-line flags (the CLI passes them in as keyword arguments). The frozen object is passed
inward; nothing below the CLI reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kserve_mesh.core.errors import MeshError
from kserve_mesh.core.net import is_loopback
from kserve_mesh.core.payload_config import parse_payload_processors

MiB = 1 << 20


class MeshSettings(BaseSettings):
    """Settings of one mesh instance (and of its runtime when it starts one)."""

    model_config = SettingsConfigDict(env_prefix="KSERVE_MESH_", frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Address the REST, gRPC and metrics ports bind to.")
    advertise_host: str = Field("", description="Address other instances reach this one at (default: "
                                "host, or this machine's address when host is a wildcard such as 0.0.0.0).")
    rest_port: int = Field(8008, ge=0, le=65535, description="KServe V2 REST + management REST port (0 = any).")
    grpc_port: int = Field(8033, ge=0, le=65535, description="KServe V2 gRPC + ModelMesh management gRPC port.")
    metrics_port: int = Field(2112, ge=0, le=65535, description="Prometheus metrics port.")
    share_ports: bool = Field(False, description="Bind the REST and gRPC ports with SO_REUSEPORT so that "
                              "several instances on one host (a pod with several cores) share them, the "
                              "kernel spreading connections between them; each instance then serves its "
                              "peers on ports of its own (peer_rest_port, peer_grpc_port). Needs a mesh "
                              "(etcd_endpoints) and fixed rest_port and grpc_port.")
    peer_rest_port: int = Field(0, ge=0, le=65535, description="With share_ports: the REST port this instance "
                                "alone listens on, which its peers forward to (0 = any).")
    peer_grpc_port: int = Field(0, ge=0, le=65535, description="With share_ports: the gRPC port this instance "
                                "alone listens on, which its peers forward to (0 = any).")
    instance_id: str = Field("", description="Id of this instance (default: host name and process id).")
    namespace: str = Field("default", description="Store root: one per Kubernetes namespace.")
    etcd_endpoints: str = Field("", description="etcd client URLs (comma-separated): join a mesh of "
                                "several instances. Empty: a single instance with an in-memory store.")
    shutdown_grace_s: float = Field(60.0, ge=0, description="On SIGTERM, how long to wait for recently "
                                    "used models to load on other instances before leaving.")
    scaleup_rpm_threshold: int = Field(2000, gt=0, description="Requests per minute per copy above which a "
                                       "model gets more copies (ModelMesh's MM_SCALEUP_RPM_THRESHOLD).")
    rate_check_s: float = Field(10.0, gt=0, description="How often copy counts are checked against rates.")
    scale_down_s: float = Field(360.0, gt=0, description="How often extra copies are dropped when space is short.")
    models_dir: Path | None = Field(None, description="Register every model found in this folder at start.")
    load_models_at_start: bool = Field(False, description="Load the models of models_dir at start.")

    runtime: Literal["inprocess", "process", "remote"] = Field(
        "inprocess", description="inprocess: built-in runtime in this process; process: start "
        "`kserve-mesh runtime` as a child process; remote: connect to runtime_address.")
    runtime_address: str = Field("", description="host:port of a ModelRuntime server (runtime=remote).")
    runtime_link: Literal["frames", "grpc"] = Field(
        "frames", description="How inference reaches the runtime child (runtime=process): frames, a framed "
        "multiplexed link over a Unix socket (runtime/local_link.py; management stays on gRPC), or grpc, "
        "every call over gRPC. A remote runtime is always reached over gRPC.")
    capacity_bytes: int = Field(512 * MiB, gt=0, description="Model cache capacity of the runtime (with a "
                                "remote runtime, which reports its own: at most this much when set).")
    max_loading_concurrency: int = Field(2, gt=0, description="Loads run at once.")
    model_loading_timeout_ms: int = Field(90_000, gt=0, description="Timeout of one load, from its start.")
    default_model_size_bytes: int = Field(1 * MiB, gt=0, description="Size assumed when a runtime cannot predict one.")
    eviction_policy: str = Field("lru", description="Which copies the cache evicts first: lru (ModelMesh's "
                                 "policy) or adaptive (frequency, size, load time and recency, tuned online; "
                                 "core/eviction.py, benchmarks/cache_sim.py).")
    storage_config: Path | None = Field(None, description="storage-config: a folder (mounted Secret) or a JSON/YAML file.")
    cache_dir: Path | None = Field(None, description="Where downloaded models are kept (default: a temp dir).")
    grpc_max_message_bytes: int = Field(16 * MiB, gt=0, description="Largest gRPC message accepted or sent.")
    grpc_server: Literal["native", "grpcio"] = Field(
        "native", description="What serves the gRPC port: native, the mesh's own HTTP/2 gRPC server "
        "(api/grpc_native.py), or grpcio (grpc.aio): the same services, native at far less CPU per call.")
    grpc_max_concurrent_rpcs: int = Field(256, gt=0, description="gRPC calls served at once; more are answered "
                                          "RESOURCE_EXHAUSTED. Bounds what unauthenticated callers can make an "
                                          "instance buffer (this many x grpc_max_message_bytes).")
    per_model_metrics: bool = Field(False, description="Label metrics with modelId/vModelId.")
    payload_processors: str = Field("", description="Space-separated http(s):// URLs that receive every "
                                    "inference request and response as CloudEvents (ModelMesh's "
                                    "payloadProcessors); a URL ending in ?modelId=ID receives only that model's.")
    payload_queue_size: int = Field(10_000, gt=0, description="Payload events held for the sinks; when they "
                                    "fall behind, newer events are dropped (and counted), never inference slowed.")
    log_level: str = Field("INFO", description="Python logging level.")

    # -- storage confinement (who may make this process read which files) ------------------------
    allow_local_paths: tuple[Path, ...] = Field((), description="Folders, besides models_dir, that local model "
                                                "paths may point into (file:// and bare paths). Anything else is refused.")
    pvc_mount_root: Path = Field(Path("/pvc_mounts"), description="Where PVCs are mounted (pvc://claim/path "
                                 "reads pvc_mount_root/claim/path), as ModelMesh mounts them.")
    allow_any_pvc: bool = Field(False, description="Allow pvc:// paths of any claim; otherwise only claims "
                                "named by a pvc entry of the storage-config (ModelMesh's allowAnyPVC).")
    http_allowed_hosts: tuple[str, ...] = Field((), description="Hosts http(s):// model paths may name "
                                                "(empty: any host). An entry '.example.com' allows its subdomains.")

    # -- bounded inputs ----------------------------------------------------------------------------
    rest_max_body_bytes: int = Field(16 * MiB, gt=0, description="Largest REST request body; a larger one is "
                                     "answered 413 before it is read.")
    http_header_timeout_s: float = Field(10.0, gt=0, description="Time a client may take to send a request's "
                                         "headers before the connection is closed.")
    http_body_timeout_s: float = Field(30.0, gt=0, description="Longest pause while a request body arrives "
                                       "before the request is answered 408.")

    # -- runtime supervision -----------------------------------------------------------------------
    runtime_check_interval_s: float = Field(5.0, gt=0, description="How often the runtime is asked for its "
                                            "status (runtime=process|remote).")
    runtime_check_timeout_s: float = Field(5.0, gt=0, description="A runtime that does not answer its status "
                                           "within this time is hung: a child process is killed and restarted.")
    runtime_restart_backoff_max_s: float = Field(30.0, gt=0, description="Longest wait between restarts of a "
                                                 "runtime child that keeps dying (backoff doubles from 0.5 s).")

    # -- adaptive batching (issue 15; runtime/builtin/batching.py) ---------------------------------
    batch_max_size: int = Field(32, ge=0, le=65_536, description="Adaptive batching of the built-in runtime: "
                                "concurrent requests of a model stacked along the batch dimension, at most this "
                                "many rows per model call (0 or 1: off). Models that take a batch dimension "
                                "only; a model key's or InferenceService's batching overrides.")
    batch_max_delay_ms: float = Field(0.0, ge=0, le=60_000, description="Longest a request waits for others "
                                      "to batch with (0: no deliberate wait; requests arriving while the model "
                                      "predicts are batched).")

    # -- memory truth (issue 16) --------------------------------------------------------------------
    runtime_release_memory: bool = Field(True, description="After unloads, the built-in runtime gives the "
                                         "allocator's free memory back to the OS (glibc malloc_trim).")
    runtime_allocator: Literal["glibc", "jemalloc"] = Field(
        "glibc", description="Allocator of the runtime child (runtime=process): glibc, or jemalloc via "
        "LD_PRELOAD (Debian: libjemalloc2) told to return freed pages at once.")
    memory_check_interval_s: float = Field(5.0, gt=0, description="How often the runtime's resident memory "
                                           "is read and reconciled with the cache's accounted bytes.")
    memory_reconcile: bool = Field(True, description="Count the runtime's resident memory beyond its baseline, "
                                   "its models' sizes and memory_margin_bytes as used (the cache evicts instead "
                                   "of over-committing).")
    memory_margin_bytes: int = Field(128 * MiB, ge=0, description="Resident memory beyond what models account "
                                     "for that is tolerated before it is counted as used.")
    memory_recycle_bytes: int = Field(512 * MiB, ge=0, description="Unaccounted resident memory past which "
                                      "the runtime child is restarted gracefully (runtime=process); 0: never. "
                                      "The default is 4x the margin: over 2,000 loads and unloads the unaccounted "
                                      "memory stayed under 5 MiB with the release and under 115 MiB without it "
                                      "(benchmarks/memory_churn.py), so only a leak reaches it.")
    size_misprediction_factor: float = Field(2.0, ge=1, description="A model whose loaded size is off from "
                                             "its prediction (or its measured RSS growth) by more than this "
                                             "factor is logged and counted.")

    # -- TLS ---------------------------------------------------------------------------------------
    tls_cert: Path | None = Field(None, description="PEM certificate (chain) of every port this instance "
                                  "serves, and its client certificate towards peers. Re-read when it changes.")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert.")
    tls_client_ca: Path | None = Field(None, description="PEM CA bundle that client certificates are checked "
                                       "against (mTLS).")
    tls_client_auth: Literal["none", "optional", "require"] = Field(
        "none", description="Client certificates: none, optional (checked when sent) or require (mTLS).")
    tls_ca: Path | None = Field(None, description="PEM CA bundle this instance trusts for peers (default: "
                                "tls_client_ca, else tls_cert itself).")
    tls_server_name: str = Field("", description="Name peers' certificates are checked against when "
                                 "forwarding (default: the peer's advertised host).")
    tls_metrics: bool = Field(False, description="Serve the metrics port over TLS too.")
    tls_reload_s: float = Field(10.0, gt=0, description="How often certificate files are checked for changes.")

    # -- authentication ----------------------------------------------------------------------------
    auth: Literal["auto", "on", "off"] = Field(
        "auto", description="Bearer-token / client-certificate authentication: auto turns it on whenever "
        "host is not a loopback address or an auth_file is given.")
    auth_file: Path | None = Field(None, description="YAML/JSON file of tokens and certificate identities "
                                   "with their roles (admin, infer); re-read when it changes.")
    peer_token_file: Path | None = Field(None, description="File holding the token this instance presents to "
                                         "its peers (role admin); not needed when peers use mTLS identities.")

    @model_validator(mode="after")
    def _check(self) -> MeshSettings:
        if self.runtime == "remote" and not self.runtime_address:
            raise ValueError("runtime=remote needs runtime_address (host:port)")
        if self.runtime == "remote" and self.runtime_link == "frames" and "runtime_link" in self.model_fields_set:
            raise ValueError("runtime_link=frames is the local link to the runtime child this instance starts "
                             "(runtime=process); a remote runtime is reached over gRPC only: set runtime_link=grpc "
                             "or leave it unset")
        if self.eviction_policy.strip().lower() not in ("lru", "adaptive"):
            raise ValueError(f"eviction_policy: unknown eviction policy '{self.eviction_policy}': expected lru "
                             "or adaptive")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if self.tls_client_auth != "none" and self.tls_client_ca is None:
            raise ValueError(f"tls_client_auth={self.tls_client_auth} needs tls_client_ca (the CA that "
                             "client certificates are checked against)")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key (client certificates are asked for "
                             "only over TLS)")
        if self.tls_metrics and self.tls_cert is None:
            raise ValueError("tls_metrics needs tls_cert and tls_key")
        if self.tls_cert is None:
            for name in ("tls_ca", "tls_server_name"):
                if getattr(self, name):
                    raise ValueError(f"{name} is about TLS towards peers and needs tls_cert and tls_key")
        if self.share_ports:
            if not self.etcd_endpoints:
                raise ValueError("share_ports lets several instances share one pair of ports: it needs a mesh "
                                 "of several instances (etcd_endpoints), else each would serve its own models")
            if not self.rest_port or not self.grpc_port:
                raise ValueError("share_ports needs fixed rest_port and grpc_port (0, any free port, cannot "
                                 "be shared)")
        elif self.peer_rest_port or self.peer_grpc_port:
            raise ValueError("peer_rest_port and peer_grpc_port are the ports of one instance among several "
                             "sharing rest_port and grpc_port: they need share_ports")
        if self.peer_token_file is not None and not self.etcd_endpoints:
            raise ValueError("peer_token_file is what an instance presents to its peers: it needs a mesh of "
                             "several instances (etcd_endpoints)")
        if self.payload_processors.strip():
            try:
                parse_payload_processors(self.payload_processors)
            except MeshError as exc:
                raise ValueError(f"payload_processors: {exc.message}") from None
        if self.auth == "off" and self.auth_file is not None:
            raise ValueError("auth=off and an auth_file contradict each other: drop one")
        if self.auth_enabled and self.auth_file is None:
            why = "auth=on" if self.auth == "on" else f"host {self.host} is not a loopback address, so authentication is on"
            raise ValueError(f"{why}: give auth_file (--auth-file, a file of tokens and roles; "
                             "`kserve-mesh token create` makes one), or auth=off to serve without authentication")
        return self

    @property
    def auth_enabled(self) -> bool:
        """Whether callers must authenticate: ``auth=on``, or ``auto`` with an auth file or on a
        non-loopback address."""
        if self.auth == "auto":
            return self.auth_file is not None or not is_loopback(self.host)
        return self.auth == "on"

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None
