"""``RuntimeConfig``: the settings of the built-in runtime (what ``runtimeStatus`` reports, and its
sizing and inference knobs)."""

from __future__ import annotations

from dataclasses import dataclass

from kserve_mesh import __version__

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """Settings of the built-in runtime (what ``runtimeStatus`` reports, and sizing knobs)."""

    capacity_bytes: int = 1024 * MiB
    max_loading_concurrency: int = 1
    model_loading_timeout_ms: int = 90_000
    default_model_size_bytes: int = 1 * MiB
    # Floor of a measured size, as a multiple of the bytes on disk (ModelMesh adapters' guess).
    floor_size_factor: float = 1.25
    # predictModelSize: bytes on disk x this factor + model_overhead_bytes (a model not yet seen).
    predict_size_factor: float = 2.0
    model_overhead_bytes: int = 256 * 1024
    # Requests with more elements than this predict in a worker thread instead of on the loop.
    inline_infer_max_elements: int = 4096
    # After unloads, give the allocator's free memory back to the OS (glibc malloc_trim; see sizing.py).
    release_memory: bool = True
    # Adaptive batching (batching.py): concurrent requests of a model stacked up to this many rows
    # (0 or 1: off) for models that take a batch dimension; a request waits at most the delay for
    # others (0: no deliberate wait, only what arrives meanwhile). A model key's "batching" overrides.
    batch_max_size: int = 32
    batch_max_delay_ms: float = 0.0
    runtime_version: str = __version__

    def __post_init__(self) -> None:
        for name in ("capacity_bytes", "max_loading_concurrency", "model_loading_timeout_ms",
                     "default_model_size_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"RuntimeConfig.{name} must be positive, got {getattr(self, name)}")
        if self.batch_max_size < 0 or self.batch_max_delay_ms < 0:
            raise ValueError("RuntimeConfig.batch_max_size and batch_max_delay_ms must not be negative")
        if self.floor_size_factor < 1 or self.predict_size_factor < 1:
            raise ValueError("RuntimeConfig size factors must be at least 1")
