"""``AdapterConfig``: the settings every server adapter has, the base of ``MLServerConfig`` and
``TritonConfig``: what ``runtimeStatus`` reports, how sizes are predicted and measured, call
deadlines, and when the server the adapter started is recycled (issue 16). Each adapter's config
adds how its server is run, and may change a default (by declaring the field again)."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class AdapterConfig:
    """Settings every adapter has; checked when made (``ValueError`` naming the adapter's config)."""

    capacity_bytes: int = 1024 * MiB
    max_loading_concurrency: int = 1
    model_loading_timeout_ms: int = 90_000
    default_model_size_bytes: int = 1 * MiB
    # Floor of a measured size, as a multiple of the bytes on disk (ModelMesh adapters' guess).
    floor_size_factor: float = 1.25
    # predictModelSize: bytes on disk x this factor + model_overhead_bytes.
    predict_size_factor: float = 2.0
    model_overhead_bytes: int = 256 * 1024
    # How long the server may take to start and answer ready.
    start_timeout_s: float = 60.0
    # Deadline of repository unload and metadata calls; inference has its own.
    call_timeout_s: float = 30.0
    infer_timeout_s: float = 60.0
    max_message_bytes: int = 16 * MiB
    # Memory truth (issue 16, runtime.adapters.recycle): restart the server this adapter started once
    # it holds more than this beyond its baseline and its models; 0: never.
    recycle_bytes: int = 512 * MiB
    recycle_min_interval_s: float = 60.0
    recycle_grace_s: float = 30.0  # how long calls in flight may take before the old process stops

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field in ("capacity_bytes", "max_loading_concurrency", "model_loading_timeout_ms",
                      "default_model_size_bytes", "max_message_bytes"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{name}.{field} must be positive, got {getattr(self, field)}")
        if self.floor_size_factor < 1 or self.predict_size_factor < 1:
            raise ValueError(f"{name} size factors must be at least 1")
        if self.recycle_bytes < 0 or self.recycle_min_interval_s < 0 or self.recycle_grace_s < 0:
            raise ValueError(f"{name} recycle settings must be 0 or more")
        if min(self.start_timeout_s, self.call_timeout_s, self.infer_timeout_s) <= 0:
            raise ValueError(f"{name} timeouts must be positive")
