"""The cache's capacity with each kind of runtime (server/runtime_setup.py)."""

from __future__ import annotations

import pytest

from kserve_mesh.server.runtime_setup import cache_capacity
from kserve_mesh.settings import MeshSettings

GiB = 1 << 30


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KSERVE_MESH_CAPACITY_BYTES", raising=False)


def test_a_remote_runtime_reports_the_capacity_unless_capacity_bytes_sets_less() -> None:
    remote = MeshSettings(runtime="remote", runtime_address="127.0.0.1:1")
    assert cache_capacity(remote, 4 * GiB) == 4 * GiB  # not set: the runtime's figure, as ModelMesh
    capped = MeshSettings(runtime="remote", runtime_address="127.0.0.1:1", capacity_bytes=GiB)
    assert cache_capacity(capped, 4 * GiB) == GiB  # set: it has its effect
    assert cache_capacity(capped, GiB // 2) == GiB // 2  # never more than the runtime has


def test_the_builtin_runtime_reports_what_it_was_given() -> None:
    s = MeshSettings(runtime="process", capacity_bytes=GiB)
    assert cache_capacity(s, GiB) == GiB
