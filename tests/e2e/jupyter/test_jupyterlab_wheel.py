"""A wheel of the checkout carries the JupyterLab extension: installed with a plain `pip install`
into a fresh venv, `jupyter labextension list` shows it enabled and `jupyter server extension list`
shows the server extension enabled and importable — no build step on the user's side.

The wheel is built from this checkout (the labextension must have been built first:
scripts/build-labextension.sh, which scripts/test-deps.sh runs). The fresh venv borrows this
environment's dependencies through a path file instead of downloading them again (its own
site-packages comes first, so the wheel's kserve_mesh is the one imported, not the editable one)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[3]
LABEXT = "kserve-mesh-jupyterlab"


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 240) -> str:
    """``cmd``'s output; run in ``cwd`` (never the checkout: `python -c` imports from the current folder)."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False, cwd=cwd)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    assert out.returncode == 0, f"{' '.join(cmd)} exited with {out.returncode}:\n{text[-4000:]}"
    return text


def test_a_plain_pip_install_of_the_wheel_lists_the_extension_enabled(tmp_path: Path) -> None:
    assert (ROOT / "jupyter_ext" / "labextension" / "package.json").exists(), (
        "the labextension is not built: run `bash scripts/build-labextension.sh` (scripts/test-deps.sh does)")
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(ROOT)], tmp_path)
    wheel = next(dist.glob("kserve_mesh-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    data = [n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n]
    assert f"share/jupyter/labextensions/{LABEXT}/package.json" in data
    assert f"share/jupyter/labextensions/{LABEXT}/install.json" in data
    assert any(re.fullmatch(rf"share/jupyter/labextensions/{LABEXT}/static/remoteEntry\.\w+\.js", n) for n in data)
    assert "etc/jupyter/jupyter_server_config.d/kserve_mesh.json" in data
    assert "kserve_mesh/jupyter_ext/server/handlers.py" in names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path).strip())
    here = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib"),
            *[p for p in sys.path if p.endswith("site-packages")]}
    (purelib / "borrowed-deps.pth").write_text("\n".join(sorted(here)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--quiet",
          str(wheel)], tmp_path)

    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"), "JUPYTER_DATA_DIR": str(tmp_path / "data"),
           "JUPYTER_PLATFORM_DIRS": "0", "PYTHONNOUSERSITE": "1"}
    where = _run([str(python), "-c", "import kserve_mesh.jupyter_ext.server as m; print(m.__file__)"], tmp_path, env)
    assert where.strip().startswith(str(venv)), where
    listing = _run([str(python), "-m", "jupyterlab.labextensions", "list"], tmp_path, env)
    assert str(venv / "share" / "jupyter" / "labextensions") in listing, listing
    assert re.search(rf"{LABEXT} v0\.1\.0 enabled\s+OK \(python, kserve-mesh\)", listing), listing
    servers = _run([str(python), "-m", "jupyter_server.extension.serverextension", "list"], tmp_path, env)
    assert str(venv / "etc" / "jupyter") in servers, servers
    assert re.search(r"kserve_mesh\.jupyter_ext\.server\s+enabled", servers), servers
    assert re.search(r"kserve_mesh\.jupyter_ext\.server\s+OK", servers), servers
