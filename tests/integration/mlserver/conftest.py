"""Fixtures of the MLServer adapter tests: MLServer's own venv (made by scripts/mlserver-venv.sh
when missing, bounded), a tiny sklearn model with its expected predictions, and the adapter's
environment (the child-process helpers are in tests/support/child_process.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from example_models import make_models_module

ROOT = Path(__file__).resolve().parents[3]
VENV_SCRIPT = ROOT / "scripts" / "mlserver-venv.sh"
# The first run downloads MLServer and its dependencies (a minute or two here).
VENV_TIMEOUT_S = 540


@pytest.fixture(scope="session")
def mlserver_venv() -> Path:
    """The MLServer venv (KSERVE_MESH_MLSERVER_VENV or .venv-mlserver), created if missing."""
    try:
        done = subprocess.run(["bash", str(VENV_SCRIPT)], check=False, capture_output=True, text=True,
                              timeout=VENV_TIMEOUT_S, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"scripts/mlserver-venv.sh did not finish in {VENV_TIMEOUT_S} s") from exc
    assert done.returncode == 0, f"scripts/mlserver-venv.sh failed:\n{done.stderr[-3000:]}"
    venv = Path(done.stdout.strip().splitlines()[-1])
    assert (venv / "bin" / "mlserver").is_file(), venv
    return venv


@pytest.fixture(scope="session")
def sklearn_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """(folder holding model.joblib, its inputs.json entry: type, V2 request, expected outputs)."""
    out = tmp_path_factory.mktemp("mlserver-models")
    sample = make_models_module().make_sklearn(out, "sklearn-iris")
    return out / "sklearn-iris", sample


def child_env(venv: Path) -> dict[str, str]:
    return {**os.environ, "KSERVE_MESH_MLSERVER_VENV": str(venv),
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


PYTHON = sys.executable
