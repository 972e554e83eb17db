"""What makes runtime pods safe to expose (kube/controller/deploy/security.py through
kube/controller/deploy/objects.py): the auth Secret and its mounts, TLS and mutual TLS from
tls.secretName, PVC mounts with and without allowAnyPVC, and container args that the real
``kserve-mesh instance`` command line accepts."""

from __future__ import annotations

import base64
import itertools
import os
from typing import Any

import kubernetes_validate
import pytest
import yaml
from test_controller_deploy import K8S_VERSION, containers, serving_runtime
from typer.testing import CliRunner

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.kube.controller.deploy.config import ServingConfig
from kserve_mesh.kube.controller.deploy.objects import runtime_deployment, service_urls
from kserve_mesh.kube.controller.deploy.security import (
    PodInputs,
    SecretProblem,
    TlsSecret,
    auth_secret_name,
    check_auth_secret,
    check_tls_secret,
    new_auth_secret,
    pvc_volume_name,
    secret_data,
    valid_claim,
)

PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tls_secret(**data: bytes) -> dict[str, Any]:
    return {"metadata": {"name": "mesh-tls"}, "data": {k.replace("_", "."): b64(v) for k, v in data.items()}}


def args_of(container: dict[str, Any]) -> dict[str, str | bool]:
    """``--flag value`` pairs (a flag followed by another flag is a switch: True)."""
    args = container["args"][1:]
    out: dict[str, str | bool] = {}
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            nxt = args[i + 1] if i + 1 < len(args) else "--"
            out[arg] = True if nxt.startswith("--") else nxt
    return out


def mounts_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container["volumeMounts"]}


def volumes_of(dep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}


# -- authentication --------------------------------------------------------------------------------

def test_the_auth_secret_holds_three_fresh_tokens_an_auth_file_and_the_peer_identity() -> None:
    counter = itertools.count()
    secret = new_auth_secret(ServingConfig(), "team-a", {"app": "x"}, token=lambda: f"tok-{next(counter)}")
    assert secret["metadata"]["name"] == "modelmesh-serving-auth" == auth_secret_name(ServingConfig())
    assert secret["metadata"]["namespace"] == "team-a" and secret["type"] == "Opaque"
    data = {k: v.decode() for k, v in secret_data(secret).items()}
    assert set(data) == {"auth.yaml", "admin-token", "infer-token", "peer-token"}
    assert (data["admin-token"], data["infer-token"], data["peer-token"].strip()) == ("tok-0", "tok-1", "tok-2")
    auth = yaml.safe_load(data["auth.yaml"])
    assert auth["tokens"] == [
        {"name": "admin", "role": "admin", "token": "tok-0"},
        {"name": "infer", "role": "infer", "token": "tok-1"},
        {"name": "mesh-peers", "role": "admin", "token": "tok-2"},
    ]
    assert auth["identities"] == [{"name": "mesh-peers", "role": "admin", "subject": "modelmesh-serving.team-a"}]
    check_auth_secret(secret, "modelmesh-serving-auth")
    # The real generator: 32 random bytes per token, different every time.
    a, b = (secret_data(new_auth_secret(ServingConfig(), "ns", {})) for _ in range(2))
    assert a["admin-token"] != b["admin-token"] and len(a["admin-token"]) >= 43
    assert len({a["admin-token"], a["infer-token"], a["peer-token"].strip()}) == 3


def test_an_auth_secret_without_what_the_pods_mount_is_a_problem() -> None:
    secret = new_auth_secret(ServingConfig(), "ns", {})
    del secret["data"]["peer-token"]
    with pytest.raises(SecretProblem, match="lacks peer-token") as info:
        check_auth_secret(secret, "modelmesh-serving-auth")
    assert info.value.reason == "AuthSecretInvalid"


def test_every_runtime_pod_authenticates_with_the_mounted_auth_files() -> None:
    dep = runtime_deployment(ServingConfig(), serving_runtime(), "models", 2)
    mm = containers(dep)["mm"]
    args = args_of(mm)
    assert args["--host"] == "0.0.0.0" and args["--auth"] == "on"
    assert args["--auth-file"] == "/etc/kserve-mesh/auth/auth.yaml"
    assert args["--peer-token-file"] == "/etc/kserve-mesh/auth/peer-token"
    assert mounts_of(mm)["/etc/kserve-mesh/auth"] == {"name": "mesh-auth", "mountPath": "/etc/kserve-mesh/auth",
                                                      "readOnly": True}
    # Only the files the instance reads are mounted (not the users' admin and infer tokens), and no
    # subPath: the kubelet then updates them when the Secret is edited.
    volume = volumes_of(dep)["mesh-auth"]["secret"]
    assert volume["secretName"] == "modelmesh-serving-auth"
    assert [i["key"] for i in volume["items"]] == ["auth.yaml", "peer-token"]
    assert not any("subPath" in m for c in containers(dep).values() for m in c["volumeMounts"])
    # The runtime containers get neither the tokens nor TLS.
    assert "/etc/kserve-mesh/auth" not in mounts_of(containers(dep)["runtime"])
    # No TLS: plain probes and URLs, no TLS flags.
    assert mm["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert not [a for a in args if a.startswith("--tls")]
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scheme"] == "http"


# -- TLS -------------------------------------------------------------------------------------------

def test_tls_secret_checks() -> None:
    assert check_tls_secret(tls_secret(tls_crt=PEM, tls_key=KEY), "mesh-tls") == TlsSecret("mesh-tls", False)
    assert check_tls_secret(tls_secret(tls_crt=PEM, tls_key=KEY, ca_crt=PEM), "mesh-tls").has_ca
    with pytest.raises(SecretProblem, match="does not exist") as missing:
        check_tls_secret(None, "mesh-tls")
    assert missing.value.reason == "TLSSecretMissing"
    with pytest.raises(SecretProblem, match="no PEM tls.key") as bad:
        check_tls_secret(tls_secret(tls_crt=PEM), "mesh-tls")
    assert bad.value.reason == "TLSSecretInvalid"
    with pytest.raises(SecretProblem, match="no PEM tls.crt"):
        check_tls_secret(tls_secret(tls_crt=b"not pem", tls_key=KEY), "mesh-tls")


def test_tls_mounts_the_secret_sets_the_flags_and_switches_probes_and_urls_to_https() -> None:
    config = ServingConfig(tls_secret_name="mesh-tls")
    dep = runtime_deployment(config, serving_runtime(), "models", 2, PodInputs(tls=TlsSecret("mesh-tls")))
    mm = containers(dep)["mm"]
    args = args_of(mm)
    assert args["--tls-cert"] == "/etc/kserve-mesh/tls/tls.crt"
    assert args["--tls-key"] == "/etc/kserve-mesh/tls/tls.key"
    # No ca.crt in the Secret: the certificate itself is what peers and clients are checked against.
    assert args["--tls-client-ca"] == args["--tls-ca"] == "/etc/kserve-mesh/tls/tls.crt"
    # Internal links use mutual TLS even when clients need no certificate: peers may present theirs.
    assert args["--tls-client-auth"] == "optional"
    assert args["--tls-server-name"] == "modelmesh-serving.models"
    assert "--tls-metrics" not in args
    assert mounts_of(mm)["/etc/kserve-mesh/tls"]["readOnly"] is True
    volume = volumes_of(dep)["mesh-tls"]["secret"]
    assert volume["secretName"] == "mesh-tls"
    assert [i["key"] for i in volume["items"]] == ["tls.crt", "tls.key"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert mm[probe]["httpGet"]["scheme"] == "HTTPS"
    # Service ports do not change; the REST URL in status does.
    assert service_urls(config, "models", "x") == {"grpcUrl": "grpc://modelmesh-serving.models:8033",
                                                  "restUrl": "https://modelmesh-serving.models:8008",
                                                  "url": "grpc://modelmesh-serving.models:8033"}
    assert {p["containerPort"] for p in mm["ports"]} == {8033, 8008, 2112}


def test_mutual_tls_uses_the_ca_requires_client_certificates_and_probes_from_inside() -> None:
    config = ServingConfig(tls_secret_name="mesh-tls", tls_client_auth="require", metrics_scheme="https")
    dep = runtime_deployment(config, serving_runtime(), "models", 2, PodInputs(tls=TlsSecret("mesh-tls", True)))
    mm = containers(dep)["mm"]
    args = args_of(mm)
    assert args["--tls-client-auth"] == "require"
    assert args["--tls-client-ca"] == args["--tls-ca"] == "/etc/kserve-mesh/tls/ca.crt"
    assert args["--tls-metrics"] is True
    assert [i["key"] for i in volumes_of(dep)["mesh-tls"]["secret"]["items"]] == ["tls.crt", "tls.key", "ca.crt"]
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scheme"] == "https"
    # The kubelet has no client certificate: the probe runs in the container with the mounted one.
    for probe, path in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")):
        command = mm[probe]["exec"]["command"]
        assert command[:2] == ["python", "-c"]
        assert f"https://127.0.0.1:8008{path}" in command[2] and "/etc/kserve-mesh/tls/tls.key" in command[2]
        compile(command[2], "probe", "exec")


# -- PVCs ------------------------------------------------------------------------------------------

def test_pvc_claims_are_mounted_read_only_in_every_container_at_pvc_mounts() -> None:
    rt = serving_runtime(builtInAdapter={"serverType": "mlserver", "runtimeManagementPort": 8001})
    dep = runtime_deployment(ServingConfig(), rt, "ns", 1, PodInputs(pvc_claims=("models-pvc", "shared.data")))
    volumes = volumes_of(dep)
    assert volumes["pvc-models-pvc"]["persistentVolumeClaim"] == {"claimName": "models-pvc", "readOnly": True}
    assert volumes[pvc_volume_name("shared.data")]["persistentVolumeClaim"]["claimName"] == "shared.data"
    for name, container in containers(dep).items():
        mounts = mounts_of(container)
        assert mounts["/pvc_mounts/models-pvc"] == {"name": "pvc-models-pvc", "mountPath": "/pvc_mounts/models-pvc",
                                                    "readOnly": True}, name
        assert mounts["/pvc_mounts/shared.data"]["readOnly"] is True, name
    # Without allowAnyPVC the instance reads only the claims the storage-config names.
    assert "--allow-any-pvc" not in args_of(containers(dep)["mm"])
    assert args_of(containers(dep)["mm"])["--pvc-mount-root"] == "/pvc_mounts"
    allow = runtime_deployment(ServingConfig(allow_any_pvc=True), rt, "ns", 1)
    assert args_of(containers(allow)["mm"])["--allow-any-pvc"] is True


def test_only_pvc_names_become_mount_paths() -> None:
    assert valid_claim("models-pvc") and valid_claim("a.b")
    for bad in ("..", "a/b", "../etc", "A", "", "-x", "x" * 254):
        assert not valid_claim(bad), bad
        with pytest.raises(InvalidArgument, match="not a PVC name"):
            runtime_deployment(ServingConfig(), serving_runtime(), "ns", 1, PodInputs(pvc_claims=(bad,)))
    assert len(pvc_volume_name("x" * 200)) <= 63


# -- the whole thing -------------------------------------------------------------------------------

INPUTS = [
    pytest.param(ServingConfig(), PodInputs(), id="plain"),
    pytest.param(ServingConfig(tls_secret_name="t", allow_any_pvc=True), PodInputs(TlsSecret("t"), ("pvc-a",)),
                 id="tls"),
    pytest.param(ServingConfig(tls_secret_name="t", tls_client_auth="require", metrics_scheme="https"),
                 PodInputs(TlsSecret("t", True), ("a", "b.c")), id="mtls"),
]


@pytest.mark.parametrize(("config", "inputs"), INPUTS)
def test_secured_deployments_validate_strictly(config: ServingConfig, inputs: PodInputs) -> None:
    dep = runtime_deployment(config, serving_runtime(), "models", 2, inputs)
    kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


@pytest.mark.parametrize(("config", "inputs"), INPUTS)
def test_the_real_instance_command_line_accepts_every_arg(config: ServingConfig, inputs: PodInputs,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The mesh container's args and env, parsed by ``kserve-mesh instance`` itself into
    ``MeshSettings``: a renamed or removed flag, or a combination the settings refuse, fails here."""
    from kserve_mesh import cli
    from kserve_mesh.cli import serving

    mm = containers(runtime_deployment(config, serving_runtime(), "models", 2, inputs))["mm"]
    assert mm["command"] == ["kserve-mesh"]
    for name in [n for n in os.environ if n.startswith("KSERVE_MESH_")]:
        monkeypatch.delenv(name)
    env = {e["name"]: e.get("value", "from-the-pod") for e in mm["env"]}
    seen: list[Any] = []
    monkeypatch.setattr(serving, "serve", lambda settings, *_: seen.append(settings))
    result = CliRunner().invoke(cli.app, mm["args"], env=env)
    assert result.exit_code == 0, result.output
    (settings,) = seen
    assert settings.host == "0.0.0.0" and settings.auth_enabled
    assert str(settings.auth_file) == "/etc/kserve-mesh/auth/auth.yaml"
    assert str(settings.peer_token_file) == "/etc/kserve-mesh/auth/peer-token"
    assert settings.runtime == "remote" and settings.runtime_address == "127.0.0.1:8085"
    assert settings.namespace == "models" and str(settings.cache_dir) == "/models"
    assert str(settings.pvc_mount_root) == "/pvc_mounts" and settings.allow_any_pvc == config.allow_any_pvc
    assert settings.tls_enabled == (inputs.tls is not None)
    if inputs.tls is not None:
        assert settings.tls_client_auth == ("require" if config.tls_client_auth == "require" else "optional")
        assert settings.tls_server_name == "modelmesh-serving.models"
        assert settings.tls_metrics == config.tls_metrics


def test_the_mounted_secrets_load_in_the_instances_own_auth_and_tls_code(tmp_path, monkeypatch) -> None:
    """What the pod would see: the generated auth Secret and a cert-manager-like TLS Secret, mounted
    where the args point, read by the instance's authenticator and TLS loader (with mutual TLS)."""
    import trustme

    from kserve_mesh import cli
    from kserve_mesh.api.auth import Authenticator, Role
    from kserve_mesh.cli import serving
    from kserve_mesh.kube.controller.deploy.security import AUTH_PATH, TLS_PATH
    from kserve_mesh.mesh.tls import TlsFiles, TlsMaterial

    config = ServingConfig(tls_secret_name="mesh-tls", tls_client_auth="require")
    auth = secret_data(new_auth_secret(config, "models", {}))
    ca = trustme.CA()
    cert = ca.issue_cert("modelmesh-serving.models")
    tls = {"tls.crt": cert.cert_chain_pems[0].bytes(), "tls.key": cert.private_key_pem.bytes(),
           "ca.crt": ca.cert_pem.bytes()}
    dep = runtime_deployment(config, serving_runtime(), "models", 1, PodInputs(TlsSecret("mesh-tls", True)))
    volumes = volumes_of(dep)
    for mount_path, volume, data in ((AUTH_PATH, "mesh-auth", auth), (TLS_PATH, "mesh-tls", tls)):
        folder = tmp_path / mount_path.strip("/")
        folder.mkdir(parents=True)
        for item in volumes[volume]["secret"]["items"]:  # exactly the files the kubelet would write
            (folder / item["path"]).write_bytes(data[item["key"]])
    mm = containers(dep)["mm"]
    args = [a.replace("/etc/kserve-mesh/", f"{tmp_path}/etc/kserve-mesh/") for a in mm["args"]]
    for name in [n for n in os.environ if n.startswith("KSERVE_MESH_")]:
        monkeypatch.delenv(name)
    seen: list[Any] = []
    monkeypatch.setattr(serving, "serve", lambda settings, *_: seen.append(settings))
    result = CliRunner().invoke(cli.app, args, env={e["name"]: e.get("value", "x") for e in mm["env"]})
    assert result.exit_code == 0, result.output
    (s,) = seen
    authenticator = Authenticator(s.auth_file)
    peer_token = s.peer_token_file.read_text().strip()
    assert authenticator.principal(f"Bearer {peer_token}").role is Role.ADMIN  # peers may forward
    assert authenticator.principal(f"Bearer {auth['admin-token'].decode()}").role is Role.ADMIN
    assert authenticator.principal(f"Bearer {auth['infer-token'].decode()}").role is Role.INFER
    assert authenticator.principal(None, ["modelmesh-serving.models"]).role is Role.ADMIN
    assert authenticator.principal("Bearer not-a-token-of-this-mesh") is None
    TlsMaterial(TlsFiles(s.tls_cert, s.tls_key, s.tls_client_ca, s.tls_client_auth, s.tls_ca, s.tls_server_name))
