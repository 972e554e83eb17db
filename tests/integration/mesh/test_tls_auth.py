"""A real mesh process with TLS, client certificates and bearer tokens, driven by clients no one
here wrote (tritonclient gRPC and HTTP, kserve's gRPC and REST clients), by our SDK and CLI.

A test CA (trustme) issues the server certificate (127.0.0.1 / localhost) and client certificates;
the auth file names an admin token, an infer token (stored as its SHA-256 only) and the client
certificate ``alice`` (role infer)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from mesh_process import MeshProcess
from pki import ADMIN, INFER, Pki, make_pki

from kserve_mesh.client import AuthenticationError, MeshClient, MeshUnavailableError, PermissionDeniedError
from kserve_mesh.protos import model_mesh_pb2 as mm
from kserve_mesh.protos import model_mesh_pb2_grpc as mm_grpc

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
REQUEST = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}


def tls_flags(pki: Pki, client_auth: str = "optional") -> list[str]:
    return ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--tls-client-ca", str(pki.ca_pem),
            "--tls-client-auth", client_auth]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure(pki: Pki, example_models: tuple[Path, dict[str, Any]]) -> Iterator[MeshProcess]:
    proc = MeshProcess.start("--models", str(example_models[0]), *tls_flags(pki), "--auth", "on",
                             "--auth-file", str(pki.auth), "--tls-metrics")
    proc.context = pki.context()
    proc.headers = {"authorization": f"Bearer {ADMIN}"}
    try:
        yield proc
    finally:
        proc.stop()


def _http(pki: Pki, client: Path | None = None) -> httpx.Client:
    return httpx.Client(verify=pki.context(client), timeout=60)


def test_every_address_it_announces_is_https(secure: MeshProcess) -> None:
    assert secure.rest.startswith("https://") and secure.metrics.startswith("https://")
    assert "modelmesh_instance_capacity_bytes" in secure.metrics_text()  # metrics over TLS


def test_rest_roles_tokens_and_client_certificates(secure: MeshProcess, pki: Pki, example_models) -> None:  # type: ignore[no-untyped-def]
    url = secure.rest
    infer_path = "/v2/models/sklearn-iris/infer"
    body = {"inputs": [REQUEST]}
    register = {"modelInfo": {"type": "sklearn", "path": str(example_models[0] / "sklearn-iris")}}
    with _http(pki) as http:
        assert http.get(url + "/v2/health/ready").status_code == 200  # probes need no secret
        refused = http.get(url + "/mesh/v1/models")
        assert refused.status_code == 401 and refused.json()["type"] == "Unauthenticated"
        assert refused.headers["www-authenticate"].startswith("Bearer")
        wrong = http.post(url + infer_path, json=body, headers={"authorization": "Bearer not-a-token-we-know-x"})
        assert wrong.status_code == 401 and "not known" in wrong.json()["error"]

        reader = {"authorization": f"Bearer {INFER}"}
        answer = http.post(url + infer_path, json=body, headers=reader)
        assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [0]
        assert http.get(url + "/mesh/v1/models", headers=reader).status_code == 200
        for method, path, payload in [("PUT", "/mesh/v1/models/tls-copy", register),
                                      ("DELETE", "/mesh/v1/models/sklearn-iris", None),
                                      ("POST", "/v2/repository/models/sklearn-iris/unload", None),
                                      ("PUT", "/mesh/v1/vmodels/v", {"targetModelId": "sklearn-iris"})]:
            denied = http.request(method, url + path, json=payload, headers=reader)
            assert denied.status_code == 403, (method, path, denied.text)
            assert "needs role admin; 'dashboards' has role infer" in denied.json()["error"]

        admin = {"authorization": f"Bearer {ADMIN}"}
        created = http.put(url + "/mesh/v1/models/tls-copy", json=register, headers=admin)
        assert created.status_code == 200, created.text
        assert http.delete(url + "/mesh/v1/models/tls-copy", headers=admin).status_code == 200

    # mTLS identity instead of a token: alice may infer, not manage.
    with _http(pki, pki.alice) as http:
        assert http.post(url + infer_path, json=body).status_code == 200
        assert http.put(url + "/mesh/v1/models/by-alice", json=register).status_code == 403
    # A certificate from a CA nobody trusts is refused in the handshake, even where optional.
    with _http(pki, pki.stranger) as http, pytest.raises(httpx.HTTPError):
        http.get(url + "/v2/health/ready")
    # Without the CA the client does not trust the server.
    with httpx.Client(timeout=10) as http, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        http.get(url + "/v2/health/live")


def test_grpc_roles_management_api(secure: MeshProcess, pki: Pki, example_models) -> None:  # type: ignore[no-untyped-def]
    creds = grpc.ssl_channel_credentials(pki.ca_pem.read_bytes())
    with grpc.secure_channel(secure.grpc, creds) as channel:
        stub = mm_grpc.ModelMeshStub(channel)
        request = mm.RegisterModelRequest(modelId="grpc-tls-copy", modelInfo=mm.ModelInfo(
            type="sklearn", path=str(example_models[0] / "sklearn-iris")))
        with pytest.raises(grpc.RpcError) as none:
            stub.registerModel(request, timeout=30)
        assert none.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as reader:
            stub.registerModel(request, timeout=30, metadata=(("authorization", f"Bearer {INFER}"),))
        assert reader.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "needs role admin" in reader.value.details()
        status = stub.getModelStatus(mm.GetStatusRequest(modelId="sklearn-iris"), timeout=30,
                                     metadata=(("authorization", f"Bearer {INFER}"),))
        assert status.status != mm.ModelStatusInfo.NOT_FOUND
        admin = (("authorization", f"Bearer {ADMIN}"),)
        stub.registerModel(request, timeout=30, metadata=admin)
        stub.unregisterModel(mm.UnregisterModelRequest(modelId="grpc-tls-copy"), timeout=30, metadata=admin)


def test_grpc_roles_relayed_calls_need_infer(secure: MeshProcess, pki: Pki) -> None:
    """Any other method naming a model (relayed to its runtime) needs the infer role; a peer's hop
    (mm-forwarded) needs admin, as on every front door."""
    creds = grpc.ssl_channel_credentials(pki.ca_pem.read_bytes())
    with grpc.secure_channel(secure.grpc, creds) as channel:
        predict = channel.unary_unary("/tfserving.PredictionService/Predict")
        routed = (("mm-model-id", "sklearn-iris"),)
        with pytest.raises(grpc.RpcError) as none:
            predict(b"", timeout=30, metadata=routed)
        assert none.value.code() is grpc.StatusCode.UNAUTHENTICATED
        reader = (("authorization", f"Bearer {INFER}"),)
        with pytest.raises(grpc.RpcError) as inprocess:  # let in, then: the in-process runtime serves V2 only
            predict(b"", timeout=30, metadata=routed + reader)
        assert inprocess.value.code() is grpc.StatusCode.UNIMPLEMENTED and "runs in its process" in inprocess.value.details()
        with pytest.raises(grpc.RpcError) as hop:
            predict(b"", timeout=30, metadata=(*routed, *reader, ("mm-forwarded", "1")))
        assert hop.value.code() is grpc.StatusCode.PERMISSION_DENIED


def _run_client(which: str, target: str, tmp_path: Path, **cfg: Any) -> dict[str, Any]:
    path = tmp_path / f"{which}.json"
    path.write_text(json.dumps({"model": "sklearn-iris", "input": REQUEST, **cfg}))
    done = subprocess.run([sys.executable, str(HERE / "tls_clients.py"), which, target, str(path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_tritonclient_and_kserve_clients_over_tls(secure: MeshProcess, pki: Pki, tmp_path: Path) -> None:
    ca = str(pki.ca_pem)
    triton = _run_client("triton-grpc", secure.grpc, tmp_path, ca=ca, token=INFER)
    assert triton["live"] is True and triton["output"] == [0]
    assert triton["load"].startswith("StatusCode.PERMISSION_DENIED")  # repository load is admin work
    anonymous = _run_client("triton-grpc", secure.grpc, tmp_path, ca=ca, token="")
    assert anonymous["error"].startswith("StatusCode.UNAUTHENTICATED")
    with_cert = _run_client("triton-grpc", secure.grpc, tmp_path, ca=ca, token=ADMIN,
                            cert=str(pki.alice_cert), key=str(pki.alice_key))
    assert with_cert["output"] == [0] and "PERMISSION_DENIED" not in with_cert["load"]
    assert _run_client("kserve-grpc", secure.grpc, tmp_path, ca=ca, token=INFER)["output"] == [0]
    assert _run_client("kserve-rest", secure.rest, tmp_path, ca=ca, token=INFER)["output"] == [0]
    assert _run_client("kserve-rest", secure.rest, tmp_path, ca=ca, token="")["error"].startswith("401")

    import numpy as np
    import tritonclient.http as th

    client = th.InferenceServerClient(secure.rest.removeprefix("https://"), ssl=True,
                                      ssl_context_factory=lambda: pki.context())
    try:
        inp = th.InferInput("input-0", [1, 4], "FP64")
        inp.set_data_from_numpy(np.array([REQUEST["data"]], dtype=np.float64), binary_data=True)
        result = client.infer("sklearn-iris", [inp], headers={"authorization": f"Bearer {INFER}"})
        assert result.as_numpy("output-0").tolist() == [0]
    finally:
        client.close()


def test_sdk_and_cli_over_tls(secure: MeshProcess, pki: Pki, tmp_path: Path) -> None:
    with MeshClient(secure.rest, token=INFER, ca_cert=pki.ca_pem) as client:
        assert {m["modelId"] for m in client.models()} >= {"sklearn-iris"}
        assert client.infer_json("sklearn-iris", {"inputs": [REQUEST]})["outputs"][0]["data"] == [0]
        with pytest.raises(PermissionDeniedError, match="needs role admin"):
            client.unregister("sklearn-iris")
    with MeshClient(secure.rest, ca_cert=pki.ca_pem, token="") as client, pytest.raises(AuthenticationError):
        client.models()
    with MeshClient(secure.rest, client_cert=pki.alice, ca_cert=pki.ca_pem, token="") as client:
        assert client.models()  # the client certificate names alice (role infer)
    with MeshClient(secure.rest, token=INFER) as client, pytest.raises(MeshUnavailableError, match="--ca-cert"):
        client.models()  # the server's CA is not given: a clear hint, not a stack trace

    cli = [sys.executable, "-m", "kserve_mesh.cli"]
    env = {"PATH": "/usr/bin:/bin", "KSERVE_MESH_TOKEN": INFER, "KSERVE_MESH_CA_CERT": str(pki.ca_pem)}
    ok = subprocess.run([*cli, "models", "-o", "json", "--url", secure.rest], capture_output=True, text=True,
                        timeout=60, env=env, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "sklearn-iris" in {m["modelId"] for m in json.loads(ok.stdout)}
    denied = subprocess.run([*cli, "unregister", "sklearn-iris", "--url", secure.rest], capture_output=True,
                            text=True, timeout=60, env=env, check=False)
    assert denied.returncode == 1 and "needs role admin" in denied.stderr and "Traceback" not in denied.stderr
    flags = subprocess.run([*cli, "status", "--url", secure.rest, "--token", ADMIN, "--ca-cert", str(pki.ca_pem)],
                           capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"}, check=False)
    assert flags.returncode == 0, flags.stderr
    untrusted = subprocess.run([*cli, "models", "--url", secure.rest, "--token", INFER], capture_output=True,
                               text=True, timeout=60, env={"PATH": "/usr/bin:/bin"}, check=False)
    assert untrusted.returncode == 1 and "--ca-cert" in untrusted.stderr and "Traceback" not in untrusted.stderr


def test_no_token_reaches_the_log(secure: MeshProcess, pki: Pki) -> None:
    with _http(pki) as http:
        for token in (ADMIN, INFER, "a-wrong-token-that-must-not-be-logged"):
            http.delete(secure.rest + "/mesh/v1/models/nothing-here", headers={"authorization": f"Bearer {token}"})
    time.sleep(0.5)
    log = secure.log()
    assert "refused" in log  # refusals are logged ...
    for secret in (ADMIN, INFER, "a-wrong-token-that-must-not-be-logged", hashlib.sha256(INFER.encode()).hexdigest()):
        assert secret not in log  # ... without the credentials


def test_required_client_certificates_refuse_clients_without_one(pki: Pki, example_models) -> None:  # type: ignore[no-untyped-def]
    proc = MeshProcess.start("--models", str(example_models[0]), *tls_flags(pki, "require"))
    try:
        body = {"inputs": [REQUEST]}
        with _http(pki) as http, pytest.raises(httpx.HTTPError):
            http.post(proc.rest + "/v2/models/sklearn-iris/infer", json=body)
        with _http(pki, pki.alice) as http:
            assert http.post(proc.rest + "/v2/models/sklearn-iris/infer", json=body).status_code == 200
        creds = grpc.ssl_channel_credentials(pki.ca_pem.read_bytes())
        with grpc.secure_channel(proc.grpc, creds) as channel, pytest.raises(grpc.RpcError) as refused:
            mm_grpc.ModelMeshStub(channel).getModelStatus(mm.GetStatusRequest(modelId="sklearn-iris"), timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        alice = grpc.ssl_channel_credentials(pki.ca_pem.read_bytes(), private_key=pki.alice_key.read_bytes(),
                                             certificate_chain=pki.alice_cert.read_bytes())
        with grpc.secure_channel(proc.grpc, alice) as channel:
            status = mm_grpc.ModelMeshStub(channel).getModelStatus(mm.GetStatusRequest(modelId="sklearn-iris"),
                                                                   timeout=30)
            assert status.status != mm.ModelStatusInfo.NOT_FOUND
    finally:
        proc.stop()


def test_a_certificate_swapped_on_disk_is_picked_up_without_a_restart(tmp_path: Path, example_models) -> None:  # type: ignore[no-untyped-def]
    old = make_pki(tmp_path / "old")
    live = tmp_path / "live"
    live.mkdir()
    for name in ("tls.crt", "tls.key"):
        shutil.copy(old.dir / name, live / name)
    proc = MeshProcess.start("--models", str(example_models[0]), "--tls-cert", str(live / "tls.crt"),
                             "--tls-key", str(live / "tls.key"), env={"KSERVE_MESH_TLS_RELOAD_S": "0.2"})
    try:
        with _http(old) as http:
            assert http.get(proc.rest + "/v2/health/ready").status_code == 200
        new = make_pki(tmp_path / "new")  # renewed: another CA, as after a rotation
        shutil.copy(new.dir / "tls.key", live / "tls.key.tmp")
        shutil.copy(new.dir / "tls.crt", live / "tls.crt.tmp")
        (live / "tls.key.tmp").replace(live / "tls.key")
        (live / "tls.crt.tmp").replace(live / "tls.crt")
        deadline = time.monotonic() + 20
        served_new = False
        while time.monotonic() < deadline and not served_new:
            try:
                with _http(new) as http:
                    served_new = http.get(proc.rest + "/v2/health/ready").status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        assert served_new, proc.log()[-3000:]
        with _http(old) as http, pytest.raises(httpx.ConnectError):
            http.get(proc.rest + "/v2/health/ready")  # the old certificate is no longer served
        creds = grpc.ssl_channel_credentials(new.ca_pem.read_bytes())
        with grpc.secure_channel(proc.grpc, creds) as channel:  # gRPC takes the new one too
            status = mm_grpc.ModelMeshStub(channel).getModelStatus(mm.GetStatusRequest(modelId="sklearn-iris"),
                                                                   timeout=30)
            assert status.status != mm.ModelStatusInfo.NOT_FOUND
        assert "TLS certificate files re-read" in proc.log()
    finally:
        proc.stop()
