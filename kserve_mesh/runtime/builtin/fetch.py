"""The storage port of the built-in runtime: turn a model path/key into local files, and back.

``kserve_mesh.storage.ModelFetcher`` implements it for local paths, PVCs, S3, HTTP(S) and more,
under a ``StoragePolicy`` (which folders, PVC claims and hosts may be read). ``LocalFetcher`` is the
small stand-in for tests and benchmarks: local paths and ``file://`` URIs, confined to the roots it
is given exactly as the policy confines them (no ``..``, real path inside a root), nothing to
release. Neither reads a file outside the folders it was told to serve.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from kserve_mesh.core.errors import StorageNotAllowed, StorageNotFound

logger = logging.getLogger(__name__)


class Fetcher(Protocol):
    """Blocking: ``fetch`` may download; call it from a worker thread."""

    def fetch(self, model_id: str, path: str, key: str = "") -> Path: ...

    def release(self, model_id: str) -> None: ...


class LocalFetcher:
    """Local paths and ``file://`` URIs inside ``roots`` (absolute, or relative to the current
    folder), returned as their real paths, under the same rules as ``StoragePolicy.local_path``
    (and the same check of links inside a folder). With no roots every path is refused."""

    def __init__(self, roots: Iterable[Path | str]) -> None:
        from kserve_mesh.storage import StoragePolicy

        self.policy = StoragePolicy(tuple(Path(r) for r in roots))

    def fetch(self, model_id: str, path: str, key: str = "") -> Path:
        raw = unquote(urlparse(path).path) if path.startswith("file://") else path
        if "://" in raw:
            raise StorageNotAllowed(f"model '{model_id}': '{path}' is not a local path (this fetcher "
                                    "serves local files only)")
        local, _root = self.policy.local_path(raw)
        if not local.exists():
            raise StorageNotFound(f"model '{model_id}': path '{path}' does not exist")
        self.policy.check_links_inside(local, self.policy.local_roots, path)
        return local

    def release(self, model_id: str) -> None:
        return None


def default_fetcher() -> Fetcher:
    """A ``ModelFetcher`` with an empty storage config, a fresh temporary cache directory and the
    default policy: no local path is allowed (give a fetcher built with ``make_fetcher`` and a
    ``StoragePolicy`` to serve local models)."""
    from kserve_mesh.storage import ModelFetcher, StorageConfig

    cache_dir = Path(tempfile.mkdtemp(prefix="kserve-mesh-models-"))
    return ModelFetcher(StorageConfig.empty(), cache_dir)
