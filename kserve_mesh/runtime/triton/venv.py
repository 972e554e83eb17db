"""``python -m kserve_mesh.runtime.triton.venv [DIR]``: make the Triton venv (default ``.venv-triton``).

It holds Triton (the ``nvidia-pytriton==0.7.0`` wheel's files only: the adapter runs its
``tritonserver`` and never imports pytriton, so none of pytriton's Python dependencies are
installed) and the Python environment Triton's Python backend embeds: numpy < 2 (Triton 2.51's
stub answers empty tensors with numpy 2) and onnxruntime (ONNX models through the Python backend).
Kept apart from the project's environment, as MLServer's venv is, so that the project keeps its
numpy 2. Idempotent: an existing, complete venv is left as it is. Prints the venv's path last.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kserve_mesh.core.errors import Unavailable
from kserve_mesh.runtime.triton.config import VENV_DIRNAME, find_triton, probe_python

PACKAGES_NO_DEPS = ["nvidia-pytriton==0.7.0"]
PACKAGES = ["numpy>=1.26,<2", "onnxruntime>=1.17"]


def _complete(venv: Path) -> bool:
    try:
        dist, python = find_triton(venv=venv)
        env = probe_python(python, dist)
    except Unavailable:
        return False
    return env.onnxruntime


def check_stub_libraries(venv: Path) -> None:
    """The stub must find the backend Python's libpython; ``Unavailable`` naming what is missing."""
    dist, python = find_triton(venv=venv)
    env = probe_python(python, dist)
    stub = dist.stubs / env.version / "triton_python_backend_stub"
    paths = os.pathsep.join([str(dist.libs), env.libdir])
    done = subprocess.run(["ldd", str(stub)], check=False, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "LD_LIBRARY_PATH": paths})
    missing = [line.split()[0] for line in done.stdout.splitlines() if "not found" in line]
    if missing:
        raise Unavailable(f"Triton's Python backend stub cannot find {', '.join(missing)} (for Python "
                          f"{env.version}); install the shared Python library (Debian: libpython{env.version})")


def make_venv(venv: Path) -> Path:
    if not _complete(venv):
        if not (venv / "bin" / "python3").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python3"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "--no-deps", *PACKAGES_NO_DEPS], check=True)
        subprocess.run([*pip, *PACKAGES], check=True)
    check_stub_libraries(venv)
    return venv.absolute()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    venv = Path(args[0]) if args else Path.cwd() / VENV_DIRNAME
    try:
        print(make_venv(venv))
    except (Unavailable, subprocess.CalledProcessError, OSError) as exc:
        print(f"cannot make the Triton venv at {venv}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
