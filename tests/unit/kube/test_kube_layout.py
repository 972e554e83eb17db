"""kube's roles, as importing them loads them (``.importlinter`` checks the import statements).

The public face (``kserve_mesh.kube``) and the pure KServe model (``kube.core``) load no transport,
Kubernetes client, store or mesh; the standalone side loads no kopf; the controller loads neither
the mesh nor the store (it talks to the mesh over gRPC). Each check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
KUBE = REPO / "kserve_mesh" / "kube"
TIMEOUT_S = 120

KUBERNETES = {"kopf", "aiohttp", "kubernetes"}
SERVER_STACK = {"kserve_mesh.mesh", "kserve_mesh.store", "kserve_mesh.api", "kserve_mesh.server", "fastapi",
                "starlette", "uvicorn"}
TRANSPORTS = {"grpc", "google.protobuf", "httpx", "etcd3aio"}


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
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 0, f"{statement!r} failed:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _offending(loaded: list[str], forbidden: set[str]) -> list[str]:
    return [m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden)]


def test_the_roles_are_packages() -> None:
    for role in ("core", "controller", "controller/deploy", "standalone"):
        assert (KUBE / role / "__init__.py").is_file(), role
    assert sorted(p.name for p in KUBE.glob("*.py")) == ["__init__.py", "reconcile.py"]


def test_the_kserve_model_loads_nothing_but_itself_and_the_core() -> None:
    modules = sorted(p.stem for p in (KUBE / "core").glob("*.py") if p.stem != "__init__")
    loaded = _loaded_by("; ".join(f"import kserve_mesh.kube.core.{m}" for m in modules))
    assert _offending(loaded, KUBERNETES | SERVER_STACK | TRANSPORTS | {"asyncio", "kserve_mesh.kube.controller",
                                                                        "kserve_mesh.kube.standalone"}) == []


def test_the_public_face_is_light() -> None:
    loaded = _loaded_by("import kserve_mesh.kube")
    assert "kserve_mesh.kube.core.parse" in loaded and "kserve_mesh.kube.reconcile" in loaded
    assert _offending(loaded, KUBERNETES | SERVER_STACK | TRANSPORTS | {"kserve_mesh.kube.controller",
                                                                        "kserve_mesh.kube.standalone"}) == []


def test_the_standalone_side_loads_no_kubernetes_client_and_no_controller() -> None:
    loaded = _loaded_by("from kserve_mesh.kube import KubeService")
    assert "kserve_mesh.kube.standalone.service" in loaded
    assert _offending(loaded, KUBERNETES | {"kserve_mesh.kube.controller"}) == []


def test_the_controller_loads_neither_the_mesh_nor_the_store() -> None:
    loaded = _loaded_by("from kserve_mesh.kube import controller_main; import kserve_mesh.kube.controller.handlers")
    assert "kopf" in loaded and "kserve_mesh.kube.controller.mesh_client" in loaded
    assert _offending(loaded, SERVER_STACK | {"kserve_mesh.kube.standalone"}) == []


def test_every_public_name_resolves() -> None:
    from kserve_mesh import kube

    for name in kube.__all__:
        assert getattr(kube, name) is not None, name
    with pytest.raises(AttributeError):
        _ = kube.no_such_name  # type: ignore[attr-defined]
