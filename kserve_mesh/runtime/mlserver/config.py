"""Settings of the MLServer adapter, and where MLServer's own virtual environment is found.

The venv is looked up once, at the process edge: ``KSERVE_MESH_MLSERVER_VENV`` if set, else
``.venv-mlserver`` in the current directory, else ``.venv-mlserver`` at the root of a source checkout
(where ``scripts/mlserver-venv.sh`` creates it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kserve_mesh.core.errors import Unavailable

MiB = 1 << 20
VENV_ENV = "KSERVE_MESH_MLSERVER_VENV"
VENV_DIRNAME = ".venv-mlserver"
_CHECKOUT_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True, slots=True)
class MLServerConfig:
    """What ``runtimeStatus`` reports, sizing knobs, and how the MLServer process is run."""

    capacity_bytes: int = 1024 * MiB
    max_loading_concurrency: int = 1
    model_loading_timeout_ms: int = 90_000
    default_model_size_bytes: int = 1 * MiB
    # Floor of a measured size, as a multiple of the bytes on disk (ModelMesh adapters' guess).
    floor_size_factor: float = 1.25
    # predictModelSize: bytes on disk x this factor + model_overhead_bytes.
    predict_size_factor: float = 2.0
    model_overhead_bytes: int = 256 * 1024
    # MLServer's own parallel inference workers; 0 runs models in its main process (FACTS.md:
    # workers crash-loop with uvloop > 0.21, and a single process is what RSS measures best).
    parallel_workers: int = 0
    # How long MLServer may take to start and answer ready.
    start_timeout_s: float = 120.0
    # Deadline of repository unload and metadata calls; inference has its own.
    call_timeout_s: float = 30.0
    infer_timeout_s: float = 60.0
    max_message_bytes: int = 16 * MiB

    def __post_init__(self) -> None:
        for name in ("capacity_bytes", "max_loading_concurrency", "model_loading_timeout_ms",
                     "default_model_size_bytes", "max_message_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"MLServerConfig.{name} must be positive, got {getattr(self, name)}")
        if self.floor_size_factor < 1 or self.predict_size_factor < 1:
            raise ValueError("MLServerConfig size factors must be at least 1")
        if self.parallel_workers < 0:
            raise ValueError(f"MLServerConfig.parallel_workers must be 0 or more, got {self.parallel_workers}")
        if min(self.start_timeout_s, self.call_timeout_s, self.infer_timeout_s) <= 0:
            raise ValueError("MLServerConfig timeouts must be positive")


def find_venv(explicit: Path | None = None) -> Path:
    """The venv holding ``bin/mlserver``; ``Unavailable`` naming what was tried when there is none."""
    env = os.environ.get(VENV_ENV, "")
    candidates = [explicit] if explicit is not None else (
        [Path(env)] if env else [Path.cwd() / VENV_DIRNAME, _CHECKOUT_ROOT / VENV_DIRNAME]
    )
    for venv in candidates:
        if (venv / "bin" / "mlserver").is_file():
            return venv.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise Unavailable(
        f"no MLServer venv found (looked for bin/mlserver in {tried}); create one with "
        f"scripts/mlserver-venv.sh or point {VENV_ENV} at it"
    )
