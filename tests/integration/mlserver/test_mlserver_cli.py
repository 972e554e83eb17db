"""``python -m kserve_mesh.runtime.mlserver`` refuses bad set-ups with one clear line and exit 1."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import PYTHON, ROOT

pytestmark = pytest.mark.integration


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "kserve_mesh.runtime.mlserver", "--port", "0", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_a_missing_venv_is_named_with_the_fix(tmp_path: Path) -> None:
    done = _run(env={"KSERVE_MESH_MLSERVER_VENV": str(tmp_path / "no-venv")})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert str(tmp_path / "no-venv") in done.stderr and "scripts/mlserver-venv.sh" in done.stderr
    assert done.stdout == ""


def test_attach_needs_all_three_addresses() -> None:
    done = _run("--attach-http", "http://127.0.0.1:1")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "--attach-http, --attach-grpc and --attach-repository" in done.stderr


def test_an_unreachable_mlserver_to_attach_to_is_reported(tmp_path: Path) -> None:
    done = _run("--attach-http", "http://127.0.0.1:9", "--attach-grpc", "127.0.0.1:9",
                "--attach-repository", str(tmp_path), "--start-timeout-s", "1")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "MLServer at 127.0.0.1:9 is not ready after 1 s" in done.stderr
