"""The address an instance publishes for its peers: never a wildcard."""

from __future__ import annotations

import socket

from kserve_mesh.server import advertised_host
from kserve_mesh.settings import MeshSettings


def test_explicit_address_wins_then_the_bind_address() -> None:
    assert advertised_host("0.0.0.0", "10.1.2.3") == "10.1.2.3"
    assert advertised_host("127.0.0.1") == "127.0.0.1"
    assert advertised_host("::1") == "[::1]"  # usable in host:port and URLs


def test_a_wildcard_becomes_this_machines_address() -> None:
    own = socket.gethostbyname(socket.gethostname())
    for wildcard in ("0.0.0.0", "::", ""):
        got = advertised_host(wildcard)
        assert got == own and got not in ("0.0.0.0", "::", "")


def test_settings_read_the_advertised_address_from_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KSERVE_MESH_ADVERTISE_HOST", "10.9.8.7")
    assert MeshSettings().advertise_host == "10.9.8.7"
