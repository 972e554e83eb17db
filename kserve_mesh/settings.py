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
    capacity_bytes: int = Field(512 * MiB, gt=0, description="Model cache capacity of the runtime.")
    max_loading_concurrency: int = Field(2, gt=0, description="Loads run at once.")
    model_loading_timeout_ms: int = Field(90_000, gt=0, description="Timeout of one load, from its start.")
    default_model_size_bytes: int = Field(1 * MiB, gt=0, description="Size assumed when a runtime cannot predict one.")
    storage_config: Path | None = Field(None, description="storage-config: a folder (mounted Secret) or a JSON/YAML file.")
    cache_dir: Path | None = Field(None, description="Where downloaded models are kept (default: a temp dir).")
    grpc_max_message_bytes: int = Field(16 * MiB, gt=0, description="Largest gRPC message accepted or sent.")
    per_model_metrics: bool = Field(False, description="Label metrics with modelId/vModelId.")
    log_level: str = Field("INFO", description="Python logging level.")

    @model_validator(mode="after")
    def _check(self) -> MeshSettings:
        if self.runtime == "remote" and not self.runtime_address:
            raise ValueError("runtime=remote needs runtime_address (host:port)")
        return self
