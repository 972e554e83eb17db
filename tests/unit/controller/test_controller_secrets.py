"""What the controller reads and makes in a namespace before its runtime pods (kube/controller/namespace_secrets.py
through the sync, on a fake Kubernetes API): the auth Secret made once and never overwritten, the TLS
Secret checked (missing or unusable: a Warning Event and no Deployment), PVC claims from the
storage-config and, with allowAnyPVC, from the models; config keys without effect as Events; and the
credentials the controller calls the mesh with, over a real gRPC server (token, TLS, refusals)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import trustme
import yaml
from test_controller_plan import RT, FakeKube

from kserve_mesh.core.errors import Unavailable
from kserve_mesh.kube.controller.deploy.config import ServingConfig
from kserve_mesh.kube.controller.deploy.security import PEER_TOKEN_ANNOTATION, secret_data
from kserve_mesh.kube.controller.kube_api import KubeApiError, Warnings
from kserve_mesh.kube.controller.mesh_client import GrpcMesh, MeshCredentials, MeshTls
from kserve_mesh.kube.controller.namespace_secrets import NamespaceSecrets
from kserve_mesh.kube.controller.runtime_sync import ConfigSource, RuntimeSync
from kserve_mesh.protos import model_mesh_pb2 as pb
from kserve_mesh.protos import model_mesh_pb2_grpc as pb_grpc

NS = "ns"
SECRETS = f"/api/v1/namespaces/{NS}/secrets"
AUTH = f"{SECRETS}/modelmesh-serving-auth"
TLS = f"{SECRETS}/mesh-tls"
EVENTS = f"/api/v1/namespaces/{NS}/events"
DEP = f"/apis/apps/v1/namespaces/{NS}/deployments/modelmesh-serving-py"
PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


def secret(name: str, **data: bytes | str) -> dict[str, Any]:
    raw = {k: v.encode() if isinstance(v, str) else v for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
            "data": {k: base64.b64encode(v).decode() for k, v in raw.items()}}


def events(kube: FakeKube, namespace: str = NS) -> list[dict[str, Any]]:
    prefix = f"/api/v1/namespaces/{namespace}/events/"
    return [o for p, o in kube.objects.items() if p.startswith(prefix)]


def mm_args(kube: FakeKube) -> list[str]:
    containers = kube.objects[DEP]["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "mm")["args"]


def make_sync(kube: FakeKube, config: ServingConfig) -> RuntimeSync:
    async def source() -> ServingConfig:
        return config

    return RuntimeSync(kube, source, lambda ns: {"py": RT}, wall_clock=lambda: 0.0,
                       secrets=NamespaceSecrets(kube, Warnings(kube), ttl_s=0))


# -- the auth Secret -------------------------------------------------------------------------------

async def test_the_auth_secret_is_made_before_the_deployment_and_never_overwritten() -> None:
    kube = FakeKube()
    sync = make_sync(kube, ServingConfig())
    sync.use(NS, "InferenceService/a", "py")
    await sync.sync_namespace(NS)
    assert kube.calls.index(("POST", SECRETS)) < kube.calls.index(("POST", "/apis/apps/v1/namespaces/ns/deployments"))
    made = secret_data(kube.objects[AUTH])
    assert set(made) == {"auth.yaml", "admin-token", "infer-token", "peer-token"}
    assert yaml.safe_load(made["auth.yaml"])["tokens"][0]["token"] == made["admin-token"].decode()
    assert kube.objects[AUTH]["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kserve-mesh-controller"
    assert "--auth-file" in mm_args(kube)
    digest = kube.objects[DEP]["spec"]["template"]["metadata"]["annotations"][PEER_TOKEN_ANNOTATION]
    assert made["peer-token"].strip().decode() not in json.dumps(kube.objects[DEP])
    # A user rotates the admin token: the controller leaves the Secret and the pods alone (they
    # re-read auth.yaml).
    edited = dict(made, **{"admin-token": b"rotated"})
    kube.objects[AUTH] = secret("modelmesh-serving-auth", **edited)
    calls = len(kube.calls)
    assert await sync.sync_namespace(NS) == []
    assert ("POST", SECRETS) not in kube.calls[calls:]
    assert secret_data(kube.objects[AUTH])["admin-token"] == b"rotated"
    # A new peer token (read by an instance only at start) rolls the pods.
    kube.objects[AUTH] = secret("modelmesh-serving-auth", **dict(edited, **{"peer-token": b"new-peer\n"}))
    assert [type(a).__name__ for a in await sync.sync_namespace(NS)] == ["Patch"]
    assert kube.objects[DEP]["spec"]["template"]["metadata"]["annotations"][PEER_TOKEN_ANNOTATION] != digest
    assert secret_data(kube.objects[AUTH])["peer-token"] == b"new-peer\n"
    assert events(kube) == []


async def test_no_secret_is_made_where_no_runtime_is_in_use() -> None:
    kube = FakeKube()
    sync = make_sync(kube, ServingConfig())
    sync.use(NS, "InferenceService/a", "no-such-runtime")
    assert await sync.sync_namespace(NS) == []
    assert AUTH not in kube.objects


async def test_an_auth_secret_that_cannot_be_made_blocks_the_pods_with_one_event() -> None:
    kube = FakeKube()
    real_create = kube.create

    async def create(path: str, body: Any) -> dict[str, Any]:
        if path == SECRETS:
            raise KubeApiError(403, "secrets is forbidden")
        return await real_create(path, body)

    kube.create = create  # type: ignore[method-assign]
    sync = make_sync(kube, ServingConfig())
    sync.use(NS, "InferenceService/a", "py")
    for _ in range(2):
        assert await sync.sync_namespace(NS) == []
    assert DEP not in kube.objects
    (event,) = events(kube)
    assert event["reason"] == "AuthSecretNotCreated" and "forbidden" in event["message"]
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Secret", "namespace": NS,
                                       "name": "modelmesh-serving-auth"}


async def test_a_broken_auth_secret_is_reported_not_replaced() -> None:
    kube = FakeKube()
    kube.objects[AUTH] = secret("modelmesh-serving-auth", **{"admin-token": "x"})
    sync = make_sync(kube, ServingConfig())
    sync.use(NS, "InferenceService/a", "py")
    assert await sync.sync_namespace(NS) == []
    assert DEP not in kube.objects and secret_data(kube.objects[AUTH]) == {"admin-token": b"x"}
    assert [e["reason"] for e in events(kube)] == ["AuthSecretInvalid"]


# -- TLS -------------------------------------------------------------------------------------------

async def test_a_missing_tls_secret_is_an_event_and_no_deployment_until_it_appears() -> None:
    kube = FakeKube()
    sync = make_sync(kube, ServingConfig(tls_secret_name="mesh-tls", tls_client_auth="require"))
    sync.use(NS, "InferenceService/a", "py")
    for _ in range(3):
        assert await sync.sync_namespace(NS) == []
    assert DEP not in kube.objects
    (event,) = events(kube)  # once, not once per pass
    assert (event["type"], event["reason"]) == ("Warning", "TLSSecretMissing")
    assert "mesh-tls" in event["message"] and event["involvedObject"]["name"] == "mesh-tls"
    # A Secret without the key: another reason, another Event.
    kube.objects[TLS] = secret("mesh-tls", **{"tls.crt": PEM})
    assert await sync.sync_namespace(NS) == []
    assert [e["reason"] for e in events(kube)] == ["TLSSecretMissing", "TLSSecretInvalid"]
    # Fixed: the Deployment appears with mutual TLS against the CA.
    kube.objects[TLS] = secret("mesh-tls", **{"tls.crt": PEM, "tls.key": KEY, "ca.crt": PEM})
    await sync.sync_namespace(NS)
    args = mm_args(kube)
    assert args[args.index("--tls-client-auth") + 1] == "require"
    assert args[args.index("--tls-ca") + 1] == "/etc/kserve-mesh/tls/ca.crt"
    assert len(events(kube)) == 2


async def test_a_tls_secret_the_controller_may_not_read_says_how_to_allow_it() -> None:
    kube = FakeKube()
    real_get = kube.get

    async def get(path: str) -> dict[str, Any] | None:
        if path == f"{SECRETS}/my-cert":
            raise KubeApiError(403, 'secrets "my-cert" is forbidden')
        return await real_get(path)

    kube.get = get  # type: ignore[method-assign]
    sync = make_sync(kube, ServingConfig(tls_secret_name="my-cert"))
    sync.use(NS, "InferenceService/a", "py")
    assert await sync.sync_namespace(NS) == []
    (event,) = events(kube)
    assert event["reason"] == "SecretForbidden" and "resourceNames" in event["message"]
    assert DEP not in kube.objects


# -- PVCs ------------------------------------------------------------------------------------------

STORAGE = f"{SECRETS}/storage-config"


def storage_config(**entries: dict[str, str] | str) -> dict[str, Any]:
    return secret("storage-config", **{k: v if isinstance(v, str) else json.dumps(v) for k, v in entries.items()})


def mounted_claims(kube: FakeKube) -> list[str]:
    volumes = kube.objects[DEP]["spec"]["template"]["spec"]["volumes"]
    return [v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v]


async def test_storage_config_claims_are_mounted_and_model_claims_only_with_allow_any_pvc() -> None:
    kube = FakeKube()
    kube.objects[STORAGE] = storage_config(models={"type": "pvc", "name": "models-pvc"},
                                           s3={"type": "s3", "bucket": "b"}, broken="{not json",
                                           odd={"type": "pvc", "name": "../etc"})
    sync = make_sync(kube, ServingConfig())
    sync.use(NS, "InferenceService/a", "py", "other-pvc")
    await sync.sync_namespace(NS)
    assert mounted_claims(kube) == ["models-pvc"]
    assert "--allow-any-pvc" not in mm_args(kube)
    reasons = sorted(e["reason"] for e in events(kube))
    assert reasons == ["PVCNotAllowed", "StorageConfigInvalid", "StorageConfigInvalid"]
    assert any("'broken' not used" in e["message"] for e in events(kube))
    assert any("'../etc' is not a PVC name" in e["message"] for e in events(kube))


async def test_allow_any_pvc_mounts_the_claims_models_name_that_exist() -> None:
    kube = FakeKube()
    kube.objects[f"/api/v1/namespaces/{NS}/persistentvolumeclaims/other-pvc"] = {"metadata": {"name": "other-pvc"}}
    sync = make_sync(kube, ServingConfig(allow_any_pvc=True))
    sync.use(NS, "InferenceService/a", "py", "other-pvc")
    sync.use(NS, "InferenceService/b", "py", "ghost-pvc")
    await sync.sync_namespace(NS)
    assert mounted_claims(kube) == ["other-pvc"]
    assert "--allow-any-pvc" in mm_args(kube)
    (event,) = events(kube)
    assert event["reason"] == "PVCNotFound" and event["involvedObject"]["kind"] == "PersistentVolumeClaim"
    # The claim appears: the Deployment gains it (a new pod template).
    kube.objects[f"/api/v1/namespaces/{NS}/persistentvolumeclaims/ghost-pvc"] = {"metadata": {"name": "ghost-pvc"}}
    await sync.sync_namespace(NS)
    assert mounted_claims(kube) == ["ghost-pvc", "other-pvc"]
    # A model that moves off its PVC takes the mount away.
    sync.use(NS, "InferenceService/b", "py", None)
    await sync.sync_namespace(NS)
    assert mounted_claims(kube) == ["other-pvc"]


# -- config warnings -------------------------------------------------------------------------------

async def test_config_keys_without_effect_are_warning_events_on_the_configmap_once() -> None:
    kube = FakeKube()
    path = "/api/v1/namespaces/sys/configmaps/model-serving-config"
    kube.objects[path] = {"metadata": {"uid": "cm-1"},
                          "data": {"config.yaml": "enableAccessLogging: true\nrestProxy: {enabled: false}"}}
    source = ConfigSource(kube, "sys", "model-serving-config", ttl_s=0)
    for _ in range(3):
        await source()
    posted = events(kube, "sys")
    assert sorted(e["reason"] for e in posted) == ["ConfigKeyHasNoEffect"] * 2
    assert {e["message"].split(":")[0] for e in posted} == {"enableAccessLogging", "restProxy.enabled"}
    assert all(e["involvedObject"] == {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "sys",
                                       "name": "model-serving-config", "uid": "cm-1"} for e in posted)
    assert all(e["type"] == "Warning" and e["source"]["component"] == "kserve-mesh-controller" for e in posted)
    # Fixed, then broken again: news again.
    kube.objects[path]["data"]["config.yaml"] = "restProxy: {enabled: false}"
    await source()
    kube.objects[path]["data"]["config.yaml"] = "enableAccessLogging: true\npodsPerRuntime: many"
    await source()
    reasons = [e["reason"] for e in events(kube, "sys")]
    assert reasons.count("ConfigKeyInvalid") == 1 and reasons.count("ConfigKeyHasNoEffect") == 3
    # Unknown keys are Events naming each one; config.yaml that is no mapping is one InvalidConfig.
    kube.objects[path]["data"]["config.yaml"] = "podsPerRutnime: 3\nheadlessService: false"
    assert (await source()).headless_service is False
    unknown = [e for e in events(kube, "sys") if e["reason"] == "ConfigKeyUnknown"]
    assert len(unknown) == 1 and unknown[0]["message"].startswith("podsPerRutnime: unknown key")
    kube.objects[path]["data"]["config.yaml"] = "[1, 2]"
    assert (await source()).headless_service is False
    assert [e["reason"] for e in events(kube, "sys")].count("InvalidConfig") == 1


# -- calling the mesh ------------------------------------------------------------------------------

async def test_credentials_come_from_the_auth_and_tls_secrets() -> None:
    kube = FakeKube()
    secrets = NamespaceSecrets(kube, Warnings(kube), ttl_s=0)
    config = ServingConfig(tls_secret_name="mesh-tls")
    assert await secrets.credentials(config, NS) == MeshCredentials()
    kube.objects[AUTH] = secret("modelmesh-serving-auth", **{"admin-token": "adm\n"})
    kube.objects[TLS] = secret("mesh-tls", **{"tls.crt": PEM, "tls.key": KEY})
    creds = await secrets.credentials(config, NS)
    assert creds == MeshCredentials("adm", MeshTls(PEM, "modelmesh-serving.ns", PEM, KEY))
    assert "adm" not in repr(creds)
    assert (await secrets.credentials(ServingConfig(), NS)).tls is None


class Recorder(pb_grpc.ModelMeshServicer):
    def __init__(self, refuse: bool = False) -> None:
        self.metadata: list[dict[str, str]] = []
        self.refuse = refuse

    async def getVModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> pb.VModelStatusInfo:
        self.metadata.append({k: v for k, v in context.invocation_metadata() or ()})
        if self.refuse:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")
        return pb.VModelStatusInfo(status=pb.VModelStatusInfo.DEFINED, activeModelId="m")


@pytest.fixture()
def ca() -> trustme.CA:
    return trustme.CA()


async def _server(recorder: Recorder, ca: trustme.CA | None = None) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    pb_grpc.add_ModelMeshServicer_to_server(recorder, server)
    if ca is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        cert = ca.issue_cert("modelmesh-serving.ns")
        creds = grpc.ssl_server_credentials([(cert.private_key_pem.bytes(), cert.cert_chain_pems[0].bytes())])
        port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    return server, port


@pytest.fixture()
async def servers() -> AsyncIterator[list[grpc.aio.Server]]:
    started: list[grpc.aio.Server] = []
    yield started
    for server in started:
        await server.stop(None)


async def test_grpc_mesh_presents_the_token_and_reports_refusal_as_unavailable(servers: list[Any]) -> None:
    ok, refusing = Recorder(), Recorder(refuse=True)
    for recorder in (ok, refusing):
        server, port = await _server(recorder)
        servers.append(server)
        mesh = GrpcMesh(f"127.0.0.1:{port}", deadline_s=5, credentials=MeshCredentials(token="s3cret"))
        try:
            if recorder is ok:
                assert (await mesh.vmodel_status("v")).active == "m"
            else:
                with pytest.raises(Unavailable, match="refused the controller's credentials") as info:
                    await mesh.vmodel_status("v")
                assert "s3cret" not in str(info.value)
        finally:
            await mesh.close()
        assert recorder.metadata[0]["authorization"] == "Bearer s3cret"


async def test_grpc_mesh_speaks_tls_to_the_name_in_the_certificate(servers: list[Any], ca: trustme.CA) -> None:
    recorder = Recorder()
    server, port = await _server(recorder, ca)
    servers.append(server)
    root = ca.cert_pem.bytes()
    # Dialled by address, checked against the Service name (as --tls-server-name does for peers).
    mesh = GrpcMesh(f"127.0.0.1:{port}", deadline_s=5,
                    credentials=MeshCredentials(tls=MeshTls(root, "modelmesh-serving.ns")))
    try:
        assert (await mesh.vmodel_status("v")).active == "m"
    finally:
        await mesh.close()
    wrong = GrpcMesh(f"127.0.0.1:{port}", deadline_s=5, credentials=MeshCredentials(tls=MeshTls(root, "other.ns")))
    try:
        with pytest.raises(Unavailable):
            await wrong.vmodel_status("v")
    finally:
        await wrong.close()
