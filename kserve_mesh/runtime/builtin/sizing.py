"""Memory and disk measurements behind the sizes the built-in runtime reports.

The mesh packs models into an instance by these sizes, so under-reporting means OOM kills and
over-reporting means wasted capacity; ModelMesh's adapters guessed (disk size x 1.25) and users hit
OOMs. We measure the resident set size (RSS) of the process around a load and keep the guess only
as a floor (see ``BuiltinRuntime``).
"""

from __future__ import annotations

import os
from pathlib import Path

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss_bytes() -> int | None:
    """The resident set size of this process, or None where it cannot be read cheaply."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def disk_size_bytes(path: Path) -> int:
    """Bytes on disk of a file, or of all regular files under a directory (links not followed)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += st.st_size
    return total


def local_path(path: str) -> Path | None:
    """The local file a model path names (plain path or file://), or None for remote URIs."""
    from urllib.parse import unquote, urlparse

    if path.startswith("file://"):
        return Path(unquote(urlparse(path).path))
    if "://" in path or not path:
        return None
    return Path(path)


def disk_size_or_zero(path: Path) -> int:
    """Bytes on disk under ``path``; 0 when it is missing or unreadable (sizes are estimates)."""
    try:
        return disk_size_bytes(path) if path.exists() else 0
    except OSError:
        return 0


def _load_malloc_trim():  # type: ignore[no-untyped-def]
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS, jemalloc alone)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _load_malloc_trim()


def can_release_free_memory() -> bool:
    """Whether :func:`release_free_memory` does anything here (glibc's ``malloc_trim`` exists)."""
    return _malloc_trim is not None


def release_free_memory() -> bool:
    """Give the C heap's free pages back to the operating system (glibc ``malloc_trim(0)``, every
    arena). Freed Python objects of an unloaded model (numpy arrays, tree nodes) go back to malloc,
    but glibc keeps free memory inside its heaps and arenas; trimming returns the whole free pages
    of every arena. Returns False where it is not available. Blocks for milliseconds: call it from
    a worker thread."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True
