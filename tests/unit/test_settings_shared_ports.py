"""share_ports and its peer ports are refused where they would have no effect (settings.py), and
``up --workers`` starts instances on the same REST and gRPC ports (local_cluster.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kserve_mesh.local_cluster import READY, _instance_args
from kserve_mesh.settings import MeshSettings

ETCD = "http://127.0.0.1:2379"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"share_ports": True}, "needs a mesh of several instances"),
    ({"share_ports": True, "etcd_endpoints": ETCD, "rest_port": 0}, "needs fixed rest_port and grpc_port"),
    ({"share_ports": True, "etcd_endpoints": ETCD, "grpc_port": 0}, "needs fixed rest_port and grpc_port"),
    ({"peer_rest_port": 9000}, "need share_ports"),
    ({"peer_grpc_port": 9001, "etcd_endpoints": ETCD}, "need share_ports"),
])
def test_share_ports_refused_where_it_would_do_nothing(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MeshSettings(**kwargs)


def test_share_ports_accepted_in_a_mesh_with_fixed_ports() -> None:
    s = MeshSettings(share_ports=True, etcd_endpoints=ETCD, rest_port=8008, grpc_port=8033, peer_rest_port=9000)
    assert s.share_ports and s.peer_rest_port == 9000 and s.peer_grpc_port == 0


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_workers_share_rest_and_grpc_ports_but_not_metrics() -> None:
    common = {"host": "127.0.0.1", "rest_port": 8008, "grpc_port": 8033, "metrics_port": 2112,
              "etcd_url": ETCD, "runtime": "inprocess", "models": None, "capacity": None, "storage_config": None}
    first, second = (_instance_args(i, share_ports=True, **common) for i in range(2))
    for args in (first, second):
        assert "--share-ports" in args
        assert (_flag(args, "--rest-port"), _flag(args, "--grpc-port")) == ("8008", "8033")
        assert _flag(args, "--runtime") == "inprocess"
    assert (_flag(first, "--metrics-port"), _flag(second, "--metrics-port")) == ("2112", "2113")
    plain = _instance_args(1, **common)
    assert "--share-ports" not in plain and _flag(plain, "--rest-port") == "8009"


def test_the_ready_line_names_the_shared_ports_when_there_are_some() -> None:
    m = READY.search("kserve-mesh ready: rest=http://h:1 grpc=h:2 metrics=http://h:3/metrics "
                     "shared: rest=http://h:8008 grpc=h:8033")
    assert m is not None and m.group(1, 4, 5) == ("http://h:1", "http://h:8008", "h:8033")
    plain = READY.search("kserve-mesh ready: rest=http://h:1 grpc=h:2 metrics=http://h:3/metrics")
    assert plain is not None and plain.group(4) is None
