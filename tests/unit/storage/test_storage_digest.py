"""sha256 pinning: model_digest of files and folders, the modelKey field, and fetches that refuse
files other than the pinned ones."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from kserve_mesh.core.errors import DigestMismatch, InvalidArgument, StorageError
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.storage import ModelFetcher, StorageConfig, StoragePolicy, model_check, model_digest, parse_model_key


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "models" / "m"
    (root / "sub").mkdir(parents=True)
    (root / "model.joblib").write_bytes(b"weights")
    (root / "sub" / "conf.json").write_bytes(b"{}")
    return root


def test_a_file_digest_is_the_sha256_of_its_bytes(folder: Path) -> None:
    assert model_digest(folder / "model.joblib") == _sha(b"weights")
    assert model_digest(str(folder / "model.joblib")) == _sha(b"weights")


def test_a_folder_digest_is_the_sha256_of_its_sorted_file_lines(folder: Path) -> None:
    lines = sorted([f"{_sha(b'weights')}  model.joblib\n", f"{_sha(b'{}')}  sub/conf.json\n"])
    assert model_digest(folder) == _sha("".join(lines).encode())
    (folder / "latest.joblib").symlink_to("model.joblib")  # a link to a file counts as that file
    lines = sorted([*lines, f"{_sha(b'weights')}  latest.joblib\n"])
    assert model_digest(folder) == _sha("".join(lines).encode())


def test_an_empty_folder_and_a_folder_link(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert model_digest(tmp_path / "empty") == _sha(b"")
    (folder / "elsewhere").symlink_to(folder / "sub")
    with pytest.raises(StorageError, match="'elsewhere' is a symbolic link to a folder"):
        model_digest(folder)


@pytest.mark.skipif(shutil.which("sha256sum") is None or shutil.which("find") is None, reason="coreutils")
def test_the_documented_shell_line_gives_the_same_folder_digest(folder: Path) -> None:
    line = ("find . \\( -type f -o -xtype f \\) -printf '%P\\0' | xargs -0 sha256sum | LC_ALL=C sort | sha256sum")
    out = subprocess.run(["sh", "-c", line], cwd=folder, capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.split()[0] == model_digest(folder)


def test_missing_path_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot compute the sha256"):
        model_digest(tmp_path / "absent")


def test_model_key_sha256_field() -> None:
    digest = _sha(b"x")
    assert parse_model_key(json.dumps({"sha256": digest.upper()})).sha256 == digest
    assert parse_model_key(json.dumps({"sha256": f"sha256:{digest}", "storage_key": "s"})).sha256 == digest
    assert parse_model_key('{"storage_key": "s"}').sha256 is None
    for bad in ("abc", digest + "0", "z" * 64, 12, "", ["x"]):
        with pytest.raises(InvalidArgument, match="'sha256' must be"):
            parse_model_key(json.dumps({"sha256": bad}))


def test_a_malformed_digest_is_refused_at_registration(folder: Path) -> None:
    check = model_check(None, StoragePolicy.of(models_dir=folder.parent))
    check(ModelInfo("sklearn", str(folder), json.dumps({"sha256": model_digest(folder)})))
    with pytest.raises(InvalidArgument, match="'sha256' must be 64 hex digits"):
        check(ModelInfo("sklearn", str(folder), '{"sha256": "1234"}'))


def _fetcher(tmp_path: Path) -> ModelFetcher:
    return ModelFetcher(StorageConfig.empty(), tmp_path / "cache", policy=StoragePolicy.of(models_dir=tmp_path / "models"))


def test_pinned_local_file_and_folder(folder: Path, tmp_path: Path) -> None:
    f = _fetcher(tmp_path)
    file_key = json.dumps({"sha256": _sha(b"weights")})
    assert f.fetch("a", str(folder / "model.joblib"), file_key).read_bytes() == b"weights"
    assert f.fetch("b", str(folder), json.dumps({"sha256": model_digest(folder)})) == folder
    (folder / "model.joblib").write_bytes(b"tampered")
    with pytest.raises(DigestMismatch) as info:
        f.fetch("a", str(folder / "model.joblib"), file_key)
    assert str(info.value) == (
        f"model files of '{folder / 'model.joblib'}' do not match the pinned sha256: expected {_sha(b'weights')}, "
        f"got {_sha(b'tampered')}; the files changed, or the pin is wrong")


def test_a_pinned_archive_is_checked_before_it_is_unpacked(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    archive = tmp_path / "models" / "m.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("model.string")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    f = _fetcher(tmp_path)
    pinned = json.dumps({"sha256": model_digest(archive)})
    assert (f.fetch("m", str(archive), pinned) / "model.string").read_bytes() == b"hi"
    with pytest.raises(DigestMismatch, match=f"expected {'0' * 64}, got {model_digest(archive)}"):
        f.fetch("m2", str(archive), json.dumps({"sha256": "0" * 64}))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f.cache_path("m").name]
