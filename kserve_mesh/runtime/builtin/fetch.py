"""The storage port of the built-in runtime: turn a model path/key into local files, and back.

``kserve_mesh.storage.ModelFetcher`` implements it for local paths, PVCs, S3, HTTP(S) and more.
``LocalFetcher`` is the fallback when that package cannot be imported: local paths and ``file://``
URIs only, nothing to release.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from kserve_mesh.core.errors import StorageNotFound

logger = logging.getLogger(__name__)


class Fetcher(Protocol):
    """Blocking: ``fetch`` may download; call it from a worker thread."""

    def fetch(self, model_id: str, path: str, key: str = "") -> Path: ...

    def release(self, model_id: str) -> None: ...


class LocalFetcher:
    """Local paths and ``file://`` URIs, returned as they are."""

    def fetch(self, model_id: str, path: str, key: str = "") -> Path:
        local = Path(unquote(urlparse(path).path)) if path.startswith("file://") else Path(path)
        if not local.exists():
            raise StorageNotFound(f"model '{model_id}': path '{path}' does not exist")
        return local

    def release(self, model_id: str) -> None:
        return None


def default_fetcher() -> Fetcher:
    """A ``ModelFetcher`` with an empty storage config and a fresh temporary cache directory."""
    try:
        from kserve_mesh.storage import ModelFetcher, StorageConfig
    except ImportError as exc:
        logger.warning("kserve_mesh.storage is unavailable (%s); serving local model paths only", exc)
        return LocalFetcher()
    cache_dir = Path(tempfile.mkdtemp(prefix="kserve-mesh-models-"))
    return ModelFetcher(StorageConfig.empty(), cache_dir)
