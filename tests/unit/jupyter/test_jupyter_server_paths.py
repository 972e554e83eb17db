"""The server extension's pure parts: what "Deploy to mesh" may name (paths confined to Jupyter's
root dir), the type and id a model file gets, the HTTP status each client error becomes, and where
the mesh's address and credentials come from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kserve_mesh.client import (
    AuthenticationError,
    InvalidInputError,
    LoadFailedError,
    LoadTimeoutError,
    MeshUnavailableError,
    ModelNotFoundError,
    ServerError,
)
from kserve_mesh.jupyter_ext.server.config import MeshConfig
from kserve_mesh.jupyter_ext.server.handlers import _status_for, _without_userinfo
from kserve_mesh.jupyter_ext.server.paths import (
    PathRefused,
    is_storage_uri,
    model_id_of,
    model_type_of,
    resolve_in_root,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "models").mkdir(parents=True)
    (root / "models" / "iris.joblib").write_bytes(b"x")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "m.joblib").write_bytes(b"x")
    (tmp_path / "outside.joblib").write_bytes(b"x")
    (root / "escape.joblib").symlink_to(tmp_path / "outside.joblib")
    return root


def test_relative_and_absolute_paths_inside_the_root_resolve(root: Path) -> None:
    assert resolve_in_root(root, "models/iris.joblib") == (root / "models" / "iris.joblib").resolve()
    assert resolve_in_root(root, str(root / "models" / "iris.joblib")) == (root / "models/iris.joblib").resolve()
    assert resolve_in_root(root, "models") == (root / "models").resolve()


@pytest.mark.parametrize("path", ["../outside.joblib", "models/../../outside.joblib", "models/..",
                                  "..\\outside.joblib"])
def test_dot_dot_is_refused_with_400(root: Path, path: str) -> None:
    with pytest.raises(PathRefused) as err:
        resolve_in_root(root, path)
    assert err.value.status == 400 and "'..'" in err.value.message


def test_paths_outside_the_root_are_refused_with_403(root: Path, tmp_path: Path) -> None:
    for path in (str(tmp_path / "outside.joblib"), "/etc/passwd", "escape.joblib"):
        with pytest.raises(PathRefused) as err:
            resolve_in_root(root, path)
        assert err.value.status == 403, path
        assert "outside Jupyter's root dir" in err.value.message


def test_hidden_missing_and_empty_paths(root: Path) -> None:
    with pytest.raises(PathRefused) as err:
        resolve_in_root(root, ".hidden/m.joblib")
    assert err.value.status == 403 and "hidden" in err.value.message
    assert resolve_in_root(root, ".hidden/m.joblib", allow_hidden=True).name == "m.joblib"
    with pytest.raises(PathRefused) as err:
        resolve_in_root(root, "models/nope.joblib")
    assert err.value.status == 404 and "does not exist" in err.value.message
    for path in ("", "  ", "a\x00b"):
        with pytest.raises(PathRefused) as err:
            resolve_in_root(root, path)
        assert err.value.status == 400


def test_model_type_and_id_from_the_file(tmp_path: Path) -> None:
    cases = {"a.joblib": "sklearn", "b.PKL": "sklearn", "c.json": "xgboost", "d.ubj": "xgboost",
             "e.txt": "lightgbm", "f.onnx": "onnx", "g.string": "string", "h.csv": ""}
    for name, kind in cases.items():
        (tmp_path / name).write_bytes(b"x")
        assert model_type_of(tmp_path / name) == kind, name
    folder = tmp_path / "folder-model"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"x")
    assert model_type_of(folder) == "onnx"
    assert model_id_of(folder) == "folder-model"
    (tmp_path / "my model (v2).joblib").write_bytes(b"x")
    assert model_id_of(tmp_path / "my model (v2).joblib") == "my-model-v2"


def test_storage_uris_pass_through_and_local_paths_do_not() -> None:
    for uri in ("s3://bucket/m", "https://host/m.onnx", "pvc://claim/m", "gs://b/m"):
        assert is_storage_uri(uri), uri
    for path in ("models/m.joblib", "/abs/m.joblib", "file:///abs/m.joblib", "FILE://x", "a/b://c"):
        assert not is_storage_uri(path), path


def test_client_errors_map_to_http_statuses() -> None:
    assert _status_for(InvalidInputError("bad", 400)) == 400
    assert _status_for(InvalidInputError("bad input on this side")) == 400
    assert _status_for(ModelNotFoundError("nope", 404)) == 404
    assert _status_for(ServerError("boom", 500)) == 500
    assert _status_for(MeshUnavailableError("cannot reach the mesh")) == 502
    assert _status_for(AuthenticationError("who are you", 401)) == 502  # the proxy's credentials, not the user's
    assert _status_for(LoadFailedError("failed to load")) == 422
    assert _status_for(LoadTimeoutError("not loaded after 1 s")) == 504


def test_config_comes_from_jupyter_config_else_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from traitlets.config import Config

    monkeypatch.setenv("KSERVE_MESH_URL", "http://mesh.example:9000")
    monkeypatch.setenv("KSERVE_MESH_TOKEN", "env-token")
    for name in ("KSERVE_MESH_CA_CERT", "KSERVE_MESH_CLIENT_CERT", "KSERVE_MESH_CLIENT_KEY"):
        monkeypatch.delenv(name, raising=False)
    cfg = MeshConfig()
    try:
        assert cfg.url == "http://mesh.example:9000"
        client = cfg.client()
        assert client.url == "http://mesh.example:9000"
        assert client._http.headers["authorization"] == "Bearer env-token"
        assert cfg.client() is client  # one shared client
    finally:
        cfg.close()
    c = Config()
    c.KServeMesh.url = "mesh.local:8008"
    c.KServeMesh.token = "config-token"
    cfg = MeshConfig(config=c)
    try:
        client = cfg.client()
        assert client.url == "http://mesh.local:8008"
        assert client._http.headers["authorization"] == "Bearer config-token"
    finally:
        cfg.close()


def test_bad_settings_are_a_clear_gateway_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from traitlets.config import Config

    c = Config()
    c.KServeMesh.url = "http://127.0.0.1:1"
    c.KServeMesh.ca_cert = os.devnull
    with pytest.raises(MeshUnavailableError) as err:
        MeshConfig(config=c).client()
    assert "c.KServeMesh" in err.value.message and "https://" in err.value.message


def test_the_sidebar_never_sees_credentials_in_the_mesh_url() -> None:
    assert _without_userinfo("https://user:secret@mesh.example:8008/base") == "https://mesh.example:8008/base"
    assert _without_userinfo("http://127.0.0.1:8008") == "http://127.0.0.1:8008"
