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
from kserve_mesh.runtime.adapters.config import AdapterConfig

VENV_ENV = "KSERVE_MESH_MLSERVER_VENV"
VENV_DIRNAME = ".venv-mlserver"
_CHECKOUT_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True, slots=True)
class MLServerConfig(AdapterConfig):
    """What ``runtimeStatus`` reports, sizing knobs (``AdapterConfig``), and how the MLServer process
    is run. ``recycle_bytes`` matters most here: MLServer keeps unloaded models' memory (recycle.py)."""

    # MLServer's own parallel inference workers; 0 runs models in its main process (FACTS.md:
    # workers crash-loop with uvloop > 0.21, and a single process is what RSS measures best).
    parallel_workers: int = 0
    # How long MLServer may take to start and answer ready.
    start_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        AdapterConfig.__post_init__(self)  # (no zero-argument super() in a slots dataclass)
        if self.parallel_workers < 0:
            raise ValueError(f"MLServerConfig.parallel_workers must be 0 or more, got {self.parallel_workers}")


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
