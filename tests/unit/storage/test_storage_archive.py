"""Safe extraction: malicious tar and zip archives are refused, naming the member; good ones work."""

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from kserve_mesh.core.errors import StorageError, UnsafeArchive
from kserve_mesh.storage import archive_kind, extract_archive
from kserve_mesh.storage.archive import archive_stem, check_member_name

LIMIT = 1 << 20


def _tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    data = data or {}
    with tarfile.open(path, "w:gz") as tf:
        for info in members:
            payload = data.get(info.name)
            if payload is not None:
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
            else:
                tf.addfile(info)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_kinds_and_stems() -> None:
    assert archive_kind("m.tar.gz") == archive_kind("m.TGZ") == archive_kind("m.tar") == "tar"
    assert archive_kind("m.zip") == "zip"
    assert archive_kind("model.joblib") is None
    assert archive_stem("model.tar.gz") == "model" and archive_stem(".zip") == "_model"


def test_good_tar_is_extracted(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "good.tar.gz",
                   [_file("model/model.joblib"), _file("model/conf.json"),
                    _link("model/latest", "model.joblib")],
                   {"model/model.joblib": b"weights", "model/conf.json": b"{}"})
    out = extract_archive(archive, tmp_path / "out", max_bytes=LIMIT)
    assert (out / "model" / "model.joblib").read_bytes() == b"weights"
    assert (out / "model" / "latest").read_bytes() == b"weights"


def test_good_zip_is_extracted(tmp_path: Path) -> None:
    archive = tmp_path / "good.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("m/model.onnx", b"onnx-bytes")
        zf.writestr("m/sub/", b"")
    out = extract_archive(archive, tmp_path / "out", max_bytes=LIMIT)
    assert (out / "m" / "model.onnx").read_bytes() == b"onnx-bytes"
    assert (out / "m" / "sub").is_dir()


@pytest.mark.parametrize(
    ("members", "data", "message"),
    [
        ([_file("../evil.txt")], {"../evil.txt": b"x"}, "'../evil.txt' escapes"),
        ([_file("a/../../evil.txt")], {"a/../../evil.txt": b"x"}, "'a/../../evil.txt' escapes"),
        ([_file("/etc/evil")], {"/etc/evil": b"x"}, "'/etc/evil' has an absolute path"),
        ([_link("out", "/etc/passwd")], None, "'out' is a symlink to an absolute path"),
        ([_link("out", "../../outside")], None, "'out' is a symlink pointing outside"),
        ([_link("hard", "/etc/passwd", tarfile.LNKTYPE)], None, "'hard' is a hard link"),
        ([_link("hard", "../outside", tarfile.LNKTYPE)], None, "'hard' is a hard link"),
    ],
)
def test_malicious_tar_is_refused(tmp_path: Path, members: list, data: dict | None, message: str) -> None:
    archive = _tar(tmp_path / "evil.tar.gz", members, data)
    with pytest.raises(UnsafeArchive, match=message):
        extract_archive(archive, tmp_path / "out", max_bytes=LIMIT)
    assert not (tmp_path / "evil.txt").exists()


def test_symlink_chain_through_extracted_link_is_refused(tmp_path: Path) -> None:
    # "d" -> "." looks harmless; then "d/e" -> ".." would resolve to the parent of the target.
    archive = _tar(tmp_path / "chain.tar.gz", [_link("d", "."), _link("d/e", "..")])
    with pytest.raises(UnsafeArchive, match="'d/e'"):
        extract_archive(archive, tmp_path / "out", max_bytes=LIMIT)


def test_write_through_a_symlink_is_refused_even_inside(tmp_path: Path) -> None:
    sub = tarfile.TarInfo("sub")
    sub.type = tarfile.DIRTYPE
    archive = _tar(tmp_path / "via.tar.gz", [sub, _link("lnk", "sub"), _file("lnk/x")], {"lnk/x": b"x"})
    with pytest.raises(UnsafeArchive, match="'lnk/x' goes through the symbolic link 'lnk'"):
        extract_archive(archive, tmp_path / "out", max_bytes=LIMIT)
    assert not (tmp_path / "out" / "sub" / "x").exists()


def test_device_file_is_refused(tmp_path: Path) -> None:
    dev = tarfile.TarInfo("dev/null")
    dev.type = tarfile.CHRTYPE
    archive = _tar(tmp_path / "dev.tar", [dev])
    with pytest.raises(UnsafeArchive, match="'dev/null' is a device or special file"):
        extract_archive(archive, tmp_path / "out", max_bytes=LIMIT)


def test_oversize_tar_is_refused(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "big.tar.gz", [_file("a"), _file("b")], {"a": b"0" * 600, "b": b"0" * 600})
    with pytest.raises(UnsafeArchive, match="more than 1000 bytes.*member 'b'"):
        extract_archive(archive, tmp_path / "out", max_bytes=1000)


def test_too_many_tar_members_are_refused(tmp_path: Path) -> None:
    names = [f"f{i}" for i in range(6)]
    archive = _tar(tmp_path / "many.tar.gz", [_file(n) for n in names], {n: b"x" for n in names})
    with pytest.raises(UnsafeArchive, match="more than 5 members.*'f5'"):
        extract_archive(archive, tmp_path / "out", max_bytes=LIMIT, max_members=5)


def test_zip_traversal_and_absolute_are_refused(tmp_path: Path) -> None:
    for name, message in [("../evil", "escapes"), ("/abs/evil", "absolute path"), ("C:/evil", "absolute")]:
        archive = tmp_path / "evil.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr(zipfile.ZipInfo(name), b"x")
        with pytest.raises(UnsafeArchive, match=message):
            extract_archive(archive, tmp_path / "out", max_bytes=LIMIT)


def test_zip_symlink_out_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("escape")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "../../etc")
    with pytest.raises(UnsafeArchive, match="'escape' is a symlink pointing outside"):
        extract_archive(archive, tmp_path / "out", max_bytes=LIMIT)


def test_zip_bomb_is_refused_by_declared_and_actual_size(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros", b"\0" * 200_000)
    assert archive.stat().st_size < 5_000
    with pytest.raises(UnsafeArchive, match="declares 200000 bytes"):
        extract_archive(archive, tmp_path / "out", max_bytes=100_000)
    # A lying header: patch the declared sizes down; the streamed byte count still stops it.
    raw = bytearray(archive.read_bytes())
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = raw.find(sig)
        raw[pos + offset:pos + offset + 4] = (10).to_bytes(4, "little")
    liar = tmp_path / "liar.zip"
    liar.write_bytes(bytes(raw))
    # zipfile stops at the declared size and then fails the CRC check: refused as corrupt.
    with pytest.raises(StorageError, match="corrupt or unreadable.*'zeros'"):
        extract_archive(liar, tmp_path / "out2", max_bytes=100_000)


def test_too_many_zip_members(tmp_path: Path) -> None:
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(4):
            zf.writestr(f"f{i}", b"x")
    with pytest.raises(UnsafeArchive, match="4 members, more than 3.*'f3'"):
        extract_archive(archive, tmp_path / "out", max_bytes=LIMIT, max_members=3)


def test_corrupt_archive_is_a_storage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"definitely not gzip")
    with pytest.raises(StorageError, match="corrupt or unreadable"):
        extract_archive(bad, tmp_path / "out", max_bytes=LIMIT)


def test_member_name_checks() -> None:
    assert str(check_member_name("./a//b/./c")) == "a/b/c"
    with pytest.raises(UnsafeArchive):
        check_member_name("a\\..\\..\\b")
