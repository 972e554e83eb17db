"""Fixtures of the Triton adapter tests: the Triton venv (nvidia-pytriton's server and the numpy<2 +
onnxruntime environment of its Python backend; made by ``python -m kserve_mesh.runtime.triton.venv``
when missing, bounded) and the tiny models of ``triton_models.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
VENV_TIMEOUT_S = 540  # the first run downloads nvidia-pytriton (~55 MB) and onnxruntime


@pytest.fixture(scope="session")
def triton_venv() -> Path:
    """The Triton venv (KSERVE_MESH_TRITON_VENV or .venv-triton at the checkout root), made if missing."""
    venv = Path(os.environ.get("KSERVE_MESH_TRITON_VENV") or ROOT / ".venv-triton")
    try:
        done = subprocess.run([sys.executable, "-m", "kserve_mesh.runtime.triton.venv", str(venv)], check=False,
                              capture_output=True, text=True, timeout=VENV_TIMEOUT_S, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"making the Triton venv did not finish in {VENV_TIMEOUT_S} s") from exc
    assert done.returncode == 0, f"making the Triton venv failed:\n{done.stderr[-3000:]}"
    return Path(done.stdout.strip().splitlines()[-1])
