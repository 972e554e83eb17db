"""Every reproducer of issue 9 ("A mesh that is safe to expose", section "Why") against real
``kserve-mesh up`` processes on ephemeral loopback ports, asserting the refusal and that nothing was
read or written outside the cache and the allowed folders; then what an attacker who reaches the
ports tried on top of them: each bug that attack found has its reproducer here, fixed since.

Instances (module-scoped where tests can share them, each stopped by its handle):

- ``open_mesh``: loopback, no authentication (``kserve-mesh up`` as shipped), ``--models`` and one
  ``--allow-local-path`` folder, http models only from 127.0.0.1, a 1 MiB REST body limit, 1 s header
  and body timeouts, its own cache folder (``KSERVE_MESH_CACHE_DIR``), started in a working folder
  deep under the test's temp folder, with a marker in its environment (``/proc/self/environ``);
- ``secure_mesh``: TLS with optional client certificates and an auth file (admin and infer tokens);
- a ``--runtime process`` instance for the runtime-child reproducers (kill -9 and SIGSTOP);
- a ``--host 0.0.0.0`` / ``::`` start without an auth file, which must refuse to start.

What nothing may leak: the first line of /etc/passwd, and the environment marker; what nothing may
change: the --models folder, the allowed folder, a ``sentinel`` folder next to them and the folder
the test web server serves. Module run time: about 50 s on 2 cores.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from mesh_process import MeshProcess
from pki import ADMIN, INFER, Pki, make_pki
from slow_http import serve_dir

from kserve_mesh.protocol import v2
from kserve_mesh.protos import model_mesh_pb2 as mm

pytestmark = pytest.mark.integration

SECRET_ENV = "KSERVE_MESH_SECURITY_TEST_MARKER"
SECRET = "env-marker-3f9c1e7a-must-never-be-served"  # in the mesh's environment: /proc/self/environ
PASSWD = Path("/etc/passwd").read_text(errors="replace").splitlines()[0]  # e.g. root:x:0:0:root:/root:/bin/bash
LIMIT = 1 << 20  # --rest-max-body-bytes of the open mesh
GOOD = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}
CLIENT_TIMEOUT_S = 10.0  # no client call in this module may take longer: a hang fails the test


# -- files and folders ----------------------------------------------------------------------------

def _string_model(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.string").write_text(text)
    return folder


def _tar(path: Path, members: list[tuple[str, str, str]]) -> Path:
    """A tar(.gz) of (name, kind, link target or file text) members, kind dir | sym | file."""
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as tf:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, value
                tf.addfile(info)
            else:
                data = value.encode()
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def _issue_tar(path: Path) -> Path:
    """The archive of the issue: d/ (deep), e -> d/..., model.string -> e/../../../../etc/passwd
    (inside while e points deep), then e -> s1 again (s1 -> .), which tarfile lets replace e."""
    return _tar(path, [("d", "dir", ""), ("d/a", "dir", ""), ("d/a/b", "dir", ""), ("d/a/b/c", "dir", ""),
                       ("e", "sym", "d/a/b/c"), ("model.string", "sym", "e/../../../../etc/passwd"),
                       ("s1", "sym", "."), ("e", "sym", "s1")])


def _write_escape_tar(path: Path, sentinel: Path) -> Path:
    """Members that would write into ``sentinel`` (next to the allowed folders) if extraction let
    them: an absolute name, a ``..`` name, and a file written through a link to it."""
    up = "../" * 12 + str(sentinel).lstrip("/")
    return _tar(path, [("model.string", "file", "ok:"), (str(sentinel / "abs.txt"), "file", "pwned"),
                       (f"{up}/dotdot.txt", "file", "pwned"), ("out", "sym", str(sentinel)),
                       ("out/through-link.txt", "file", "pwned")])


def _symlink_zip(path: Path, target: str) -> Path:
    """A zip whose model.string is a symbolic link (Unix mode in external_attr) to ``target``."""
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("model.string")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
    return path


def _snapshot(*folders: Path) -> dict[str, str]:
    """Every entry under ``folders`` (links by target, files by digest): to show nothing changed."""
    out: dict[str, str] = {}
    for folder in folders:
        out[str(folder)] = "dir"
        for p in sorted(folder.rglob("*")):
            if p.is_symlink():
                out[str(p)] = "-> " + str(p.readlink())
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[str(p)] = "dir"
    return out


def _leaked(text: str) -> list[str]:
    """The secrets of this machine that ``text`` holds (it must hold none)."""
    return [s for s in (PASSWD, SECRET) if s in text]


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory, example_models: tuple[Path, dict[str, Any]]) -> Path:
    root = tmp_path_factory.mktemp("security")
    models, allowed, sentinel, www = root / "models", root / "allowed", root / "sentinel", root / "www"
    for folder in (allowed, sentinel, www, root / "cache", root / "work" / "a" / "b" / "c"):
        folder.mkdir(parents=True)
    shutil.copytree(example_models[0] / "sklearn-iris", models / "sklearn-iris")
    _string_model(models / "hello", "hello:")
    (models / "nest").mkdir()  # below the top level: the --models scan registers top-level entries only
    (models / "nest" / "etc-link").symlink_to("/etc")  # a symlinked folder leading out
    (sentinel / "keep.txt").write_text("sentinel: nothing may change here")
    _issue_tar(allowed / "exploit.tar.gz")
    _issue_tar(www / "exploit.tar.gz")
    _write_escape_tar(allowed / "escape.tar", sentinel)
    _write_escape_tar(www / "escape.tar", sentinel)
    _symlink_zip(allowed / "exploit.zip", "../../../../../../../../etc/passwd")
    with zipfile.ZipFile(allowed / "zipped.zip", "w") as zf:
        zf.writestr("model.string", "zipped:")
    _tar(allowed / "tarred.tar.gz", [("model.string", "file", "tarred:")])
    (www / "model.string").write_text("web:")
    proc_models = root / "proc-models"
    shutil.copytree(example_models[0] / "sklearn-iris", proc_models / "sklearn-iris")
    _string_model(proc_models / "string-1", "string-1:")
    for i in range(8):
        _string_model(root / "auth-models" / f"s-{i}", f"s-{i}:")
    return root


@pytest.fixture(scope="module")
def open_mesh(area: Path) -> Iterator[MeshProcess]:
    proc = MeshProcess.start(
        "--models", str(area / "models"), "--allow-local-path", str(area / "allowed"),
        "--http-allowed-host", "127.0.0.1",
        "--rest-max-body-bytes", str(LIMIT), "--http-header-timeout-s", "1", "--http-body-timeout-s", "1",
        env={SECRET_ENV: SECRET, "KSERVE_MESH_CACHE_DIR": str(area / "cache")}, cwd=area / "work" / "a" / "b" / "c")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def pki(area: Path) -> Pki:
    return make_pki(area / "pki")


@pytest.fixture(scope="module")
def secure_mesh(area: Path, pki: Pki) -> Iterator[MeshProcess]:
    proc = MeshProcess.start(
        "--models", str(area / "auth-models"), "--tls-cert", str(pki.cert), "--tls-key", str(pki.key),
        "--tls-client-ca", str(pki.ca_pem), "--tls-client-auth", "optional", "--auth-file", str(pki.auth),
        "--http-header-timeout-s", "1", "--http-body-timeout-s", "1", env={SECRET_ENV: SECRET})
    proc.context = pki.context()
    proc.headers = {"authorization": f"Bearer {ADMIN}"}
    try:
        yield proc
    finally:
        proc.stop()


# -- clients --------------------------------------------------------------------------------------

def _address(mesh: MeshProcess) -> tuple[str, int]:
    url = urllib.parse.urlsplit(mesh.rest)
    assert url.hostname is not None and url.port is not None
    return url.hostname, url.port


def _request(mesh: MeshProcess, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             timeout: float = CLIENT_TIMEOUT_S) -> tuple[int, str]:
    """One request on a fresh connection, with exactly ``headers`` (no token unless given)."""
    host, port = _address(mesh)
    conn: http.client.HTTPConnection
    if mesh.rest.startswith("https"):
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=mesh.context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    try:
        conn.request(method, path, data, {"content-type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {"raw": text}


def _raw_exchange(mesh: MeshProcess, data: bytes, timeout: float = CLIENT_TIMEOUT_S) -> bytes:
    """Send ``data`` on a fresh plain connection and read until the server closes it."""
    with socket.create_connection(_address(mesh), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def _status_of(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), _json(body.decode(errors="replace"))


def _channel(mesh: MeshProcess, pki: Pki | None = None) -> grpc.Channel:
    if pki is None:
        return grpc.insecure_channel(mesh.grpc)
    return grpc.secure_channel(mesh.grpc, grpc.ssl_channel_credentials(pki.ca_pem.read_bytes()))


def _grpc(mesh: MeshProcess, method: str, request: Any, metadata: tuple[tuple[str, Any], ...] = (),
          pki: Pki | None = None, response: Any = None) -> tuple[grpc.StatusCode, str]:
    """(code, details) of one unary call; ``request`` is a message or raw bytes."""
    serializer = None if isinstance(request, bytes) else type(request).SerializeToString
    with _channel(mesh, pki) as channel:
        call = channel.unary_unary(method, request_serializer=serializer,
                                   response_deserializer=None if response is None else response.FromString)
        try:
            call(request, timeout=CLIENT_TIMEOUT_S, metadata=metadata)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as err:
            return err.code(), err.details() or ""  # type: ignore[attr-defined]


def _register(mesh: MeshProcess, model_id: str, path: str, headers: dict[str, str] | None = None,
              **extra: Any) -> tuple[int, dict[str, Any]]:
    status, text = _request(mesh, "PUT", f"/mesh/v1/models/{urllib.parse.quote(model_id, safe='')}",
                            {"modelInfo": {"type": "string", "path": path}, **extra}, headers)
    assert not _leaked(text), text
    return status, _json(text)


def _infer_string(mesh: MeshProcess, model_id: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    status, text = _request(mesh, "POST", f"/v2/models/{urllib.parse.quote(model_id, safe='')}/infer",
                            {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
                            headers)
    return status, text


def _assert_not_served(mesh: MeshProcess, model_id: str) -> None:
    status, text = _infer_string(mesh, model_id)
    assert status >= 400 and not _leaked(text), text


def _registered(mesh: MeshProcess) -> list[str]:
    status, body = mesh.call("GET", "/mesh/v1/models")
    assert status == 200, body
    return [m["modelId"] for m in body["models"]]


def _infer_ok(mesh: MeshProcess) -> None:
    status, text = _request(mesh, "POST", "/v2/models/sklearn-iris/infer", {"inputs": [GOOD]})
    assert status == 200, text


def _wait_until(what: str, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


def _cache_holds_no_secret(area: Path) -> None:
    for p in (area / "cache").rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert not _leaked(p.read_bytes().decode(errors="replace")), p


# == 1. Reading any file the server can read =======================================================

LOCAL_PATHS = [
    ("etc-passwd", "/etc/passwd"),
    ("proc-environ", "/proc/self/environ"),
    ("relative-hostname", "../../../../etc/hostname"),  # the issue's, against the working folder
    ("relative-hostname-deep", "../" * 16 + "etc/hostname"),  # reaches / from any working folder
    ("file-localhost", "file://localhost/etc/passwd"),
    ("file-encoded-dotdot", "file://MODELS/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd"),
    ("file-host-dotdot", "file://%2e%2e/%2e%2e/etc/passwd"),
    ("symlinked-folder", "MODELS/nest/etc-link/passwd"),
    ("pvc-dotdot-claim", "pvc://../etc/passwd"),
    ("pvc-dotdot-path", "pvc://claim/../../../etc/passwd"),
]


@pytest.mark.parametrize(("model_id", "path"), LOCAL_PATHS, ids=[p[0] for p in LOCAL_PATHS])
def test_local_files_outside_the_allowed_folders_are_refused_at_registration(
        open_mesh: MeshProcess, area: Path, model_id: str, path: str) -> None:
    path = path.replace("MODELS", str(area / "models"))
    status, body = _register(open_mesh, model_id, path, loadNow=True, sync=True)
    assert status == 400 and body["type"] == "InvalidArgument", body
    assert "refused" in body["error"] or "invalid PVC claim name" in body["error"], body
    code, details = _grpc(open_mesh, "/mmesh.ModelMesh/registerModel", mm.RegisterModelRequest(
        modelId=model_id, modelInfo=mm.ModelInfo(type="string", path=path), loadNow=True, sync=True))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details == body["error"], details
    status, text = _request(open_mesh, "PUT", f"/mesh/v1/vmodels/v-{model_id}", {
        "targetModelId": model_id, "modelInfo": {"type": "string", "path": path}, "loadNow": True, "sync": True})
    assert status == 400 and _json(text)["error"] == body["error"], text
    _assert_not_served(open_mesh, model_id)
    assert model_id not in _registered(open_mesh)
    status, text = _request(open_mesh, "GET", "/mesh/v1/models")
    assert status == 200 and not _leaked(text)


# == 2. Archives: re-created links, escapes, local archives ========================================

def test_the_issue_archive_and_escaping_archives_never_serve_or_write_outside(
        open_mesh: MeshProcess, area: Path) -> None:
    watched = (area / "models", area / "allowed", area / "sentinel", area / "www")
    before = _snapshot(*watched)
    with serve_dir(area / "www") as base:
        cases = {
            "tar-http": f"{base}/exploit.tar.gz",
            "tar-local": str(area / "allowed" / "exploit.tar.gz"),
            "tar-file-uri": "file://" + str(area / "allowed" / "exploit.tar.gz"),
            "zip-link-local": str(area / "allowed" / "exploit.zip"),
            "escape-http": f"{base}/escape.tar",
            "escape-local": str(area / "allowed" / "escape.tar"),
        }
        for model_id, path in cases.items():
            status, body = _register(open_mesh, model_id, path, loadNow=True, sync=True)
            assert status == 200 and body["status"] == "LOADING_FAILED", (model_id, body)
            error = body["errors"][0]
            assert "archive member" in error and not _leaked(error), (model_id, error)
            _assert_not_served(open_mesh, model_id)
    assert "symlink pointing outside" in open_mesh.call("GET", "/mesh/v1/models/tar-http")[1]["errors"][0]
    assert _snapshot(*watched) == before  # nothing written next to an archive, nor into the sentinel
    assert sorted(p.name for p in (area / "sentinel").iterdir()) == ["keep.txt"]
    _cache_holds_no_secret(area)


def test_local_archives_are_unpacked_into_the_cache_not_served_as_raw_bytes(
        open_mesh: MeshProcess, area: Path) -> None:
    watched = (area / "models", area / "allowed", area / "sentinel")
    before = _snapshot(*watched)
    for model_id, path, text in (("zipped", str(area / "allowed" / "zipped.zip"), "zipped:x"),
                                 ("tarred", "file://" + str(area / "allowed" / "tarred.tar.gz"), "tarred:x")):
        status, body = _register(open_mesh, model_id, path, loadNow=True, sync=True)
        assert status == 200 and body["status"] == "LOADED", body
        status, answer = _infer_string(open_mesh, model_id)
        assert status == 200 and _json(answer)["outputs"][0]["data"] == [text], answer  # not PK../gzip bytes
    assert _snapshot(*watched) == before
    unpacked = [p for p in (area / "cache").rglob("model.string")]
    assert {p.read_text() for p in unpacked} >= {"zipped:", "tarred:"}, unpacked


# == 3. No TLS, no authentication ==================================================================

@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_non_loopback_address_without_an_auth_file_refuses_to_start(area: Path, host: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kserve_mesh.cli", "up", "--host", host, "--rest-port", "0", "--grpc-port", "0",
         "--metrics-port", "0", "--models", str(area / "auth-models")],
        capture_output=True, text=True, timeout=60, check=False)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "kserve-mesh ready" not in out and "Traceback" not in out, out
    assert "not a loopback address" in out and "--auth-file" in out and "auth=off" in out, out


# (first of the tests on secure_mesh: refusals are logged at most once per 10 s)
def test_a_refused_path_cannot_forge_log_lines(secure_mesh: MeshProcess) -> None:
    forged = "2031-01-01 00:00:00,000 WARNING kserve_mesh.api.auth: FORGED-LINE"
    path = "/mesh/v1/models/x%0A" + urllib.parse.quote(forged)
    deadline = time.monotonic() + 12  # refusals are logged at most once per 10 s
    while time.monotonic() < deadline:
        assert _request(secure_mesh, "GET", path)[0] == 401
        time.sleep(0.3)
        if "refused GET /mesh/v1/models/x" in secure_mesh.log():
            break
        time.sleep(0.7)
    assert not [line for line in secure_mesh.log().splitlines() if line.startswith(forged)]


def test_without_a_token_a_mass_unregister_removes_nothing(secure_mesh: MeshProcess, pki: Pki) -> None:
    ids = [f"s-{i}" for i in range(8)]
    assert sorted(_registered(secure_mesh)) == ids
    statuses = [_request(secure_mesh, "DELETE", f"/mesh/v1/models/{mid}")[0] for mid in ids * 6]
    assert set(statuses) == {401}, statuses
    for method in ("unregisterModel", "registerModel"):
        request = (mm.UnregisterModelRequest(modelId="s-0") if method == "unregisterModel" else
                   mm.RegisterModelRequest(modelId="x", modelInfo=mm.ModelInfo(type="string", path="s-0")))
        code, _ = _grpc(secure_mesh, f"/mmesh.ModelMesh/{method}", request, pki=pki)
        assert code == grpc.StatusCode.UNAUTHENTICATED, (method, code)
    # an infer token may read and infer, never unregister
    reader = {"authorization": f"Bearer {INFER}"}
    assert _infer_string(secure_mesh, "s-1", reader)[0] == 200
    for mid in ids:
        status, text = _request(secure_mesh, "DELETE", f"/mesh/v1/models/{mid}", headers=reader)
        assert status == 403 and "needs role admin" in text, text
    code, details = _grpc(secure_mesh, "/mmesh.ModelMesh/unregisterModel", mm.UnregisterModelRequest(modelId="s-0"),
                          metadata=(("authorization", f"Bearer {INFER}"),), pki=pki)
    assert code == grpc.StatusCode.PERMISSION_DENIED, details
    assert sorted(_registered(secure_mesh)) == ids


BYPASSES: list[tuple[str, dict[str, str]]] = [
    ("query-token", {"path": f"/mesh/v1/models/s-0?token={ADMIN}&access_token={ADMIN}"}),
    ("basic-auth", {"authorization": "Basic " + ("ops:" + ADMIN).encode().hex()}),
    ("empty-bearer", {"authorization": "Bearer "}),
    ("other-header", {"x-authorization": f"Bearer {ADMIN}"}),
    ("proxy-authorization", {"proxy-authorization": f"Bearer {ADMIN}"}),
    ("cookie", {"cookie": f"token={ADMIN}"}),
    ("forwarded-flag", {"mm-forwarded": "true", "mm-model-id": "s-0"}),
    ("token-with-suffix", {"authorization": f"Bearer {ADMIN}x"}),
    ("token-in-scheme", {"authorization": ADMIN}),
]


@pytest.mark.parametrize(("name", "headers"), BYPASSES, ids=[b[0] for b in BYPASSES])
def test_no_credential_variant_gets_past_authentication(secure_mesh: MeshProcess, name: str,
                                                        headers: dict[str, str]) -> None:
    headers = dict(headers)
    path = headers.pop("path", "/mesh/v1/models/s-0")
    status, text = _request(secure_mesh, "DELETE", path, headers=headers)
    assert status == 401 and _json(text)["type"] == "Unauthenticated", text
    assert "s-0" in _registered(secure_mesh)


def test_internal_and_documentation_routes_need_a_token(secure_mesh: MeshProcess, pki: Pki) -> None:
    for method, path in (("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/mesh/v1/status"),
                         ("GET", "/v2"), ("HEAD", "/mesh/v1/models"), ("OPTIONS", "/mesh/v1/models/s-0"),
                         ("POST", "/mesh/v1/forward/infer"), ("POST", "/v2/models/s-0/infer"),
                         ("POST", "/mesh/v1/apply"), ("GET", "/v2/health/live/../../../mesh/v1/models")):
        status, text = _request(secure_mesh, method, path, b"", {"mm-forwarded": "true", "mm-model-id": "s-0"})
        assert status == 401, (method, path, text)
    assert _request(secure_mesh, "GET", "/v2/health/ready")[0] == 200  # probes stay open
    # HTTP/1.0, and an unauthenticated request pipelined behind an authenticated one
    ctx = pki.context()
    with socket.create_connection(_address(secure_mesh), timeout=CLIENT_TIMEOUT_S) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(b"GET /mesh/v1/status HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + ADMIN.encode()
                     + b"\r\n\r\nDELETE /mesh/v1/models/s-0 HTTP/1.1\r\nHost: t\r\n\r\n"
                     + b"DELETE /mesh/v1/models/s-1 HTTP/1.0\r\n\r\n")
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    # The connection closes after the refusal: the third request is never read (nor served).
    assert re.findall(rb"HTTP/1.1 (\d+)", answer) == [b"200", b"401"], answer[:500]
    # gRPC metadata variants
    for metadata in ((("authorization-bin", f"Bearer {ADMIN}".encode()),), (("x-authorization", f"Bearer {ADMIN}"),),
                     (("mm-forwarded", "true"),), (("authorization", f"Basic {ADMIN}"),)):
        code, _ = _grpc(secure_mesh, "/mmesh.ModelMesh/unregisterModel", mm.UnregisterModelRequest(modelId="s-0"),
                        metadata=metadata, pki=pki)
        assert code == grpc.StatusCode.UNAUTHENTICATED, metadata
    assert {"s-0", "s-1"} <= set(_registered(secure_mesh))


def test_tls_ports_refuse_plain_text_and_old_protocols(secure_mesh: MeshProcess) -> None:
    raw = _raw_exchange(secure_mesh, b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
    assert b"live" not in raw  # no plain-text answer, in bounded time
    with grpc.insecure_channel(secure_mesh.grpc) as channel:
        live = channel.unary_unary(v2.method("ServerLive"), request_serializer=v2.ServerLiveRequest.SerializeToString)
        with pytest.raises(grpc.RpcError) as info:
            live(v2.ServerLiveRequest(), timeout=5)
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    try:
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        old.minimum_version, old.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot speak TLS 1.0/1.1")
    with socket.create_connection(_address(secure_mesh), timeout=5) as sock, pytest.raises((ssl.SSLError, OSError)):
        old.wrap_socket(sock).do_handshake()


# == 4. A runtime child that dies or stops =========================================================

def _string_request(model_id: str) -> v2.ModelInferRequest:
    req = v2.ModelInferRequest(model_name=model_id)
    req.inputs.add(name="input-0", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"hi")
    return req


def test_a_killed_or_stopped_runtime_child_drops_readiness_and_nothing_hangs(area: Path) -> None:
    mesh = MeshProcess.start("--models", str(area / "proc-models"), "--runtime", "process",
                             "--runtime-check-interval-s", "0.5", "--runtime-check-timeout-s", "1",
                             env={"KSERVE_MESH_RUNTIME_RESTART_BACKOFF_MAX_S": "1"})
    stopped: list[int] = []

    def pid() -> int:
        return int(mesh.call("GET", "/mesh/v1/status", timeout=CLIENT_TIMEOUT_S)[1]["runtimePid"])

    def ready() -> int:
        return mesh.call("GET", "/v2/health/ready", timeout=CLIENT_TIMEOUT_S)[0]

    def infer(model_id: str, timeout_ms: int) -> int:
        body = {"inputs": [GOOD]} if model_id == "sklearn-iris" else {
            "inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}
        return _request(mesh, "POST", f"/v2/models/{model_id}/infer", body, {"mm-timeout-ms": str(timeout_ms)})[0]

    try:
        assert infer("string-1", 5000) == 200
        old = pid()
        os.kill(old, signal.SIGKILL)
        _wait_until("readiness false after kill -9", lambda: ready() == 503, 10)
        _wait_until("a new child, ready", lambda: pid() not in (0, old) and ready() == 200)
        assert infer("string-1", 5000) == 200  # loaded again on demand
        assert "exited (killed by signal SIGKILL)" in mesh.log()

        child = pid()
        os.kill(child, signal.SIGSTOP)
        stopped.append(child)
        results: dict[str, Any] = {}

        def grpc_call() -> None:
            with _channel(mesh) as channel:
                call = channel.unary_unary(v2.method("ModelInfer"),
                                           request_serializer=v2.ModelInferRequest.SerializeToString)
                try:
                    call(_string_request("string-1"), timeout=1.5)
                    results["grpc"] = "OK"
                except grpc.RpcError as err:
                    results["grpc"] = err.code().name

        started = time.monotonic()
        threads = [threading.Thread(target=lambda: results.__setitem__("rest", infer("sklearn-iris", 1500))),
                   threading.Thread(target=grpc_call)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(CLIENT_TIMEOUT_S + 5)
        assert not any(t.is_alive() for t in threads), "a request hangs on a stopped runtime"
        assert time.monotonic() - started < CLIENT_TIMEOUT_S
        assert results["rest"] in (503, 504) and results["grpc"] in ("DEADLINE_EXCEEDED", "UNAVAILABLE"), results
        _wait_until("the stopped child replaced", lambda: pid() not in (0, child) and ready() == 200)
        assert infer("sklearn-iris", 5000) == 200 and infer("string-1", 5000) == 200
    finally:
        for p in stopped:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, sig)
        mesh.stop()


# == 5. REST bodies and slow clients ===============================================================

def test_a_body_over_the_limit_is_413_before_it_is_sent(open_mesh: MeshProcess) -> None:
    started = time.monotonic()
    raw = _raw_exchange(open_mesh, b"POST /v2/models/sklearn-iris/infer HTTP/1.1\r\nHost: t\r\n"
                                   b"Content-Type: application/json\r\nContent-Length: 200000000\r\n\r\n")
    status, body = _status_of(raw)  # answered although not one byte of the body was sent
    assert status == 413 and body["type"] == "PayloadTooLarge" and f"limit of {LIMIT} bytes" in body["error"]
    assert time.monotonic() - started < 5
    conn = http.client.HTTPConnection(*_address(open_mesh), timeout=CLIENT_TIMEOUT_S)
    try:  # chunked: counted as it arrives
        conn.request("POST", "/v2/models/sklearn-iris/infer", iter([b"y" * 65536] * 40),
                     {"Transfer-Encoding": "chunked"}, encode_chunked=True)
        response = conn.getresponse()
        assert response.status == 413, response.read()
    finally:
        conn.close()
    _infer_ok(open_mesh)


def test_a_body_shorter_than_its_content_length_is_answered_in_bounded_time(open_mesh: MeshProcess) -> None:
    started = time.monotonic()
    raw = _raw_exchange(open_mesh, b"POST /v2/models/sklearn-iris/infer HTTP/1.1\r\nHost: t\r\n"
                                   b"Content-Length: 100\r\n\r\n{\"inputs\"")
    status, body = _status_of(raw)
    assert status == 408 and body["type"] == "RequestTimeout", body
    assert time.monotonic() - started < 6  # 1 s configured (the issue: 40 s)


def test_slow_header_connections_are_closed_while_others_are_served(open_mesh: MeshProcess) -> None:
    socks = []
    try:
        for _ in range(200):
            sock = socket.create_connection(_address(open_mesh), timeout=CLIENT_TIMEOUT_S)
            sock.sendall(b"POST /v2/models/sklearn-iris/infer HTTP/1.1\r\nHost: t\r\n")  # never finished
            socks.append(sock)
        _infer_ok(open_mesh)
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        closed = 0
        for sock in socks:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                closed += sock.recv(1024) == b""
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
        assert closed == len(socks)
    finally:
        for sock in socks:
            sock.close()
    _infer_ok(open_mesh)


# == 6. Error mapping: user input is 400 / INVALID_ARGUMENT ========================================

REST_CASES = [
    ("nan-json", b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP64","data":[NaN,1,2,3]}]}', "JSON"),
    ("inf-json", b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP64","data":[1e999,1,2,3]}]}', "infinity"),
    ("zero-dim", {"inputs": [{**GOOD, "shape": [0, 4], "data": []}]}, "dimension of 0"),
    ("bool-for-fp64", {"inputs": [{**GOOD, "datatype": "BOOL", "data": [True, False, True, True]}]}, "BOOL"),
    ("fp16-for-fp64", {"inputs": [{**GOOD, "datatype": "FP16"}]}, "FP16"),
    ("name-zzz", {"inputs": [{**GOOD, "name": "zzz"}]}, "'zzz'"),
    ("dim-2**64", b'{"inputs":[{"name":"input-0","shape":[18446744073709551616,4],"datatype":"FP64","data":[1,2,3,4]}]}',
     "1.8446744073709552e+19"),
    ("dim-2**64-1", {"inputs": [{**GOOD, "shape": [2**64 - 1, 4]}]}, "out of range"),
]


def _binary_fp64(value: float) -> tuple[bytes, dict[str, str]]:
    import struct

    payload = struct.pack("<4d", value, 3.5, 1.4, 0.2)
    header = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                                     "parameters": {"binary_data_size": len(payload)}}]}).encode()
    return header + payload, {"Inference-Header-Content-Length": str(len(header))}


@pytest.mark.parametrize(("body", "fragment"), [c[1:] for c in REST_CASES], ids=[c[0] for c in REST_CASES])
def test_rest_user_errors_are_400(open_mesh: MeshProcess, body: Any, fragment: str) -> None:
    status, text = _request(open_mesh, "POST", "/v2/models/sklearn-iris/infer", body)
    answer = _json(text)
    assert status == 400 and answer["type"] == "InvalidArgument" and fragment in answer["error"], text


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_nan_and_inf_values_are_400_and_invalid_argument(open_mesh: MeshProcess, value: float) -> None:
    body, headers = _binary_fp64(value)
    status, text = _request(open_mesh, "POST", "/v2/models/sklearn-iris/infer", body, headers)
    assert status == 400 and "rejected the input" in text, text
    req = v2.ModelInferRequest(model_name="sklearn-iris")
    req.inputs.add(name="input-0", datatype="FP64", shape=[1, 4]).contents.fp64_contents.extend([value, 3.5, 1.4, 0.2])
    code, details = _grpc(open_mesh, v2.method("ModelInfer"), req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "rejected the input" in details, details


def _fp64_request(name: str = "input-0", datatype: str = "FP64", shape: tuple[int, ...] = (1, 4)) -> v2.ModelInferRequest:
    req = v2.ModelInferRequest(model_name="sklearn-iris")
    tensor = req.inputs.add(name=name, datatype=datatype, shape=list(shape))
    if datatype == "BOOL":
        tensor.contents.bool_contents.extend([True, False, True, True])
    elif datatype == "FP16":
        req.raw_input_contents.append(b"\x00\x3c" * 4)
    elif 0 not in shape:
        tensor.contents.fp64_contents.extend([1.0, 2.0, 3.0, 4.0])
    return req


GRPC_CASES = [
    ("undecodable", b"\xff\xff\xff\xff\x0f", "is not a valid"),
    ("zero-dim", _fp64_request(shape=(0, 4)), "dimension of 0"),
    ("bool-for-fp64", _fp64_request(datatype="BOOL"), "BOOL"),
    ("fp16-for-fp64", _fp64_request(datatype="FP16"), "FP16"),
    ("name-zzz", _fp64_request(name="zzz"), "'zzz'"),
    ("dim-2**62-squared", _fp64_request(shape=(2**62, 2**62)), "describes more than"),
]


@pytest.mark.parametrize(("request_", "fragment"), [c[1:] for c in GRPC_CASES], ids=[c[0] for c in GRPC_CASES])
def test_grpc_user_errors_are_invalid_argument(open_mesh: MeshProcess, request_: Any, fragment: str) -> None:
    code, details = _grpc(open_mesh, v2.method("ModelInfer"), request_)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fragment in details, (code, details)


def test_ids_over_256_bytes_or_with_control_characters_are_400(open_mesh: MeshProcess, area: Path) -> None:
    info = mm.ModelInfo(type="string", path=str(area / "models" / "hello"))
    for bad, fragment in (("m" * (1 << 20), "1048576 bytes"), ("a\x00b", "U+0000"), ("line\nbreak", "U+000A")):
        code, details = _grpc(open_mesh, "/mmesh.ModelMesh/registerModel", mm.RegisterModelRequest(modelId=bad, modelInfo=info))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and fragment in details and len(details) < 400, details
        code, details = _grpc(open_mesh, "/mmesh.ModelMesh/setVModel",
                              mm.SetVModelRequest(vModelId="v-ok", targetModelId=bad, modelInfo=info))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    for raw_id in ("m" * 4096, "a%00b", "line%0Abreak", "cr%0Dlf"):
        status, text = _request(open_mesh, "PUT", f"/mesh/v1/models/{raw_id}",
                                {"modelInfo": {"type": "string", "path": "hello"}})
        assert status == 400 and _json(text)["type"] == "InvalidArgument" and len(text) < 1000, text
    status, text = _request(open_mesh, "PUT", "/mesh/v1/vmodels/v-big", {"targetModelId": "t" * (512 << 10)})
    assert status == 400 and len(text) < 1000, text[:300]
    status, text = _request(open_mesh, "GET", "/mesh/v1/models")
    assert status == 200 and len(text) < 50_000 and all(len(m["modelId"]) <= 256 for m in _json(text)["models"])


# == 7. Bugs found attacking the above, fixed since (each test names how it was broken) ==========

CSRF_ISVC = """apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: csrf
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat: {name: string}
      storageUri: http://127.0.0.1:9/model.string
"""


def test_a_cross_origin_text_plain_apply_is_refused(open_mesh: MeshProcess) -> None:
    try:
        status, text = _request(open_mesh, "POST", "/mesh/v1/apply", CSRF_ISVC.encode(),
                                {"content-type": "text/plain", "origin": "https://attacker.example"})
        assert status in (400, 403, 415), text
        assert _request(open_mesh, "GET", "/mesh/v1/inferenceservices/default/csrf")[0] == 404
    finally:
        _request(open_mesh, "DELETE", "/mesh/v1/inferenceservices/default/csrf")


def test_a_foreign_host_header_is_refused_by_a_loopback_mesh(open_mesh: MeshProcess) -> None:
    try:
        status, text = _request(open_mesh, "PUT", "/mesh/v1/models/rebound",
                                {"modelInfo": {"type": "string", "path": "hello"}}, {"host": "attacker.example:8008"})
        assert status in (400, 403, 421), text
    finally:
        open_mesh.call("DELETE", "/mesh/v1/models/rebound")


def test_a_tensor_of_65_dimensions_is_a_user_error(open_mesh: MeshProcess) -> None:
    status, text = _request(open_mesh, "POST", "/v2/models/sklearn-iris/infer",
                            {"inputs": [{"name": "input-0", "shape": [1] * 65, "datatype": "FP64", "data": [1.0]}]})
    assert status == 400, text
    req = v2.ModelInferRequest(model_name="sklearn-iris")
    req.inputs.add(name="input-0", datatype="FP64", shape=[1] * 65).contents.fp64_contents.append(1.0)
    code, details = _grpc(open_mesh, v2.method("ModelInfer"), req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)


def test_errors_about_a_huge_shape_stay_small(open_mesh: MeshProcess) -> None:
    req = v2.ModelInferRequest(model_name="sklearn-iris")
    req.inputs.add(name="input-0", datatype="FP64", shape=[1] * 20_000)
    code, details = _grpc(open_mesh, v2.method("ModelInfer"), req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details[:200])
    status, text = _request(open_mesh, "POST", "/v2/models/sklearn-iris/infer",
                            {"inputs": [{"name": "input-0", "shape": [1] * 20_000, "datatype": "FP64", "data": []}]})
    assert status == 400 and len(text) < 4096, (status, len(text))


@pytest.mark.parametrize(("path", "content_type", "body"), [
    ("/v2/repository/index", "application/json", b"[" * 100_000 + b"]" * 100_000),
    ("/mesh/v1/apply", "application/json", b"[" * 100_000 + b"]" * 100_000),
    ("/mesh/v1/apply", "application/yaml", b"a: " + b"[" * 100_000 + b"]" * 100_000),
], ids=["repository-index", "apply-json", "apply-yaml"])
def test_deeply_nested_bodies_are_400(open_mesh: MeshProcess, path: str, content_type: str, body: bytes) -> None:
    status, text = _request(open_mesh, "POST", path, body, {"content-type": content_type})
    assert status == 400, text


def _alias_bomb(levels: int) -> bytes:
    anchors = ['x0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    anchors += [f"x{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return ("apiVersion: serving.kserve.io/v1alpha1\nkind: ServingRuntime\nmetadata:\n  name: laughs\n"
            "spec:\n  supportedModelFormats: [{name: laughs}]\n  containers:\n  - name: c\n"
            f"    env: {{ {', '.join(anchors)} }}\n").encode()


def test_yaml_aliases_cannot_expand_a_small_apply(open_mesh: MeshProcess) -> None:
    body = _alias_bomb(6)
    assert len(body) < 1024
    try:
        status, text = _request(open_mesh, "POST", "/mesh/v1/apply", body, {"content-type": "application/yaml"})
        if status == 200:
            status, text = _request(open_mesh, "GET", "/mesh/v1/servingruntimes/default/laughs")
            assert len(text) < (1 << 20), f"{len(body)} bytes applied, {len(text)} bytes stored"
        else:
            assert status == 400, text
    finally:
        _request(open_mesh, "DELETE", "/mesh/v1/servingruntimes/default/laughs")


def test_a_long_model_path_does_not_stall_the_instance(open_mesh: MeshProcess) -> None:
    path = "a/" * 150_000  # 300 KB, well within the 1 MiB limit of management bodies: ~8 s on 2 cores
    started = time.monotonic()
    status, _ = _request(open_mesh, "PUT", "/mesh/v1/models/long-path",
                            {"modelInfo": {"type": "string", "path": path}}, timeout=60)
    took = time.monotonic() - started
    open_mesh.call("DELETE", "/mesh/v1/models/long-path")
    assert took < 1.5, f"registration took {took:.1f} s (status {status})"


def test_model_info_fields_are_bounded(open_mesh: MeshProcess) -> None:
    try:
        code, _ = _grpc(open_mesh, "/mmesh.ModelMesh/registerModel", mm.RegisterModelRequest(
            modelId="huge-type", modelInfo=mm.ModelInfo(type="s" * (1 << 20), path="hello")))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, code
    finally:
        open_mesh.call("DELETE", "/mesh/v1/models/huge-type")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_unknown_grpc_methods_do_not_grow_memory(secure_mesh: MeshProcess, pki: Pki) -> None:
    def flood(tag: str, n: int) -> None:
        with _channel(secure_mesh, pki) as channel:
            pending = []
            for i in range(n):
                pending.append(channel.unary_unary(f"/inference.GRPCInferenceService/{tag}{i:06d}{'x' * 4000}")
                               .future(b"", timeout=CLIENT_TIMEOUT_S))
                if len(pending) == 200 or i == n - 1:
                    for f in pending:
                        with contextlib.suppress(grpc.RpcError):
                            f.result()
                    pending = []

    flood("warm", 1000)
    before = _rss_kib(secure_mesh.proc.pid)
    flood("grow", 8000)
    grown_mib = (_rss_kib(secure_mesh.proc.pid) - before) / 1024
    assert grown_mib < 10, f"RSS grew {grown_mib:.0f} MiB"


def test_an_unfinished_tls_handshake_is_closed_within_the_header_timeout(secure_mesh: MeshProcess) -> None:
    socks = []
    try:
        for _ in range(10):
            sock = socket.create_connection(_address(secure_mesh), timeout=5)
            sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
            socks.append(sock)
        deadline = time.monotonic() + 5  # header timeout 1 s
        closed = 0
        for sock in socks:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                closed += sock.recv(1024) == b""
            except (ConnectionResetError, ssl.SSLError):
                closed += 1
            except TimeoutError:
                pass
        assert closed == len(socks), f"{closed} of {len(socks)} closed within 5 s"
    finally:
        for sock in socks:
            sock.close()


def test_an_unauthenticated_dribbled_body_does_not_hold_the_connection(secure_mesh: MeshProcess, pki: Pki) -> None:
    raw = socket.create_connection(_address(secure_mesh), timeout=5)
    with pki.context().wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(b"POST /v2/models/s-0/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n")
        sock.settimeout(0.05)
        answer, closed = b"", False
        deadline = time.monotonic() + 6  # header and body timeouts 1 s, and up to 3 s of lingering
        while time.monotonic() < deadline and not closed:
            try:
                sock.sendall(b" ")  # a byte every 0.3 s: never a pause of 1 s
                chunk = sock.recv(65536)
                answer += chunk
                closed = chunk == b""
            except (TimeoutError, ssl.SSLWantReadError):
                pass
            except OSError:
                closed = True
            time.sleep(0.3)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:100]
    assert closed, "the connection is still open 6 s after the 401"


def test_a_runtime_on_a_non_loopback_address_without_credentials_refuses_to_start() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "kserve_mesh.cli", "runtime", "--host", "0.0.0.0", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    listening = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "runtime listening on" in line:
                listening.set()
        listening.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        listening.wait(30)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(1)
        assert proc.returncode not in (None, 0), "".join(lines)[-1000:]
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def test_the_infer_role_does_not_read_credentials_in_model_urls(secure_mesh: MeshProcess) -> None:
    url = "http://alice:S3cret-pw@127.0.0.1:9/model.string?X-Amz-Signature=0123abcd"
    try:
        status, text = _request(secure_mesh, "PUT", "/mesh/v1/models/with-creds",
                                {"modelInfo": {"type": "string", "path": url}}, {"authorization": f"Bearer {ADMIN}"})
        assert status == 200, text
        for path in ("/mesh/v1/models/with-creds", "/mesh/v1/models"):
            status, text = _request(secure_mesh, "GET", path, headers={"authorization": f"Bearer {INFER}"})
            assert status == 200 and "S3cret-pw" not in text and "0123abcd" not in text, text[:400]
    finally:
        secure_mesh.call("DELETE", "/mesh/v1/models/with-creds")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "kserve_mesh.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})


def _cli_bug(case: str, args: tuple[str, ...], bug: str) -> Any:
    """A CLI error path that once ended in a traceback (``bug`` says how); now it must not."""
    return pytest.param(args, id=case)


CLI_CASES = [
    _cli_bug("models-table-markup", ("models",), "a model error holding '[/]' (rich markup) crashes `kserve-mesh "
             "models` with a MarkupError traceback (cli.py models: add_row of server text, unescaped)"),
    _cli_bug("fail-markup", ("infer", "no-such[/]", "-d", "{}"), "any server message holding '[/]' crashes "
             "_fail with a MarkupError traceback (cli.py _fail: err_console.print of unescaped text)"),
    _cli_bug("infer-not-an-object", ("infer", "sklearn-iris", "-d", "[1, 2]"), "`infer -d '[1, 2]'` (or 'null') is "
             "a TypeError traceback (client/rest.py infer_json takes any JSON)"),
    _cli_bug("infer-missing-file", ("infer", "sklearn-iris", "-f", "/nonexistent/request.json"),
             "`infer -f MISSING` is a FileNotFoundError traceback (cli.py infer: file.read_text unguarded)"),
    _cli_bug("non-ascii-token", ("models", "--token", "tökén-0123456789abcdef"), "a non-ASCII --token is a "
             "UnicodeEncodeError traceback (client/rest.py MeshClient checks isprintable, not ASCII)"),
    _cli_bug("malformed-url", ("models", "--url", "http://[::1"), "a malformed --url is an httpx.InvalidURL "
             "traceback (client/rest.py MeshClient / _send catch httpx.HTTPError only)"),
]


@pytest.mark.parametrize("args", CLI_CASES)
def test_cli_errors_never_show_a_traceback(open_mesh: MeshProcess, area: Path, args: tuple[str, ...]) -> None:
    if args[0] == "models":
        # A registration names a path that exists (a missing one is refused at once), then it goes.
        model = area / "allowed" / "no[" / "]such"
        model.parent.mkdir(exist_ok=True)
        model.write_text("x")
        status, body = _register(open_mesh, "rich-markup", str(model))
        model.unlink()
        model.parent.rmdir()
        assert status == 200, body
        status, body = open_mesh.call("POST", "/mesh/v1/models/rich-markup/ensure-loaded", {"sync": True})
        assert "[/]" in body["errors"][0], body
    if "--url" not in args:
        args = (*args, "--url", open_mesh.rest)
    proc = _cli(*args)
    out, _ = proc.communicate(timeout=60)
    assert "Traceback" not in out, out[-1500:]


SDK_CASES = [
    _cli_bug("non-ascii-token", ("non-ascii-token",), "MeshClient(url, token='tökén...') raises UnicodeEncodeError "
             "on the first call, not a MeshClientError (client/rest.py)"),
    _cli_bug("malformed-url", ("malformed-url",), "MeshClient('http://[::1') raises httpx.InvalidURL, not a "
             "MeshClientError (client/rest.py)"),
    _cli_bug("infer-json-list", ("infer-json-list",), "MeshClient.infer_json(name, [1, 2]) raises TypeError, not "
             "InvalidInputError (client/rest.py infer_json)"),
]


@pytest.mark.parametrize("case", SDK_CASES)
def test_sdk_errors_are_mesh_client_errors(open_mesh: MeshProcess, case: tuple[str]) -> None:
    from kserve_mesh.client import MeshClient, MeshClientError

    with pytest.raises(MeshClientError):
        if case[0] == "non-ascii-token":
            with MeshClient(open_mesh.rest, token="tökén-0123456789abcdef") as client:
                client.models()
        elif case[0] == "malformed-url":
            with MeshClient("http://[::1") as client:
                client.models()
        else:
            with MeshClient(open_mesh.rest) as client:
                client.infer_json("sklearn-iris", [1, 2])  # type: ignore[arg-type]


# == 8. Nothing outside the cache, at the end of it all ============================================

def test_at_the_end_nothing_was_written_outside_the_cache(open_mesh: MeshProcess, area: Path) -> None:
    assert sorted(p.name for p in (area / "sentinel").iterdir()) == ["keep.txt"]
    assert (area / "sentinel" / "keep.txt").read_text() == "sentinel: nothing may change here"
    assert sorted(p.name for p in (area / "allowed").iterdir()) == [
        "escape.tar", "exploit.tar.gz", "exploit.zip", "tarred.tar.gz", "zipped.zip"]
    assert not any(p.name in ("abs.txt", "dotdot.txt", "through-link.txt") for p in area.rglob("*"))
    _cache_holds_no_secret(area)
    assert not _leaked(open_mesh.log().replace(SECRET_ENV, ""))
