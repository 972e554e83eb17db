"""Fixtures of the mesh-of-instances tests: a real etcd and real instance processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_support import Mesh, start_mesh
from etcd_fixture import start_etcd

from kserve_mesh.store.etcd_server import EtcdServer


@pytest.fixture()
def etcd() -> Iterator[EtcdServer]:
    server = start_etcd()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture()
def mesh_factory(etcd: EtcdServer, tmp_path: Path) -> Iterator:
    """Starts meshes whose instances may serve the test's own models (under its ``tmp_path``)."""
    started: list[Mesh] = []

    def make(n: int = 3, *args: str) -> Mesh:
        mesh = start_mesh(etcd, n, "--allow-local-path", str(tmp_path), *args)
        started.append(mesh)
        return mesh

    try:
        yield make
    finally:
        for mesh in started:
            for p in mesh.instances:
                p.stop()
