"""Confined storage against real instances (issue 9, item 3): every reproducer of "anyone who
reaches the REST port can read any file the server can read" is refused at registration with 400
(REST), INVALID_ARGUMENT (gRPC) or an InferenceService error, and nothing is served; what gets past
registration (a link swapped afterwards, an exploit archive inside the models folder, a bad pin)
fails to load, in the instance's own process and in a runtime child, and nothing is read or written
outside the models folder and the cache."""

from __future__ import annotations

import hashlib
import json
import tarfile
import urllib.parse
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from mesh_process import MeshProcess
from slow_http import serve_dir

from kserve_mesh.protos import model_mesh_pb2 as pb
from kserve_mesh.protos import model_mesh_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

PASSWD = "root:x:0:0"  # what /etc/passwd starts with: must never come back


def _string_model(root: Path, name: str, text: str | None = None) -> Path:
    (root / name).mkdir(parents=True)
    (root / name / "model.string").write_text(text if text is not None else f"{name}:")
    return root / name


def _exploit_tar(path: Path) -> Path:
    """The issue's archive: d/, e -> d/a/b/c (deep), model.string -> e/../../../../etc/passwd
    (inside while e is deep), then e -> s1 again (s1 -> .), which tarfile would let replace e."""
    def add(tf: tarfile.TarFile, name: str, link: str = "", directory: bool = False) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE if directory else tarfile.SYMTYPE
        info.linkname = link
        tf.addfile(info)

    with tarfile.open(path, "w:gz") as tf:
        for d in ("d", "d/a", "d/a/b", "d/a/b/c"):
            add(tf, d, directory=True)
        add(tf, "e", "d/a/b/c")
        add(tf, "model.string", "e/../../../../etc/passwd")
        add(tf, "s1", ".")
        add(tf, "e", "s1")
    return path


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models/`` (the --models folder), ``outside/`` (a secret next to it), ``www/`` (served over HTTP)."""
    root = tmp_path_factory.mktemp("confinement")
    models = root / "models"
    _string_model(models, "hello")
    (models / "passwd").mkdir()  # registered at start (a folder inside), its model file leads outside
    (models / "passwd" / "model.string").symlink_to("/etc/passwd")
    (models / "nest").mkdir()  # one level down: registered by hand below
    (models / "nest" / "to-outside").symlink_to(root / "outside")
    (models / "top-link").symlink_to(root / "outside" / "secret")  # the --models scan skips it, with a warning
    _string_model(root / "outside", "secret", "top secret:")
    _exploit_tar(models / "exploit.tar.gz")
    with zipfile.ZipFile(models / "zipped.zip", "w") as zf:
        zf.writestr("model.string", "zipped:")
    (root / "outside" / "model.zip").write_bytes((models / "zipped.zip").read_bytes())
    (root / "www").mkdir()
    _exploit_tar(root / "www" / "exploit.tar.gz")
    return root


def _snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (links by target, files by digest): to show nothing changed."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "-> " + str(p.readlink())
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


@pytest.fixture(scope="module")
def confined(area: Path) -> Iterator[MeshProcess]:
    proc = MeshProcess.start("--models", str(area / "models"), "--http-allowed-host", "127.0.0.1")
    try:
        yield proc
    finally:
        proc.stop()


def _register(mesh: MeshProcess, model_id: str, path: str, key: str = "", **extra: Any) -> tuple[int, Any]:
    info = {"type": "string", "path": path, **({"key": key} if key else {})}
    return mesh.call("PUT", f"/mesh/v1/models/{urllib.parse.quote(model_id, safe='')}", {"modelInfo": info, **extra})


def _infer(mesh: MeshProcess, model_id: str) -> tuple[int, Any]:
    return mesh.call("POST", f"/v2/models/{model_id}/infer",
                     {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": ["x"]}]})


def _assert_not_served(mesh: MeshProcess, model_id: str) -> None:
    status, body = _infer(mesh, model_id)
    assert status >= 400 and PASSWD not in json.dumps(body) and "top secret" not in json.dumps(body), body


REFUSED = [
    ("etc-passwd", "/etc/passwd", "it is outside the allowed folders"),
    ("proc-environ", "/proc/self/environ", "it is outside the allowed folders"),
    ("relative-up", "../../../../etc/hostname", "it contains '..'"),
    ("file-uri", "file:///etc/passwd", "it is outside the allowed folders"),
    ("file-uri-up", "file://../../etc/passwd", "it contains '..'"),
    ("link-out", "passwd/model.string", "it leads outside the allowed folders through a symbolic link"),
    ("link-dir-out", "nest/to-outside/secret", "it leads outside the allowed folders through a symbolic link"),
    ("archive-outside", "OUTSIDE/model.zip", "it is outside the allowed folders"),
]


@pytest.mark.parametrize(("model_id", "path", "why"), REFUSED, ids=[r[0] for r in REFUSED])
def test_reproducers_are_refused_at_registration_and_nothing_is_served(
        confined: MeshProcess, area: Path, model_id: str, path: str, why: str) -> None:
    path = path.replace("OUTSIDE", str(area / "outside"))
    status, body = _register(confined, model_id, path, loadNow=True, sync=True)
    assert status == 400, body
    message = body["error"]
    assert f"'{path}' refused: {why}" in message, message
    assert str(area / "models") in message and "--allow-local-path" in message, message
    _assert_not_served(confined, model_id)
    models = [m["modelId"] for m in confined.call("GET", "/mesh/v1/models")[1]["models"]]
    assert model_id not in models


def test_a_folder_inside_whose_model_file_leads_outside_is_not_served(confined: MeshProcess) -> None:
    status, body = confined.call("GET", "/mesh/v1/models/passwd")  # registered from --models at start
    assert status == 200, body
    _assert_not_served(confined, "passwd")
    body = confined.wait_state("passwd", {"LOADING_FAILED"})
    assert "'model.string' in it is a symbolic link leading outside the allowed folders" in body["errors"][0], body


def test_the_models_folder_scan_skips_a_link_that_leads_out(confined: MeshProcess) -> None:
    status, _ = confined.call("GET", "/mesh/v1/models/top-link")
    assert status == 404  # not registered, and the mesh started all the same
    assert "skipping" in confined.log() and "top-link" in confined.log()
    _assert_not_served(confined, "top-link")


def test_registration_over_grpc_is_invalid_argument(confined: MeshProcess) -> None:
    with grpc.insecure_channel(confined.grpc) as channel:
        mm = pb_grpc.ModelMeshStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            mm.registerModel(pb.RegisterModelRequest(modelId="grpc-passwd", modelInfo=pb.ModelInfo(
                type="string", path="/etc/passwd"), loadNow=True, sync=True), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'/etc/passwd' refused" in info.value.details() and "--allow-local-path" in info.value.details()
    _assert_not_served(confined, "grpc-passwd")


def test_an_inference_service_outside_the_roots_is_refused(confined: MeshProcess) -> None:
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "leak", "annotations": {"serving.kserve.io/deploymentMode": "ModelMesh"}},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "string"}, "storageUri": "/etc/passwd"}}}}
    status, body = confined.call("POST", "/mesh/v1/apply", isvc)
    assert status == 400 and "'file:///etc/passwd' refused" in body["error"], body  # storageUri as file://
    assert "document 1" in body["error"]
    _assert_not_served(confined, "leak")
    assert confined.call("GET", "/mesh/v1/inferenceservices/default/leak")[0] == 404  # nothing was kept


def test_pvc_claims_not_in_the_storage_config_are_refused(confined: MeshProcess) -> None:
    status, body = _register(confined, "pvc-any", "pvc://someone-elses-claim/model")
    assert status == 400 and "PVC 'someone-elses-claim' refused" in body["error"] and "--allow-any-pvc" in body["error"]


def test_http_hosts_off_the_allow_list_are_refused(confined: MeshProcess) -> None:
    status, body = _register(confined, "web-off-list", "http://localhost:9/model.string")
    assert status == 400 and "host 'localhost' is not in the http allow-list (127.0.0.1)" in body["error"], body


def test_allowed_models_are_served_and_local_archives_are_unpacked_into_the_cache(
        confined: MeshProcess, area: Path) -> None:
    before = _snapshot(area / "models")
    assert _register(confined, "hello-ok", str(area / "models" / "hello"))[0] == 200
    status, body = _infer(confined, "hello-ok")
    assert status == 200 and body["outputs"][0]["data"] == ["hello:x"], body
    status, body = _register(confined, "zipped", "zipped.zip", loadNow=True, sync=True)
    assert status == 200 and body["status"] == "LOADED", body
    assert _infer(confined, "zipped")[1]["outputs"][0]["data"] == ["zipped:x"]
    assert _snapshot(area / "models") == before  # unpacked into the cache, never in place


def test_the_exploit_archive_never_serves_passwd(confined: MeshProcess, area: Path) -> None:
    before = _snapshot(area / "models")
    status, body = _register(confined, "exploit-local", str(area / "models" / "exploit.tar.gz"), loadNow=True, sync=True)
    assert status == 200 and body["status"] == "LOADING_FAILED", body
    assert "archive member 'model.string' is a symlink pointing outside" in body["errors"][0], body
    _assert_not_served(confined, "exploit-local")
    with serve_dir(area / "www") as base:
        status, body = _register(confined, "exploit-http", f"{base}/exploit.tar.gz", loadNow=True, sync=True)
    assert status == 200 and body["status"] == "LOADING_FAILED" and "symlink pointing outside" in body["errors"][0]
    _assert_not_served(confined, "exploit-http")
    assert _snapshot(area / "models") == before


def test_sha256_pins(confined: MeshProcess, area: Path) -> None:
    status, body = _register(confined, "pin-bad", "hello", json.dumps({"sha256": "not-a-digest"}))
    assert status == 400 and "'sha256' must be 64 hex digits" in body["error"], body
    file = area / "models" / "hello" / "model.string"
    good = hashlib.sha256(file.read_bytes()).hexdigest()
    status, body = _register(confined, "pin-ok", str(file), json.dumps({"sha256": good}), loadNow=True, sync=True)
    assert status == 200 and body["status"] == "LOADED", body
    wrong = "0" * 64
    status, body = _register(confined, "pin-wrong", str(file), json.dumps({"sha256": wrong}), loadNow=True, sync=True)
    assert status == 200 and body["status"] == "LOADING_FAILED", body
    assert f"expected {wrong}, got {good}" in body["errors"][0], body
    _assert_not_served(confined, "pin-wrong")


def test_a_runtime_child_gets_the_same_roots_and_checks_again_at_fetch(area: Path) -> None:
    """--runtime process: the child serves the models folder (its flags carry the roots) and refuses a
    link that was swapped to point outside after the model was registered."""
    swap = area / "models" / "swap"
    swap.mkdir()
    (swap / "model.string").symlink_to(area / "models" / "hello" / "model.string")
    proc = MeshProcess.start("--models", str(area / "models"), "--runtime", "process")
    try:
        status, body = _infer(proc, "hello")  # registered from --models at start, loaded by the child
        assert status == 200 and body["outputs"][0]["data"] == ["hello:x"], body
        assert _register(proc, "swapped", str(swap))[0] == 200  # inside when registered
        (swap / "model.string").unlink()
        (swap / "model.string").symlink_to(area / "outside" / "secret" / "model.string")
        proc.call("POST", "/mesh/v1/models/swapped/ensure-loaded", {"sync": True})
        status, body = proc.call("GET", "/mesh/v1/models/swapped")
        assert body["status"] == "LOADING_FAILED", body
        assert "symbolic link leading outside" in body["errors"][0], body
        _assert_not_served(proc, "swapped")
        status, body = _register(proc, "child-passwd", "/etc/passwd")
        assert status == 400 and "refused" in body["error"], body
    finally:
        proc.stop()
