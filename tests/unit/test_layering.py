"""The layering contract of DESIGN.md, checked two ways.

1. ``lint-imports`` with the repository's ``.importlinter`` (static: every import in the source,
   including imports inside functions): dependencies point inward, ``core`` is pure, front doors go
   through ``mesh``, the client SDK stays light, etcd stays in ``store``.
2. What importing actually loads (dynamic, in a fresh interpreter): ``kserve_mesh.core`` must load no
   transport, store or cloud library, and ``kserve_mesh.client`` must load neither the mesh nor
   grpc nor fastapi, so the notebook widget and the pipeline steps stay light.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / ".importlinter"
TIMEOUT_S = 120


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_import_contracts_are_kept() -> None:
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    contracts = [s for s in parser.sections() if s.startswith("importlinter:contract:")]
    assert len(contracts) >= 7, f"expected the layering contracts in {CONFIG.name}, found {contracts}"
    code = (
        "from importlinter.cli import lint_imports\n"
        f"raise SystemExit(lint_imports(config_filename={str(CONFIG)!r}, no_cache=True, no_logo=True))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"import contracts broken:\n{report}"
    summary = re.search(r"Contracts: (\d+) kept, (\d+) broken", report)
    assert summary is not None, report
    assert (int(summary.group(1)), int(summary.group(2))) == (len(contracts), 0), report


def _loaded_by(statement: str) -> list[str]:
    """Module names that ``statement`` adds to ``sys.modules`` in a fresh interpreter."""
    code = textwrap.dedent(
        f"""
        import json, sys
        before = set(sys.modules)
        {statement}
        print(json.dumps(sorted(set(sys.modules) - before)))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert proc.returncode == 0, f"{statement!r} failed:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _offending(loaded: list[str], forbidden: set[str]) -> list[str]:
    return [m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden)]


CORE_MODULES = sorted(p.stem for p in (REPO / "kserve_mesh" / "core").glob("*.py") if p.stem != "__init__")


def test_core_modules_exist() -> None:
    for name in ("cache", "clock", "errors", "failures", "ids", "loadqueue", "records", "vmodel"):
        assert name in CORE_MODULES


def test_importing_core_loads_no_transport_store_or_cloud_library() -> None:
    statement = "; ".join(f"import kserve_mesh.core.{name}" for name in CORE_MODULES)
    loaded = _loaded_by(statement)
    assert "kserve_mesh.core.cache" in loaded and "kserve_mesh.core.vmodel" in loaded
    forbidden = {
        "asyncio",
        "grpc",
        "google.protobuf",
        "fastapi",
        "starlette",
        "uvicorn",
        "etcd3aio",
        "kubernetes",
        "kopf",
        "boto3",
        "botocore",
        "httpx",
        "kserve",
        "numpy",
        "pydantic",
        "prometheus_client",
    }
    assert _offending(loaded, forbidden) == []
    other_packages = [m for m in loaded if m.startswith("kserve_mesh.") and not m.startswith("kserve_mesh.core")]
    assert other_packages == []


def test_importing_the_client_loads_no_mesh_grpc_or_fastapi() -> None:
    loaded = _loaded_by("import kserve_mesh.client")
    assert "kserve_mesh.client" in loaded
    forbidden = {
        "kserve_mesh.mesh",
        "kserve_mesh.api",
        "kserve_mesh.server",
        "kserve_mesh.store",
        "kserve_mesh.runtime",
        "kserve_mesh.storage",
        "grpc",
        "fastapi",
        "starlette",
        "uvicorn",
        "kserve",
    }
    assert _offending(loaded, forbidden) == []
