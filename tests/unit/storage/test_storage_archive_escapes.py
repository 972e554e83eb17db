"""No sequence of archive members escapes the target: the re-created-link exploit of issue 9 and
its variants (hard links, link chains, zip links, absolute names, writes through links, special
files) are refused, and nothing outside the target is written or pointed at."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

from kserve_mesh.core.errors import StorageError, UnsafeArchive
from kserve_mesh.storage import extract_archive

LIMIT = 1 << 20


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _tar(path: Path, *members: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(path, "w") as tf:
        for m in members:
            if isinstance(m, tuple):
                tf.addfile(m[0], io.BytesIO(m[1]))
            else:
                tf.addfile(m)
    return path


def _zip(path: Path, *members: tuple[str, bytes, int]) -> Path:
    """(name, data, unix mode) members; a mode with S_IFLNK makes a symlink whose target is data."""
    with zipfile.ZipFile(path, "w") as zf, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Duplicate name", UserWarning)  # duplicates are the point
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


@pytest.fixture
def area(tmp_path: Path) -> Path:
    """tmp_path holds 'secret' and 'model.string' beside the target 'out': what an escape would reach."""
    (tmp_path / "secret").write_text("top secret")
    (tmp_path / "model.string").write_text("outside model")
    return tmp_path


def _assert_nothing_escaped(area: Path) -> None:
    """Nothing outside 'out' changed, and nothing under 'out' leads outside it."""
    assert sorted(p.name for p in area.iterdir() if p.name not in ("out",) and p.suffix not in (".tar", ".zip")) == [
        "model.string", "secret"]
    assert (area / "secret").read_text() == "top secret"
    out = area / "out"
    root = os.path.realpath(out)
    for folder, dirs, files in os.walk(out):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                real = os.path.realpath(path)
                assert real == root or real.startswith(root + os.sep), f"{path} -> {real}"


def _refused(archive: Path, area: Path, message: str) -> None:
    shutil.rmtree(area / "out", ignore_errors=True)  # each archive into a fresh, empty target
    with pytest.raises(UnsafeArchive, match=message):
        extract_archive(archive, area / "out", max_bytes=LIMIT)
    _assert_nothing_escaped(area)


def test_the_issue_exploit_recreated_link_is_refused(area: Path) -> None:
    # d/ (dir), e -> d/a/b/c (deep), model.string -> e/../../../../etc/passwd (inside while e is
    # deep), then e -> s1 again: tarfile would replace e, and model.string would read /etc/passwd.
    archive = _tar(area / "exploit.tar", _dir("d"), _dir("d/a"), _dir("d/a/b"), _dir("d/a/b/c"),
                   _link("e", "d/a/b/c"), _link("model.string", "e/../../../../etc/passwd"),
                   _link("s1", "."), _link("e", "s1"))
    _refused(archive, area, "'model.string' is a symlink pointing outside|'e' re-creates")


def test_recreating_a_link_is_refused_even_when_each_target_is_inside(area: Path) -> None:
    archive = _tar(area / "recreate.tar", _dir("d"), _dir("d/a"), _link("e", "d/a"), _link("m", "e/x"),
                   _link("e", "."))
    _refused(archive, area, "'e' re-creates an existing path as a symbolic link")


@pytest.mark.parametrize("second", ["file", "dir"])
def test_replacing_a_link_with_a_file_or_dir_is_refused(area: Path, second: str) -> None:
    again = _file("m", b"data") if second == "file" else _dir("m")
    archive = _tar(area / "replace.tar", _dir("d"), _link("m", "d"), again)
    _refused(archive, area, "'m' (would overwrite|re-creates) the symbolic link")


def test_link_over_an_existing_file_or_dir_is_refused(area: Path) -> None:
    _refused(_tar(area / "over-file.tar", _file("m"), _link("m", ".")), area, "'m' re-creates an existing path")
    _refused(_tar(area / "over-dir.tar", _dir("m"), _link("m", ".")), area, "'m' re-creates an existing path")


def test_chain_that_escapes_only_once_every_link_exists_is_refused(area: Path) -> None:
    # x -> q/../model.string is inside while q does not exist (q/.. is the target itself); once
    # q -> . exists, x resolves to the target's parent: ../model.string.
    archive = _tar(area / "chain.tar", _link("x", "q/../model.string"), _link("q", "."))
    _refused(archive, area, "'x' is a symlink pointing outside the target directory")


def test_chain_of_links_pointing_up_is_refused(area: Path) -> None:
    archive = _tar(area / "up.tar", _dir("a"), _link("a/b", ".."), _link("a/c", "b/.."))
    _refused(archive, area, "'a/c' is a symlink pointing outside")


def test_link_loops_and_dangling_links_are_refused(area: Path) -> None:
    _refused(_tar(area / "loop.tar", _link("a", "b"), _link("b", "a")), area, "does not resolve")
    _refused(_tar(area / "dangling.tar", _link("a", "missing")), area, "'a' is a symbolic link that does not resolve")


@pytest.mark.parametrize("target", ["/etc/passwd", "../secret", "inside.txt"])
def test_hard_links_are_refused(area: Path, target: str) -> None:
    archive = _tar(area / "hard.tar", _file("inside.txt"), _link("h", target, tarfile.LNKTYPE))
    _refused(archive, area, "'h' is a hard link")


@pytest.mark.parametrize("name", ["/etc/evil", "//evil", "C:/evil", "a/../../evil", "./../evil", "a\\..\\..\\evil"])
def test_absolute_and_parent_names_are_refused(area: Path, name: str) -> None:
    _refused(_tar(area / "names.tar", _file(name)), area, "absolute path|escapes the target")


def test_link_then_file_through_it_is_refused(area: Path) -> None:
    archive = _tar(area / "through.tar", _dir("sub"), _link("lnk", "sub"), _file("lnk/model.string"))
    _refused(archive, area, "'lnk/model.string' goes through the symbolic link 'lnk'")
    outward = _tar(area / "through-out.tar", _link("up", ".."), _file("up/secret", b"overwritten"))
    _refused(outward, area, "'up' is a symlink pointing outside")


def test_dir_through_a_link_is_refused(area: Path) -> None:
    archive = _tar(area / "dir-through.tar", _dir("sub"), _link("lnk", "sub"), _dir("lnk/deeper"))
    _refused(archive, area, "'lnk/deeper' goes through the symbolic link 'lnk'")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_devices_and_fifos_are_refused(area: Path, kind: bytes) -> None:
    info = tarfile.TarInfo("special")
    info.type = kind
    _refused(_tar(area / "special.tar", info), area, "'special' is a device or special file")


def test_zip_symlink_out_and_recreated_zip_link_are_refused(area: Path) -> None:
    link = stat.S_IFLNK | 0o777
    _refused(_zip(area / "out.zip", ("model.string", b"../model.string", link)), area,
             "'model.string' is a symlink pointing outside")
    _refused(_zip(area / "abs.zip", ("p", b"/etc/passwd", link)), area, "'p' is a symlink to an absolute path")
    twice = _zip(area / "twice.zip", ("d/", b"", stat.S_IFDIR | 0o755), ("e", b"d", link),
                 ("m", b"e/x", link), ("e", b".", link))
    _refused(twice, area, "'e' re-creates an existing path as a symbolic link")
    through = _zip(area / "through.zip", ("d/", b"", stat.S_IFDIR | 0o755), ("e", b"d", link),
                   ("e/model.string", b"x", stat.S_IFREG | 0o644))
    _refused(through, area, "'e/model.string' goes through the symbolic link 'e'")


def test_zip_special_files_are_refused(area: Path) -> None:
    _refused(_zip(area / "fifo.zip", ("f", b"", stat.S_IFIFO | 0o644)), area, "'f' is a device or special file")


def test_zip_chain_escape_is_refused(area: Path) -> None:
    link = stat.S_IFLNK | 0o777
    archive = _zip(area / "chain.zip", ("x", b"q/../model.string", link), ("q", b".", link))
    _refused(archive, area, "'x' is a symlink pointing outside")


def test_good_archive_with_a_link_before_its_target_extracts(area: Path) -> None:
    archive = _tar(area / "good.tar", _link("model/latest", "v1/model.joblib"), _dir("model"),
                   _file("model/v1/model.joblib", b"weights"), _file("model/v1/model.joblib", b"weights2"))
    out = extract_archive(archive, area / "out", max_bytes=LIMIT)
    assert (out / "model" / "latest").is_symlink()
    assert (out / "model" / "latest").read_bytes() == b"weights2"  # a later copy of a file replaces it
    _assert_nothing_escaped(area)


def test_extracted_files_carry_no_special_modes(area: Path) -> None:
    info, data = _file("run.sh", b"#!/bin/sh\n")
    info.mode = 0o4777  # setuid, world-writable
    out = extract_archive(_tar(area / "modes.tar", (info, data)), area / "out", max_bytes=LIMIT)
    mode = (out / "run.sh").stat().st_mode
    assert not mode & (stat.S_ISUID | stat.S_ISGID | stat.S_IWOTH)


def test_extraction_needs_an_empty_target(area: Path) -> None:
    (area / "out").mkdir()
    (area / "out" / "lnk").symlink_to(area / "secret")
    with pytest.raises(StorageError, match="is not empty"):
        extract_archive(_tar(area / "any.tar", _file("lnk", b"overwritten")), area / "out", max_bytes=LIMIT)
    assert (area / "secret").read_text() == "top secret"
