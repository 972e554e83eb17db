"""Several instances sharing one pair of ports (``--share-ports``, what ``up --workers`` starts):
real etcd, real instance processes on 127.0.0.1. The kernel spreads new connections between them
(SO_REUSEPORT); each serves its peers on ports of its own, so a forward never lands on the sender;
one leaving leaves the shared ports served by the others."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from cluster_support import string_models, string_request
from etcd_fixture import etcd_server  # noqa: F401
from mesh_process import MeshProcess

from kserve_mesh.protocol import tensors, v2
from kserve_mesh.store.etcd_server import EtcdServer

MODELS = [f"m{i}" for i in range(6)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 30.0) -> dict:
    # urllib opens a new connection per request: each is one draw of the kernel's spreading
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _infer(url: str, model_id: str) -> tuple[int, dict]:
    req = urllib.request.Request(f"{url}/v2/models/{model_id}/infer", data=json.dumps(string_request()).encode(),
                                 method="POST", headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.status, json.loads(resp.read())


@pytest.fixture
def shared(etcd_server: EtcdServer, tmp_path: Path):  # noqa: F811
    models = string_models(tmp_path / "models", MODELS)
    rest_port, grpc_port = _free_port(), _free_port()
    root = f"shared-{time.monotonic_ns()}"
    procs: list[MeshProcess] = []
    try:
        for i in range(2):
            procs.append(MeshProcess.start(
                "--etcd-endpoints", etcd_server.client_url, "--namespace", root, "--instance-id", f"w{i}",
                "--shutdown-grace-s", "2", "--models", str(models), "--share-ports",
                "--rest-port", str(rest_port), "--grpc-port", str(grpc_port), command="instance", timeout=90))
        deadline = time.monotonic() + 20
        while not all(len(p.call("GET", "/mesh/v1/status")[1]["instances"]) == 2 for p in procs):
            assert time.monotonic() < deadline, "the two instances never saw each other"
            time.sleep(0.1)
        yield procs, f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}"
    finally:
        for p in procs:
            p.stop()


def test_instances_share_the_ports_and_peers_use_their_own(shared) -> None:
    procs, rest, grpc_address = shared
    for p in procs:  # each announces the shared ports, and peers reach it at ports of its own
        assert f"shared: rest={rest} grpc={grpc_address}" in p.log()
        assert p.rest != rest and p.grpc != grpc_address
    own = {p.call("GET", "/mesh/v1/status")[1]["instanceId"] for p in procs}
    assert own == {"w0", "w1"}

    seen: set[str] = set()
    for _ in range(200):  # new connections to the shared port land on both instances
        seen.add(_get(f"{rest}/mesh/v1/status")["instanceId"])
        if seen == own:
            break
    assert seen == own

    # every model answers through the shared port, whichever instance takes the connection (the
    # other forwards to the holder at its own port, or loads it)
    for _ in range(3):
        for model_id in MODELS:
            status, body = _infer(rest, model_id)
            assert status == 200 and body["model_name"] == model_id
    with grpc.insecure_channel(grpc_address) as channel:
        infer = channel.unary_unary(v2.method("ModelInfer"), request_serializer=v2.ModelInferRequest.SerializeToString,
                                    response_deserializer=v2.ModelInferResponse.FromString)
        import numpy as np

        for model_id in MODELS:
            request = tensors.encode_request(model_id, {"input-0": np.array([b"x"], dtype=object)})
            assert infer(request, timeout=60).model_name == model_id


def test_one_instance_leaving_leaves_the_shared_ports_served(shared) -> None:
    procs, rest, _ = shared
    assert _infer(rest, MODELS[0])[0] == 200
    assert procs[0].stop() == 0
    for _ in range(40):  # every new connection is now the other's
        assert _get(f"{rest}/mesh/v1/status")["instanceId"] == "w1"
    for model_id in MODELS[:3]:
        assert _infer(rest, model_id)[0] == 200


def test_a_port_shared_by_instances_is_not_taken_by_a_plain_instance(shared, etcd_server: EtcdServer) -> None:  # noqa: F811
    """Sharing is asked for by every party: an instance without --share-ports cannot bind the
    port (nor could two meshes share one by mistake)."""
    _, rest, _ = shared
    port = rest.rsplit(":", 1)[1]
    with pytest.raises(RuntimeError, match="in use|cannot bind|Failed to bind"):
        MeshProcess.start("--etcd-endpoints", etcd_server.client_url, "--namespace", "other",
                          "--rest-port", port, command="instance", timeout=60)
