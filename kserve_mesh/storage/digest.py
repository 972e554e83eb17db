"""sha256 pinning of model files: the digest a registration may carry, and how it is computed.

Loading a pickled model (sklearn's joblib/pickle) runs code from the file, so a model file is as
trusted as a program. A registration can pin the files it means with ``{"sha256": "<64 hex>"}`` in
its modelKey; after fetching, the mesh computes :func:`model_digest` of what it fetched and refuses
to load anything else (:class:`~kserve_mesh.core.errors.DigestMismatch`).

The digest of

- **a file** (a model file, or an archive *before* it is unpacked) is the sha256 of its bytes:
  ``sha256sum model.joblib``;
- **a folder** is the sha256 of the sorted lines ``<sha256 of file>  <relative posix path>\\n``,
  one per regular file under it (and per symbolic link to a regular file, hashed as that file);
  links to folders are not followed and make a folder unpinnable. For ordinary file names
  (no newline or backslash) it is what this shell line prints::

      cd FOLDER && find . \\( -type f -o -xtype f \\) -printf '%P\\0' | xargs -0 sha256sum \\
          | LC_ALL=C sort | sha256sum
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from kserve_mesh.core.errors import DigestMismatch, InvalidArgument, StorageError

_CHUNK = 1 << 20
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def parse_digest(value: object) -> str:
    """A pinned digest from a modelKey: 64 hex digits (an optional ``sha256:`` prefix is accepted),
    returned in lower case; anything else is :class:`InvalidArgument`."""
    if not isinstance(value, str):
        raise InvalidArgument(f"modelKey field 'sha256' must be a string of 64 hex digits, got {value!r}")
    text = value.strip()
    if text.lower().startswith("sha256:"):
        text = text[len("sha256:"):]
    if not _HEX64.match(text):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise InvalidArgument(f"modelKey field 'sha256' must be 64 hex digits (the sha256 of the model "
                              f"file or folder), got {shown!r}")
    return text.lower()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_digest(path: Path | str) -> str:
    """The sha256 (hex) that pins ``path``: a file's bytes, or a folder's sorted file list (see the
    module docstring). Blocking; raises :class:`StorageError` when ``path`` cannot be read."""
    path = Path(path)
    try:
        if not path.is_dir():
            return file_digest(path)
        lines: list[bytes] = []
        for folder, dirs, files in os.walk(path, followlinks=False):
            for name in dirs:
                entry = os.path.join(folder, name)
                if os.path.islink(entry):
                    raise StorageError(
                        f"cannot compute the sha256 of folder {path}: "
                        f"'{os.path.relpath(entry, path)}' is a symbolic link to a folder")
            for name in files:
                entry = os.path.join(folder, name)
                if not os.path.isfile(entry):  # sockets, FIFOs, dangling links
                    continue
                rel = os.fsencode(Path(os.path.relpath(entry, path)).as_posix())
                lines.append(f"{file_digest(Path(entry))}  ".encode() + rel + b"\n")
    except OSError as exc:
        raise StorageError(f"cannot compute the sha256 of {path}: {exc.strerror or exc}") from exc
    return hashlib.sha256(b"".join(sorted(lines))).hexdigest()


def verify_digest(path: Path, expected: str | None, shown: str) -> None:
    """Raise :class:`DigestMismatch` when ``expected`` is set and ``path``'s digest differs."""
    if not expected:
        return
    actual = model_digest(path)
    if actual != expected:
        raise DigestMismatch(f"model files of '{shown}' do not match the pinned sha256: expected "
                             f"{expected}, got {actual}; the files changed, or the pin is wrong")
