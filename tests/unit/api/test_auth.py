"""The auth file, the role of every call, and the checks (api/auth.py), without a server."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from kserve_mesh.api.auth import (
    Authenticator,
    Credentials,
    Role,
    bearer,
    grpc_role,
    rest_role,
    tls_identities,
)
from kserve_mesh.core.errors import InvalidArgument, PermissionDenied, Unauthenticated

ADMIN = "admin-token-0123456789abcdef"
INFER = "infer-token-0123456789abcdef"
AUTH_YAML = f"""
tokens:
  - {{name: ops, role: admin, token: "{ADMIN}"}}
  - {{name: dash, role: infer, sha256: "{hashlib.sha256(INFER.encode()).hexdigest()}"}}
identities:
  - {{name: peers, role: admin, subject: "modelmesh-serving.ns"}}
  - {{name: alice, role: infer, subject: alice}}
"""


def auth(text: str = AUTH_YAML) -> Authenticator:
    return Authenticator(credentials=Credentials.parse(text))


def test_tokens_and_digests_and_identities_name_their_principal() -> None:
    a = auth()
    assert a.principal(f"Bearer {ADMIN}").name == "ops"
    assert a.principal(f"bearer {INFER}".encode()).role is Role.INFER  # scheme is case-insensitive; bytes too
    assert a.principal(None, ["other", "alice"]).name == "alice"
    assert a.principal(None, ["modelmesh-serving.ns"]).role is Role.ADMIN
    assert a.principal("Bearer not-a-known-token-at-all") is None
    # A wrong token is never rescued by a certificate the auth file knows.
    assert a.principal("Bearer not-a-known-token-at-all", ["alice"]) is None


def test_check_refuses_with_the_reason_and_never_the_token(caplog: pytest.LogCaptureFixture) -> None:
    a = auth()
    caplog.set_level(logging.WARNING)
    with pytest.raises(Unauthenticated, match="no credentials"):
        a.check(Role.INFER, None, (), "GET /mesh/v1/models", "127.0.0.1:1")
    a._refusals.every_s = 0  # every refusal logged, for this test
    secret = "Bearer wrong-token-that-must-not-be-logged"
    with pytest.raises(Unauthenticated, match="not known"):
        a.check(Role.INFER, secret, (), "GET /mesh/v1/models", "127.0.0.1:2")
    with pytest.raises(Unauthenticated, match="is not 'Bearer <token>'"):
        a.check(Role.INFER, "Basic dXNlcjpwYXNz", (), "GET /x", "127.0.0.1:3")
    with pytest.raises(PermissionDenied, match="needs role admin; 'dash' has role infer"):
        a.check(Role.ADMIN, f"Bearer {INFER}", (), "DELETE /mesh/v1/models/x", "127.0.0.1:4")
    assert a.check(Role.ADMIN, f"Bearer {ADMIN}", (), "DELETE /mesh/v1/models/x", "p").name == "ops"
    assert a.check(Role.INFER, None, ["alice"], "POST /v2/models/x/infer", "p").name == "alice"
    logged = caplog.text
    assert "refused" in logged and "127.0.0.1:2" in logged
    for leaked in ("wrong-token-that-must-not-be-logged", INFER, ADMIN, "dXNlcjpwYXNz"):
        assert leaked not in logged


def test_refusals_are_rate_limited_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    a = auth()
    caplog.set_level(logging.WARNING)
    for i in range(50):
        with pytest.raises(Unauthenticated):
            a.check(Role.INFER, None, (), "GET /x", f"10.0.0.1:{i}")
    assert sum("refused" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize(("text", "message"), [
    ("[1, 2]", "must be a mapping"),
    ("tokens: {a: b}", "'tokens' must be a list of mappings"),
    ("users: []", "unknown key"),
    ("tokens: [{role: admin}]", "exactly one of 'token' or 'sha256'"),
    ("tokens: [{role: admin, token: short}]", "at least 16 characters"),
    ("tokens: [{role: root, token: abcdefghijklmnopqrstuvwxyz}]", "'role' must be admin or infer"),
    ("tokens: [{role: admin, sha256: abc}]", "64 hex digits"),
    ("tokens: [{role: admin, token: abcdefghijklmnopqrstuvwxyz, extra: 1}]", "unknown key"),
    ("tokens: [{role: admin, token: abcdefghijklmnopqrstuvwxyz}, {role: infer, token: abcdefghijklmnopqrstuvwxyz}]",
     "listed twice"),
    ("identities: [{role: admin}]", "'subject'"),
    ("tokens: [\n  - {", "not valid YAML"),
])
def test_bad_auth_files_are_refused_with_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        Credentials.parse(text)


def test_an_auth_file_that_names_nobody_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "auth.yaml"
    path.write_text("tokens: []\n")
    with pytest.raises(InvalidArgument, match="lists no tokens and no identities"):
        Authenticator(path)
    with pytest.raises(InvalidArgument, match="cannot read the auth file"):
        Authenticator(tmp_path / "missing.yaml")


def test_the_auth_file_is_reread_when_it_changes_and_a_broken_one_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "auth.yaml"
    path.write_text(AUTH_YAML)
    a = Authenticator(path)
    assert not a.reload_if_changed()
    new = "new-admin-token-0123456789"
    path.write_text(f"tokens: [{{name: new, role: admin, token: {new}}}]\n")
    assert a.reload_if_changed()
    assert a.principal(f"Bearer {new}").name == "new"
    assert a.principal(f"Bearer {ADMIN}") is None  # the old token is gone
    path.write_text("tokens: [{role: nobody}]\n")  # broken: the previous file stays in force
    assert not a.reload_if_changed()
    assert a.principal(f"Bearer {new}").name == "new"


def test_roles_of_rest_routes() -> None:
    assert rest_role("GET", "/v2/health/ready") is None and rest_role("GET", "/v2/health/live") is None
    for method, path in [("GET", "/v2"), ("GET", "/v2/models/m"), ("POST", "/v2/models/m/infer"),
                         ("POST", "/v2/models/m/versions/1/infer"), ("POST", "/v2/repository/index"),
                         ("GET", "/mesh/v1/models"), ("GET", "/mesh/v1/status"), ("GET", "/openapi.json"),
                         ("GET", "/mesh/v1/inferenceservices")]:
        assert rest_role(method, path) is Role.INFER, (method, path)
    for method, path in [("PUT", "/mesh/v1/models/m"), ("DELETE", "/mesh/v1/models/m"),
                         ("POST", "/mesh/v1/models/m/ensure-loaded"), ("PUT", "/mesh/v1/vmodels/v"),
                         ("DELETE", "/mesh/v1/vmodels/v"), ("POST", "/v2/repository/models/m/load"),
                         ("POST", "/v2/repository/models/m/unload"), ("POST", "/mesh/v1/apply"),
                         ("DELETE", "/mesh/v1/inferenceservices/ns/n"), ("PATCH", "/anything"),
                         ("POST", "/mesh/v1/forward/infer")]:  # peers only
        assert rest_role(method, path) is Role.ADMIN, (method, path)


def test_roles_of_grpc_methods() -> None:
    v2 = "/inference.GRPCInferenceService/"
    assert grpc_role(v2 + "ServerLive") is None and grpc_role(v2 + "ServerReady") is None
    for name in ("ModelInfer", "ModelMetadata", "ModelReady", "ServerMetadata", "RepositoryIndex"):
        assert grpc_role(v2 + name) is Role.INFER
    for name in ("RepositoryModelLoad", "RepositoryModelUnload"):
        assert grpc_role(v2 + name) is Role.ADMIN
    assert grpc_role("/mmesh.ModelMesh/getModelStatus") is Role.INFER
    assert grpc_role("/mmesh.ModelMesh/getVModelStatus") is Role.INFER
    for name in ("registerModel", "unregisterModel", "ensureLoaded", "setVModel", "deleteVModel"):
        assert grpc_role("/mmesh.ModelMesh/" + name) is Role.ADMIN
    assert grpc_role("/some.Unknown/Method") is Role.ADMIN
    assert grpc_role("/grpc.health.v1.Health/Check") is None and grpc_role("/grpc.health.v1.Health/Watch") is None
    for version in ("v1alpha", "v1"):  # reflection shows service names and message shapes: readers only
        assert grpc_role(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo") is Role.INFER
    assert grpc_role("/grpc.reflection.v1.ServerReflection/Other") is Role.ADMIN


def test_bearer_and_certificate_names() -> None:
    assert bearer("Bearer abc") == "abc" and bearer(b"BEARER  abc ") == "abc"
    assert bearer("Basic abc") is None and bearer("Bearer ") is None and bearer(None) is None
    cert = {"subject": ((("organizationName", "x"),), (("commonName", "peer-a"),)),
            "subjectAltName": (("DNS", "peer-a.ns"), ("URI", "spiffe://mesh/peer-a"), ("IP Address", "10.0.0.1"))}
    assert tls_identities(cert) == ("peer-a", "peer-a.ns", "spiffe://mesh/peer-a", "10.0.0.1")
    assert tls_identities({}) == () and tls_identities(None) == ()
