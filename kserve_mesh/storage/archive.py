"""Safe extraction of downloaded model archives (.tar, .tar.gz, .tgz, .zip).

A model archive comes from storage that we do not fully trust, so extraction refuses, naming the
offending member, anything that could write outside the target directory or exhaust the disk:

- absolute member names and ``..`` components;
- symlinks and hardlinks whose target resolves outside the target directory, and writes through
  a previously extracted symlink that lead outside (checked with ``realpath`` member by member,
  against what is already on disk, so link chains cannot sneak out);
- device files, FIFOs and other special files;
- more than ``max_members`` members, or more than ``max_bytes`` in total. Zip sizes are enforced
  on the bytes actually decompressed, not only on the declared sizes (zip bombs lie).

Tar members are additionally extracted with the stdlib ``data`` filter as a second line of defence.
Every refusal is an :class:`~kserve_mesh.core.errors.UnsafeArchive`.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from kserve_mesh.core.errors import StorageError, UnsafeArchive

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
DEFAULT_MAX_MEMBERS = 10_000
_CHUNK = 1 << 20


def archive_kind(name: str) -> str | None:
    """``"tar"`` or ``"zip"`` when ``name`` looks like an archive we extract, else ``None``."""
    lower = name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith((".tar.gz", ".tgz", ".tar")):
        return "tar"
    return None


def archive_stem(name: str) -> str:
    """The name without its archive suffix: ``model.tar.gz`` → ``model``."""
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)] or "_model"
    return name


def check_member_name(name: str) -> PurePosixPath:
    """A relative, normalised member path; absolute names and ``..`` are :class:`UnsafeArchive`."""
    cleaned = name.replace("\\", "/")
    if cleaned.startswith("/") or (len(cleaned) > 1 and cleaned[1] == ":"):
        raise UnsafeArchive(f"archive member '{name}' has an absolute path")
    parts = [p for p in cleaned.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeArchive(f"archive member '{name}' escapes the target directory ('..')")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _inside(root: str, candidate: str) -> bool:
    return candidate == root or candidate.startswith(root + os.sep)


def _target_for(root: str, name: str) -> str:
    """Real path a member named ``name`` would be written to, following links already on disk."""
    rel = check_member_name(name)
    target = os.path.realpath(os.path.join(root, str(rel)))
    if not _inside(root, target):
        raise UnsafeArchive(f"archive member '{name}' would be written outside the target directory")
    return target


def _check_link(root: str, name: str, link_target: str, *, hard: bool) -> None:
    kind = "hardlink" if hard else "symlink"
    if os.path.isabs(link_target) or link_target.replace("\\", "/").startswith("/"):
        raise UnsafeArchive(f"archive member '{name}' is a {kind} to an absolute path")
    if hard:  # tar hardlink targets are relative to the archive root
        if ".." in link_target.replace("\\", "/").split("/"):
            raise UnsafeArchive(f"archive member '{name}' is a hardlink escaping the target ('..')")
        base = root
    else:
        base = os.path.dirname(_target_for(root, name))
    resolved = os.path.realpath(os.path.join(base, link_target))
    if not _inside(root, resolved):
        raise UnsafeArchive(f"archive member '{name}' is a {kind} pointing outside the target directory")


def extract_archive(
    archive: Path, dest: Path, *, max_bytes: int, max_members: int = DEFAULT_MAX_MEMBERS
) -> Path:
    """Extract ``archive`` into ``dest`` (created) safely; return ``dest``."""
    kind = archive_kind(archive.name)
    if kind is None:
        raise StorageError(f"'{archive.name}' is not a supported archive (.tar.gz, .tgz, .tar, .zip)")
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    try:
        if kind == "zip":
            _extract_zip(archive, root, max_bytes, max_members)
        else:
            _extract_tar(archive, root, max_bytes, max_members)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        if isinstance(exc, tarfile.FilterError):
            raise UnsafeArchive(f"archive '{archive.name}' refused: {exc}") from exc
        raise StorageError(f"archive '{archive.name}' is corrupt or unreadable: {exc}") from exc
    log.debug("extracted %s into %s", archive.name, dest)
    return dest


def _extract_tar(archive: Path, root: str, max_bytes: int, max_members: int) -> None:
    total = 0
    count = 0
    with tarfile.open(archive, "r:*") as tf:
        for member in tf:
            count += 1
            if count > max_members:
                raise UnsafeArchive(
                    f"archive '{archive.name}' has more than {max_members} members "
                    f"(refused at '{member.name}')"
                )
            name = member.name
            _target_for(root, name)
            if member.issym():
                _check_link(root, name, member.linkname, hard=False)
            elif member.islnk():
                _check_link(root, name, member.linkname, hard=True)
            elif member.isdev() or not (member.isfile() or member.isdir()):
                raise UnsafeArchive(f"archive member '{name}' is a device or special file")
            if member.isfile():
                total += member.size
                if total > max_bytes:
                    raise UnsafeArchive(
                        f"archive '{archive.name}' expands to more than {max_bytes} bytes "
                        f"(limit reached at member '{name}')"
                    )
            tf.extract(member, root, filter="data")


def _extract_zip(archive: Path, root: str, max_bytes: int, max_members: int) -> None:
    total = 0
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise UnsafeArchive(
                f"archive '{archive.name}' has {len(infos)} members, more than {max_members} "
                f"(first over the limit: '{infos[max_members].filename}')"
            )
        declared = sum(i.file_size for i in infos)
        if declared > max_bytes:
            raise UnsafeArchive(
                f"archive '{archive.name}' declares {declared} bytes, more than the limit {max_bytes}"
            )
        for info in infos:
            name = info.filename
            target = _target_for(root, name)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                link_target = zf.read(info).decode("utf-8", errors="replace")
                _check_link(root, name, link_target, hard=False)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.symlink(link_target, target)
                continue
            file_type = stat.S_IFMT(mode)
            if file_type and file_type not in (stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeArchive(f"archive member '{name}' is a device or special file")
            if info.is_dir():
                os.makedirs(target, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(_CHUNK):
                    total += len(chunk)
                    if total > max_bytes:
                        raise UnsafeArchive(
                            f"archive '{archive.name}' expands to more than {max_bytes} bytes "
                            f"(limit reached at member '{name}')"
                        )
                    out.write(chunk)


def unpack_in_place(file: Path, *, max_bytes: int, max_members: int = DEFAULT_MAX_MEMBERS) -> Path:
    """Extract ``file`` into a sibling directory named after its stem, delete the archive."""
    dest = file.with_name(archive_stem(file.name))
    if dest.exists():
        shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
    extract_archive(file, dest, max_bytes=max_bytes, max_members=max_members)
    file.unlink()
    return dest
