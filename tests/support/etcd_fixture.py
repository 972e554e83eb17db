"""A real etcd for tests: a module-scoped ``etcd_server`` and a per-test ``etcd_store``.

``etcd_server`` is one local etcd process (``kserve_mesh.store.etcd_server.EtcdServer``, fast raft
timers, no fsync) shared by the tests of a module and stopped by its handle when the module ends.
``etcd_store`` is an ``EtcdStore`` on it under a root prefix of its own, so tests never see each
other's keys. Import the fixtures into a test module with
``from etcd_fixture import etcd_server, etcd_store  # noqa: F401``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from kserve_mesh.store.etcd import EtcdStore
from kserve_mesh.store.etcd_server import EtcdServer

_roots = itertools.count()


def start_etcd() -> EtcdServer:
    """A fresh local etcd (the caller stops it with ``close()``)."""
    return EtcdServer(unsafe_no_fsync=True).start()


def unique_root(label: str = "t") -> str:
    return f"test-{os.getpid()}-{next(_roots)}-{label}/"


@pytest.fixture(scope="module")
def etcd_server() -> Iterator[EtcdServer]:
    server = start_etcd()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def etcd_store(
    etcd_server: EtcdServer, request: pytest.FixtureRequest
) -> AsyncIterator[EtcdStore]:
    async with EtcdStore([etcd_server.endpoint], root=unique_root(request.node.name[:40])) as store:
        yield store
