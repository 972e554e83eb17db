"""Two instances over a real etcd that require client certificates and bearer tokens: they forward
to each other over mTLS with their own peer token (REST as raw bytes, V2 gRPC as a serialized
message over HTTP, non-ASCII ids over gRPC), and a mesh that could not authenticate its own peers
refuses to start."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cluster_support import string_models, string_request
from mesh_process import MeshProcess
from pki import ADMIN, INFER, Pki, make_pki

from kserve_mesh.protocol import v2
from kserve_mesh.store.etcd_server import EtcdServer

pytestmark = pytest.mark.integration


def _flags(pki: Pki, etcd: EtcdServer, i: int) -> list[str]:
    return ["--etcd-endpoints", etcd.client_url, "--instance-id", f"s{i}", "--shutdown-grace-s", "5",
            "--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--tls-client-ca", str(pki.ca_pem),
            "--tls-client-auth", "require", "--tls-server-name", "localhost",
            "--auth", "on", "--auth-file", str(pki.auth), "--peer-token-file", str(pki.dir / "peer-token"),
            "--allow-local-path", str(pki.dir / "models")]


@pytest.fixture()
def secure_pair(etcd: EtcdServer, tmp_path: Path) -> Iterator[tuple[Pki, list[MeshProcess]]]:
    pki = make_pki(tmp_path / "pki")
    (pki.dir / "peer-token").write_text(ADMIN + "\n")
    (pki.dir / "models").mkdir()
    instances: list[MeshProcess] = []
    try:
        for i in range(2):
            proc = MeshProcess.start(*_flags(pki, etcd, i), command="instance", timeout=90)
            proc.context = pki.context(pki.alice)  # clients need a certificate: the instances require one
            proc.headers = {"authorization": f"Bearer {ADMIN}"}
            instances.append(proc)
        deadline = time.monotonic() + 20
        while not all(len(p.call("GET", "/mesh/v1/status")[1]["instances"]) == 2 for p in instances):
            assert time.monotonic() < deadline, "the instances did not see each other"
            time.sleep(0.1)
        yield pki, instances
    finally:
        for p in instances:
            p.stop()


def _holder(instances: list[MeshProcess], model_id: str) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        holders = instances[0].call("GET", "/mesh/v1/status")[1]["placements"].get(model_id, [])
        if holders:
            assert len(holders) == 1, holders
            return int(holders[0].removeprefix("s"))
        time.sleep(0.05)
    raise AssertionError(f"{model_id} has no copy")


def test_instances_forward_to_each_other_over_mtls(secure_pair: tuple[Pki, list[MeshProcess]]) -> None:
    pki, instances = secure_pair
    models = pki.dir / "models"
    expected = {}
    for model_id in ("fw", "fw-é"):
        string_models(models, [model_id])
        expected[model_id] = f"{model_id}:" + "z" * 1000 + "x"
        status, body = instances[0].call("PUT", f"/mesh/v1/models/{urllib.parse.quote(model_id)}",
                                         {"modelInfo": {"type": "string", "path": str(models / model_id)}})
        assert status == 200, body
    for model_id in expected:
        quoted = urllib.parse.quote(model_id)
        status, body = instances[0].call("POST", f"/v2/models/{quoted}/infer", string_request())
        assert status == 200, body
        other = instances[1 - _holder(instances, model_id)]
        # REST through the instance without the copy: forwarded to the holder over mTLS.
        status, body = other.call("POST", f"/v2/models/{quoted}/infer", string_request())
        assert status == 200 and body["outputs"][0]["data"] == [expected[model_id]], body
        # V2 gRPC through it: forwarded as a serialized message (or over gRPC for a non-ASCII id).
        creds = grpc.ssl_channel_credentials(pki.ca_pem.read_bytes(), private_key=pki.alice_key.read_bytes(),
                                             certificate_chain=pki.alice_cert.read_bytes())
        with grpc.secure_channel(other.grpc, creds) as channel:
            infer = channel.unary_unary(v2.method("ModelInfer"),
                                        request_serializer=v2.ModelInferRequest.SerializeToString,
                                        response_deserializer=v2.ModelInferResponse.FromString)
            req = v2.ModelInferRequest(model_name=model_id)
            req.inputs.add(name="input-0", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"x")
            resp = infer(req, timeout=30, metadata=(("authorization", f"Bearer {INFER}"),))
            assert list(resp.outputs[0].contents.bytes_contents) == [expected[model_id].encode()]
        # Still one copy: the requests were forwarded, not loaded again where they entered.
        assert instances[0].call("GET", "/mesh/v1/status")[1]["placements"][model_id] == [f"s{_holder(instances, model_id)}"]
    for p in instances:
        assert "refused" not in p.log(), p.log()[-2000:]  # no peer call was ever turned away


def test_a_mesh_whose_instances_could_not_authenticate_each_other_does_not_start(etcd: EtcdServer,
                                                                                 tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with pytest.raises(RuntimeError, match="instances must authenticate to each other"):
        MeshProcess.start("--etcd-endpoints", etcd.client_url, "--auth", "on", "--auth-file", str(pki.auth),
                          command="instance", timeout=60)
    (tmp_path / "reader-token").write_text(INFER)
    with pytest.raises(RuntimeError, match="is not an admin token of the auth file"):
        MeshProcess.start("--etcd-endpoints", etcd.client_url, "--auth", "on", "--auth-file", str(pki.auth),
                          "--peer-token-file", str(tmp_path / "reader-token"), command="instance", timeout=60)
