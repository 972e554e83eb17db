"""ModelFetcher over real HTTP: a ThreadingHTTPServer serving a temporary directory."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from storage_servers import HttpFiles, free_port

from kserve_mesh.core.errors import StorageError, StorageNotFound, StorageUnreachable, UnsafeArchive
from kserve_mesh.storage import ModelFetcher, StorageConfig

pytestmark = pytest.mark.integration


def _fetcher(cache: Path, config: StorageConfig | None = None, **kw: object) -> ModelFetcher:
    return ModelFetcher(config or StorageConfig.empty(), cache, connect_timeout=1.0, read_timeout=5.0,
                        max_attempts=2, **kw)


def test_plain_file(http_files: HttpFiles, tmp_path: Path) -> None:
    (http_files.root / "model.onnx").write_bytes(b"onnx")
    f = _fetcher(tmp_path / "cache")
    got = f.fetch("m", f"{http_files.url}/model.onnx")
    assert got.read_bytes() == b"onnx" and got.name == "model.onnx"
    f.release("m")
    assert not got.exists()


def test_targz_and_zip_are_extracted(http_files: HttpFiles, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("model/model.joblib")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    (http_files.root / "sk.tgz").write_bytes(buf.getvalue())
    with zipfile.ZipFile(http_files.root / "m.zip", "w") as zf:
        zf.writestr("model.txt", b"lgb")
    f = _fetcher(tmp_path / "cache")
    assert (f.fetch("sk", f"{http_files.url}/sk.tgz") / "model" / "model.joblib").read_bytes() == b"abc"
    assert (f.fetch("lgb", f"{http_files.url}/m.zip") / "model.txt").read_bytes() == b"lgb"


def test_http_storage_entry_with_base_url(http_files: HttpFiles, tmp_path: Path) -> None:
    (http_files.root / "dir").mkdir()
    (http_files.root / "dir" / "model.bst").write_bytes(b"xgb")
    config = StorageConfig.from_mapping({"web": json.dumps({
        "type": "http", "url": http_files.url, "headers": {"Authorization": "Bearer t"}})})
    got = _fetcher(tmp_path / "cache", config).fetch("x", "/dir/model.bst", key='{"storage_key": "web"}')
    assert got.read_bytes() == b"xgb"


def test_404_is_not_found(http_files: HttpFiles, tmp_path: Path) -> None:
    with pytest.raises(StorageNotFound, match=r"/absent\.onnx not found \(HTTP 404\)"):
        _fetcher(tmp_path / "cache").fetch("m", f"{http_files.url}/absent.onnx?token=secret")
    assert list((tmp_path / "cache").iterdir()) == []


def test_query_token_is_not_shown(http_files: HttpFiles, tmp_path: Path) -> None:
    with pytest.raises(StorageNotFound) as info:
        _fetcher(tmp_path / "cache").fetch("m", f"{http_files.url}/absent.onnx?token=secret")
    assert "secret" not in str(info.value)


def test_size_limit(http_files: HttpFiles, tmp_path: Path) -> None:
    (http_files.root / "big.bin").write_bytes(b"0" * 5000)
    with pytest.raises(StorageError, match="5000 bytes, more than the limit 1000"):
        _fetcher(tmp_path / "cache", max_bytes=1000).fetch("m", f"{http_files.url}/big.bin")
    assert list((tmp_path / "cache").iterdir()) == []


def test_bomb_archive_over_http(http_files: HttpFiles, tmp_path: Path) -> None:
    with zipfile.ZipFile(http_files.root / "bomb.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros", b"\0" * 100_000)
    with pytest.raises(UnsafeArchive, match="declares 100000 bytes"):
        _fetcher(tmp_path / "cache", max_bytes=50_000).fetch("m", f"{http_files.url}/bomb.zip")
    assert list((tmp_path / "cache").iterdir()) == []


def test_closed_port_is_unreachable(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/model.onnx"
    with pytest.raises(StorageUnreachable, match="127.0.0.1.*unreachable"):
        _fetcher(tmp_path / "cache").fetch("m", url)
