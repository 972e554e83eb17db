"""Settings of the Triton adapter, and where Triton and its Python backend's environment are found.

Triton comes from the ``nvidia-pytriton`` wheel (FACTS.md): ``pytriton/tritonserver/bin/tritonserver``,
its shared libraries in ``nvidia_pytriton.libs/`` beside the package, the Python backend in
``pytriton/tritonserver/backends/python`` and one Python backend stub per Python version in
``pytriton/tritonserver/python_backend_stubs/<X.Y>/``. It is looked up once, at the process edge:
``--tritonserver PATH``; else the venv of ``--triton-venv``, ``KSERVE_MESH_TRITON_VENV``,
``.venv-triton`` in the current folder or at the root of a source checkout (``python -m
kserve_mesh.runtime.triton.venv`` makes one); else the environment this process runs in.

Python-backend models run in stub processes that embed the Python of the "backend environment":
the venv Triton was found in (the interpreter on ``PATH`` first; CPython finds the venv from it),
or ``--backend-python``. That Python needs numpy < 2 — Triton 2.51's stub answers empty output
tensors with numpy 2 (measured here) — and, to serve ONNX models, the onnxruntime package.
``probe_python`` checks both once, at start.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kserve_mesh.core.errors import Unavailable
from kserve_mesh.runtime.adapters.config import AdapterConfig

VENV_ENV = "KSERVE_MESH_TRITON_VENV"
VENV_DIRNAME = ".venv-triton"
_CHECKOUT_ROOT = Path(__file__).resolve().parents[3]
_INSTALL_HINT = ("make one with `python -m kserve_mesh.runtime.triton.venv .venv-triton`, or install "
                 "nvidia-pytriton==0.7.0 (`pip install 'kserve-mesh[triton]'`)")


@dataclass(frozen=True, slots=True)
class TritonConfig(AdapterConfig):
    """What ``runtimeStatus`` reports, sizing knobs (``AdapterConfig``), and how the Triton process is run."""

    start_timeout_s: float = 60.0  # Triton's start until its gRPC answers ready
    exit_timeout_s: int = 5  # Triton's --exit-timeout-secs: how long it lets calls finish on SIGTERM
    # A Triton that died is started again, waiting 0.5 s doubling up to this between tries.
    restart_backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        AdapterConfig.__post_init__(self)  # (no zero-argument super() in a slots dataclass)
        if self.exit_timeout_s <= 0:
            raise ValueError(f"TritonConfig.exit_timeout_s must be positive, got {self.exit_timeout_s}")
        if self.restart_backoff_max_s <= 0:
            raise ValueError("TritonConfig timeouts must be positive")


@dataclass(frozen=True, slots=True)
class TritonDist:
    """The files of a Triton from the nvidia-pytriton wheel."""

    tritonserver: Path
    libs: Path  # nvidia_pytriton.libs
    backends: Path  # the wheel's backends folder (python/)
    stubs: Path  # python_backend_stubs/<X.Y>/triton_python_backend_stub

    @classmethod
    def of_binary(cls, tritonserver: Path) -> TritonDist:
        home = tritonserver.resolve().parent.parent  # .../pytriton/tritonserver
        return cls(tritonserver.resolve(), home.parent.parent / "nvidia_pytriton.libs", home / "backends",
                   home / "python_backend_stubs")

    def check(self) -> None:
        for what, path in (("tritonserver", self.tritonserver), ("its libraries", self.libs),
                           ("its Python backend", self.backends / "python" / "libtriton_python.so")):
            if not path.exists():
                raise Unavailable(f"Triton at {self.tritonserver}: {what} not found at {path}; {_INSTALL_HINT}")


@dataclass(frozen=True, slots=True)
class PythonEnv:
    """The Python the backend stubs embed."""

    executable: Path
    version: str  # "3.11"
    libdir: str  # where its libpython3.X.so lives
    numpy: str  # its numpy version
    onnxruntime: bool  # whether it can import onnxruntime (ONNX models through the Python backend)

    @property
    def where(self) -> str:
        return f"the Python backend's environment ({self.executable})"


def _site_binary(venv: Path) -> Path | None:
    for site in sorted(venv.glob("lib/python3*/site-packages")):
        binary = site / "pytriton" / "tritonserver" / "bin" / "tritonserver"
        if binary.is_file():
            return binary
    return None


def find_triton(tritonserver: Path | None = None, venv: Path | None = None,
                backend_python: Path | None = None) -> tuple[TritonDist, Path]:
    """Triton's files and the backend Python's executable; ``Unavailable`` naming what was tried."""
    if tritonserver is not None:
        if not tritonserver.is_file():
            raise Unavailable(f"--tritonserver {tritonserver} does not exist; {_INSTALL_HINT}")
        dist = TritonDist.of_binary(tritonserver)
        dist.check()
        return dist, backend_python or Path(sys.executable)
    env = os.environ.get(VENV_ENV, "")
    venvs = [venv] if venv is not None else (
        [Path(env)] if env else [Path.cwd() / VENV_DIRNAME, _CHECKOUT_ROOT / VENV_DIRNAME])
    for candidate in venvs:
        binary = _site_binary(candidate)
        if binary is not None:
            dist = TritonDist.of_binary(binary)
            dist.check()
            return dist, backend_python or (candidate.absolute() / "bin" / "python3")
    if venv is None and not env:
        spec = importlib.util.find_spec("pytriton")
        if spec is not None and spec.submodule_search_locations:
            binary = Path(next(iter(spec.submodule_search_locations))) / "tritonserver" / "bin" / "tritonserver"
            if binary.is_file():
                dist = TritonDist.of_binary(binary)
                dist.check()
                return dist, backend_python or Path(sys.executable)
    tried = ", ".join(str(v) for v in venvs) + ("" if venv is not None or env else ", and this environment")
    raise Unavailable(f"no Triton Inference Server found (looked for nvidia-pytriton's tritonserver in {tried}); "
                      f"{_INSTALL_HINT}")


_PROBE = """
import json, sys, sysconfig
out = {"version": "%d.%d" % sys.version_info[:2], "libdir": sysconfig.get_config_var("LIBDIR") or "",
       "shared": bool(sysconfig.get_config_var("Py_ENABLE_SHARED")), "numpy": "", "onnxruntime": False}
try:
    import numpy
    out["numpy"] = numpy.__version__
except ImportError:
    pass
try:
    import onnxruntime  # noqa: F401
    out["onnxruntime"] = True
except ImportError:
    pass
print(json.dumps(out))
"""


def probe_python(executable: Path, dist: TritonDist) -> PythonEnv:
    """Ask the backend Python what it is; ``Unavailable`` when Triton's Python backend cannot use it."""
    if not executable.exists():
        raise Unavailable(f"the Python backend's interpreter {executable} does not exist")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        done = subprocess.run([str(executable), "-c", _PROBE], check=False, capture_output=True, text=True, timeout=60, env=env)
        doc = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        raise Unavailable(f"cannot run the Python backend's interpreter {executable}: {exc}") from exc
    found = PythonEnv(executable, doc["version"], doc["libdir"], doc["numpy"], bool(doc["onnxruntime"]))
    if not (dist.stubs / found.version / "triton_python_backend_stub").is_file():
        have = sorted(p.name for p in dist.stubs.iterdir()) if dist.stubs.is_dir() else []
        raise Unavailable(f"Triton's Python backend has no stub for Python {found.version} ({executable}); "
                          f"it has {', '.join(have) or 'none'}")
    if not found.numpy:
        raise Unavailable(f"numpy is not installed in {found.where}; Triton's Python backend needs numpy < 2")
    if int(found.numpy.split(".", 1)[0]) >= 2:
        raise Unavailable(
            f"{found.where} has numpy {found.numpy}: Triton 2.51's Python backend answers empty output tensors "
            f"with numpy 2; use an environment with numpy < 2 (--backend-python, or {_INSTALL_HINT})")
    return found
