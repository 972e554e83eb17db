"""Safe extraction of model archives (.tar, .tar.gz, .tgz, .zip), downloaded or local.

A model archive comes from storage that we do not fully trust, so extraction is written here
member by member (never ``tarfile.extract``), and no sequence of members can make it write or
point outside the target directory. Refused, naming the offending member
(:class:`~kserve_mesh.core.errors.UnsafeArchive`):

- absolute member names, drive letters, NUL characters and ``..`` components;
- a member whose path goes through a symbolic link (every parent must be a real directory), and a
  member that would re-create or replace a symbolic link, or replace a directory or file with
  something of another kind (``tarfile`` itself would replace an existing link: the "re-created
  link" escape, where a file is checked through a link that is swapped afterwards);
- symbolic links to absolute paths, links whose target lies outside the target directory, links
  that do not resolve to something the archive holds (dangling, or loops);
- hard links, device files, FIFOs and every other special file;
- more than ``max_members`` members, or more than ``max_bytes`` in total, counted on the bytes
  actually written (zip headers can lie: zip bombs).

Symbolic links are created after every file and directory, so a link may name a member that comes
later in the archive; once all links exist, the whole tree is walked and every link's final path is
resolved (``realpath``) against the real target directory. As nothing is ever replaced, what was
checked is what stays on disk.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from kserve_mesh.core.errors import StorageError, UnsafeArchive

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
DEFAULT_MAX_MEMBERS = 10_000
MAX_LINK_TARGET = 4096
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
    if "\0" in name:
        raise UnsafeArchive(f"archive member {name!r} has a NUL character in its name")
    cleaned = name.replace("\\", "/")
    if cleaned.startswith("/") or (len(cleaned) > 1 and cleaned[1] == ":"):
        raise UnsafeArchive(f"archive member '{name}' has an absolute path")
    parts = [p for p in cleaned.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeArchive(f"archive member '{name}' escapes the target directory ('..')")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _inside(root: str, candidate: str) -> bool:
    return candidate == root or candidate.startswith(root + os.sep)


@dataclass(frozen=True, slots=True)
class _Member:
    """One archive member, whatever the format: what to create, and how to read its bytes."""

    name: str
    kind: str  # "file" | "dir" | "symlink"
    link_target: str = ""
    executable: bool = False


class _Extractor:
    """Creates members under ``root`` by the rules of the module docstring."""

    def __init__(self, archive: str, root: str, max_bytes: int, max_members: int) -> None:
        self.archive = archive
        self.root = root
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.total = 0
        self.count = 0
        self._dirs: set[str] = {root}  # real directories created or checked under root
        self._links: dict[str, _Member] = {}  # relative path -> link member, created at the end

    # -- per member ---------------------------------------------------------------------------

    def counted(self, name: str) -> None:
        self.count += 1
        if self.count > self.max_members:
            raise UnsafeArchive(f"archive '{self.archive}' has more than {self.max_members} members "
                                f"(refused at '{name}')")

    def _path(self, member: _Member) -> tuple[PurePosixPath, str]:
        rel = check_member_name(member.name)
        for i in range(1, len(rel.parts)):
            parent = "/".join(rel.parts[:i])
            if parent in self._links:
                raise UnsafeArchive(f"archive member '{member.name}' goes through the symbolic link "
                                    f"'{parent}' (members are never written through links)")
        return rel, os.path.join(self.root, *rel.parts)

    def _parents(self, member: _Member, rel: PurePosixPath) -> None:
        """Create (or check) every parent of ``rel`` as a real directory, never a link."""
        current = self.root
        for part in rel.parts[:-1]:
            current = os.path.join(current, part)
            if current in self._dirs:
                continue
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                os.mkdir(current, 0o755)
            else:
                if stat.S_ISLNK(st.st_mode):
                    raise UnsafeArchive(f"archive member '{member.name}' goes through a symbolic link")
                if not stat.S_ISDIR(st.st_mode):
                    raise UnsafeArchive(f"archive member '{member.name}' needs '{part}' to be a "
                                        "directory, but the archive made it a file")
            self._dirs.add(current)

    def add_dir(self, member: _Member) -> None:
        rel, target = self._path(member)
        if str(rel) == ".":
            return
        if str(rel) in self._links:
            raise UnsafeArchive(f"archive member '{member.name}' re-creates the symbolic link '{rel}'")
        self._parents(member, rel)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            os.mkdir(target, 0o755)
        else:
            if not stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
                raise UnsafeArchive(f"archive member '{member.name}' would replace an existing "
                                    "file or link with a directory")
        self._dirs.add(target)

    def add_file(self, member: _Member, data: IO[bytes]) -> None:
        rel, target = self._path(member)
        if str(rel) == ".":
            raise UnsafeArchive(f"archive member '{member.name}' is a file named like the target directory")
        if str(rel) in self._links:
            raise UnsafeArchive(f"archive member '{member.name}' would overwrite the symbolic link '{rel}'")
        self._parents(member, rel)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            pass
        else:  # a later copy of a regular file replaces it (tar appends); nothing else may be replaced
            if not stat.S_ISREG(st.st_mode):
                raise UnsafeArchive(f"archive member '{member.name}' would replace an existing "
                                    "directory or link with a file")
            os.unlink(target)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(target, flags, 0o755 if member.executable else 0o644)
        with os.fdopen(fd, "wb") as out:
            while chunk := data.read(_CHUNK):
                self.total += len(chunk)
                if self.total > self.max_bytes:
                    raise UnsafeArchive(f"archive '{self.archive}' expands to more than {self.max_bytes} "
                                        f"bytes (limit reached at member '{member.name}')")
                out.write(chunk)

    def add_symlink(self, member: _Member) -> None:
        rel, target = self._path(member)
        link = member.link_target
        if str(rel) == ".":
            raise UnsafeArchive(f"archive member '{member.name}' is a link named like the target directory")
        if not link or "\0" in link or len(link) > MAX_LINK_TARGET:
            raise UnsafeArchive(f"archive member '{member.name}' is a symbolic link with an empty, "
                                "over-long or NUL-containing target")
        if link.startswith(("/", "\\")) or (len(link) > 1 and link[1] == ":"):
            raise UnsafeArchive(f"archive member '{member.name}' is a symlink to an absolute path")
        if str(rel) in self._links or os.path.lexists(target):
            raise UnsafeArchive(f"archive member '{member.name}' re-creates an existing path as a "
                                "symbolic link (links are never replaced)")
        # Lexical check now (a target outside is refused whatever comes later); the final check
        # after every link exists decides on the real path.
        lexical = os.path.normpath(os.path.join(os.path.dirname(target), link.replace("\\", "/")))
        if not _inside(self.root, lexical):
            raise UnsafeArchive(f"archive member '{member.name}' is a symlink pointing outside the "
                                "target directory")
        self._links[str(rel)] = member

    # -- at the end ---------------------------------------------------------------------------

    def finish(self) -> None:
        for rel, member in self._links.items():
            target = os.path.join(self.root, *PurePosixPath(rel).parts)
            self._parents(member, PurePosixPath(rel))
            if os.path.lexists(target):
                raise UnsafeArchive(f"archive member '{member.name}' re-creates an existing path as a "
                                    "symbolic link (links are never replaced)")
            os.symlink(member.link_target.replace("\\", "/"), target)
        self.verify_tree()

    def verify_tree(self) -> None:
        """Every entry under root is a directory, a regular file, or a link whose final path (all
        links followed) exists inside root."""
        for folder, dirs, files in os.walk(self.root, followlinks=False):
            for name in dirs + files:
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, self.root)
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    try:
                        real = os.path.realpath(path, strict=True)
                    except OSError as exc:
                        raise UnsafeArchive(f"archive member '{rel}' is a symbolic link that does not "
                                            f"resolve to a member of the archive ({exc.strerror})") from exc
                    if not _inside(self.root, real):
                        raise UnsafeArchive(f"archive member '{rel}' is a symlink pointing outside the "
                                            "target directory (through other links)")
                elif not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                    raise UnsafeArchive(f"archive member '{rel}' is a device or special file")


def extract_archive(
    archive: Path, dest: Path, *, max_bytes: int, max_members: int = DEFAULT_MAX_MEMBERS
) -> Path:
    """Extract ``archive`` into ``dest`` (created; must be empty or absent) safely; return ``dest``.
    On any refusal or error ``dest`` is removed again."""
    kind = archive_kind(archive.name)
    if kind is None:
        raise StorageError(f"'{archive.name}' is not a supported archive (.tar.gz, .tgz, .tar, .zip)")
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    if os.listdir(root):
        raise StorageError(f"cannot extract '{archive.name}': {dest} is not empty")
    extractor = _Extractor(archive.name, root, max_bytes, max_members)
    try:
        try:
            if kind == "zip":
                _extract_zip(archive, extractor)
            else:
                _extract_tar(archive, extractor)
            extractor.finish()
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            raise StorageError(f"archive '{archive.name}' is corrupt or unreadable: {exc}") from exc
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)  # it was empty: nothing half-extracted stays behind
        raise
    log.debug("extracted %s into %s", archive.name, dest)
    return dest


def _tar_members(tf: tarfile.TarFile, extractor: _Extractor) -> Iterator[tuple[tarfile.TarInfo, _Member]]:
    for info in tf:
        extractor.counted(info.name)
        name = info.name
        if info.issym():
            yield info, _Member(name, "symlink", link_target=info.linkname)
        elif info.islnk():
            raise UnsafeArchive(f"archive member '{name}' is a hard link (to '{info.linkname}'); hard "
                                "links are refused")
        elif info.isdir():
            yield info, _Member(name, "dir")
        elif info.isfile():
            yield info, _Member(name, "file", executable=bool(info.mode & 0o100))
        else:
            raise UnsafeArchive(f"archive member '{name}' is a device or special file")


def _extract_tar(archive: Path, extractor: _Extractor) -> None:
    with tarfile.open(archive, "r:*") as tf:
        for info, member in _tar_members(tf, extractor):
            if member.kind == "symlink":
                extractor.add_symlink(member)
            elif member.kind == "dir":
                extractor.add_dir(member)
            else:
                data = tf.extractfile(info)
                if data is None:
                    raise UnsafeArchive(f"archive member '{member.name}' has no data")
                with data:
                    extractor.add_file(member, data)


def _extract_zip(archive: Path, extractor: _Extractor) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > extractor.max_members:
            raise UnsafeArchive(
                f"archive '{archive.name}' has {len(infos)} members, more than {extractor.max_members} "
                f"(first over the limit: '{infos[extractor.max_members].filename}')"
            )
        declared = sum(i.file_size for i in infos)
        if declared > extractor.max_bytes:
            raise UnsafeArchive(
                f"archive '{archive.name}' declares {declared} bytes, more than the limit {extractor.max_bytes}"
            )
        for info in infos:
            name = info.filename
            extractor.counted(name)
            mode = info.external_attr >> 16
            file_type = stat.S_IFMT(mode)
            if stat.S_ISLNK(mode):
                if info.file_size > MAX_LINK_TARGET:
                    raise UnsafeArchive(f"archive member '{name}' is a symbolic link with an over-long target")
                with zf.open(info) as src:
                    raw = src.read(MAX_LINK_TARGET + 1)
                extractor.add_symlink(_Member(name, "symlink", link_target=raw.decode("utf-8", "replace")))
            elif file_type and file_type not in (stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeArchive(f"archive member '{name}' is a device or special file")
            elif info.is_dir() or file_type == stat.S_IFDIR:
                extractor.add_dir(_Member(name, "dir"))
            else:
                with zf.open(info) as src:
                    extractor.add_file(_Member(name, "file", executable=bool(mode & 0o100)), src)


def unpack_in_place(file: Path, *, max_bytes: int, max_members: int = DEFAULT_MAX_MEMBERS) -> Path:
    """Extract ``file`` into a sibling directory named after its stem, delete the archive."""
    dest = file.with_name(archive_stem(file.name))
    if dest.exists():
        shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
    extract_archive(file, dest, max_bytes=max_bytes, max_members=max_members)
    file.unlink()
    return dest
