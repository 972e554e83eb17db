"""Get a model's files onto local disk: the one entry point the mesh and runtimes call.

:class:`ModelFetcher` turns (model id, model path, modelKey) into a local path:

=============================  ==============================================================
``/abs/path``, ``rel/path``    local file or folder, used in place (relative → ``local_root``)
``file:///abs``, ``file://rel`` the same
``pvc://claim/sub/path``       ``pvc_root/claim/sub/path``, used in place
``s3://bucket/key``            downloaded (one object, or every object under a "folder" prefix)
``http(s)://host/file``        downloaded, streamed with a size cap
bare path + modelKey/config    the storage entry's type decides (s3 bucket, pvc ``name``,
                               http ``url`` base), as ModelMesh-serving's puller does
=============================  ==============================================================

Downloads land in ``cache_dir/<safe name of model id>/`` atomically: they are written into a
temporary sibling directory and renamed into place only when complete, so a crash never leaves a
half model that looks whole. A downloaded ``.tar.gz``/``.tgz``/``.tar``/``.zip`` is extracted
safely (see :mod:`.archive`). Fetches of different models run in parallel; fetches of the same
model are serialised by a per-model lock. ``release`` deletes what ``fetch`` downloaded and never
touches in-place paths.

``fetch`` blocks; async callers run it in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from kserve_mesh.core.errors import StorageError, StorageNotFound

from .archive import DEFAULT_MAX_MEMBERS, archive_kind, unpack_in_place
from .config import StorageConfig, StorageEntry
from .http import HttpPuller, parse_headers
from .modelkey import ModelKey, parse_model_key, resolve_entry
from .s3 import S3Options, S3Puller

log = logging.getLogger(__name__)

GiB = 1 << 30
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_UNSUPPORTED = {"gs": "gcs", "gcs": "gcs", "wasb": "azure", "wasbs": "azure", "abfs": "azure",
                "abfss": "azure", "hdfs": "hdfs", "webhdfs": "hdfs", "hf": "huggingface"}


def safe_name(model_id: str) -> str:
    """A directory name for ``model_id``: readable, filesystem-safe, and unique (hash suffix)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("._-")[:64] or "model"
    digest = hashlib.sha256(model_id.encode("utf-8")).hexdigest()[:12]
    return f"{readable}-{digest}"


def disk_usage(path: Path) -> int:
    """Bytes used by a file or a folder tree (symlinks followed once, for PVC links)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path, followlinks=False):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                continue
    return total


@dataclass(frozen=True)
class Source:
    """Where a model's files are: ``kind`` is local | s3 | http; the other fields per kind."""

    kind: str
    location: str  # local path, s3 key, or URL
    bucket: str = ""
    entry: StorageEntry | None = None
    in_place: bool = False


def _secure_join(root: Path, rel: str, what: str) -> Path:
    base = os.path.realpath(root)
    candidate = os.path.realpath(os.path.join(base, rel.lstrip("/")))
    if candidate != base and not candidate.startswith(base + os.sep):
        raise StorageError(f"{what} escapes its root directory")
    return Path(candidate)


class ModelFetcher:
    """Fetches model files to local disk. Thread-safe; one per process is enough."""

    def __init__(
        self,
        config: StorageConfig,
        cache_dir: Path,
        *,
        max_bytes: int = 4 * GiB,
        max_members: int = DEFAULT_MAX_MEMBERS,
        local_root: Path | None = None,
        pvc_root: Path = Path("/pvc_mounts"),
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 3,
    ) -> None:
        self.config = config
        self.cache_dir = Path(cache_dir)
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.local_root = Path(local_root) if local_root is not None else None
        self.pvc_root = Path(pvc_root)
        self._s3_options = S3Options(connect_timeout, read_timeout, max_attempts)
        self._http_timeout = max(connect_timeout, read_timeout)
        self._attempts = max_attempts
        self._s3_clients: dict[str, S3Puller] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # -- public API -------------------------------------------------------------------------

    def fetch(self, model_id: str, path: str, key: str = "") -> Path:
        """Return a local path holding the model's files, downloading them if needed."""
        source = self.resolve(path, key)
        if source.in_place:
            return self._check_local(source.location, path)
        with self._lock_for(model_id):
            return self._download(model_id, source)

    def release(self, model_id: str) -> None:
        """Delete what ``fetch`` downloaded for ``model_id`` (no-op for in-place paths)."""
        with self._lock_for(model_id):
            target = self.cache_path(model_id)
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
                log.info("released local files of model %s", model_id)
        with self._guard:
            lock = self._locks.get(model_id)
            if lock is not None and not lock.locked():
                del self._locks[model_id]

    def cache_path(self, model_id: str) -> Path:
        return self.cache_dir / safe_name(model_id)

    def resolve(self, path: str, key: str = "") -> Source:
        """Decide where ``path`` lives, given the modelKey ``key``. Pure apart from config reads."""
        model_key = parse_model_key(key)
        path = path.strip()
        match = _SCHEME.match(path)
        if match:
            return self._resolve_uri(match.group(1).lower(), path, model_key)
        entry = None if model_key.is_empty else resolve_entry(self.config, model_key)
        if entry is None:
            return Source("local", self._local_path(path), in_place=True)
        return self._resolve_with_entry(entry, path)

    # -- resolution -------------------------------------------------------------------------

    def _resolve_uri(self, scheme: str, uri: str, model_key: ModelKey) -> Source:
        parts = urllib.parse.urlsplit(uri)
        if scheme == "file":
            host = parts.netloc if parts.netloc not in ("", "localhost") else ""
            raw = urllib.parse.unquote(host + parts.path) if host else urllib.parse.unquote(parts.path)
            return Source("local", self._local_path(raw), in_place=True)
        if scheme == "pvc":
            claim = parts.netloc
            return Source("local", self._pvc_path(claim, urllib.parse.unquote(parts.path)),
                          in_place=True)
        if scheme == "s3":
            entry = self._entry_of_type(model_key, "s3") or StorageEntry("anonymous", "s3")
            return Source("s3", urllib.parse.unquote(parts.path).lstrip("/"),
                          bucket=parts.netloc, entry=entry)
        if scheme in ("http", "https"):
            entry = self._entry_of_type(model_key, "http") or self._entry_of_type(model_key, "https")
            return Source("http", uri, entry=entry)
        if scheme in _UNSUPPORTED:
            raise StorageError(
                f"storage scheme '{scheme}://' ({_UNSUPPORTED[scheme]}) in '{uri}' is recognised "
                "but not supported for pulling by this mesh"
            )
        raise StorageError(f"unknown storage scheme '{scheme}://' in '{uri}'")

    def _entry_of_type(self, model_key: ModelKey, storage_type: str) -> StorageEntry | None:
        """The modelKey's entry if it has this type, else ``default_<type>``/``default``."""
        if not model_key.is_empty:
            entry = resolve_entry(self.config, model_key)
            if entry is not None and entry.type == storage_type:
                return entry
        entry = self.config.default(storage_type) or self.config.default()
        return entry if entry is not None and entry.type == storage_type else None

    def _resolve_with_entry(self, entry: StorageEntry, path: str) -> Source:
        if entry.type == "s3":
            return Source("s3", path.lstrip("/"), bucket=entry.bucket, entry=entry)
        if entry.type == "pvc":
            claim = entry.get("name")
            if not claim:
                raise StorageError(f"pvc storage entry '{entry.key}' has no 'name' (claim name)")
            return Source("local", self._pvc_path(claim, path), in_place=True)
        if entry.type in ("http", "https"):
            base = entry.get("url")
            if not base:
                raise StorageError(f"http storage entry '{entry.key}' has no 'url'")
            url = base.rstrip("/") + "/" + path.lstrip("/") if path else base
            return Source("http", url, entry=entry)
        raise StorageError(
            f"storage type '{entry.type}' (storage key '{entry.key}') is not supported for pulling"
        )

    def _local_path(self, raw: str) -> str:
        if not raw:
            raise StorageError("empty model path")
        candidate = Path(raw)
        root = self.local_root
        if candidate.is_absolute():
            if candidate.exists() or root is None:
                return str(candidate)
            # ModelMesh quirk: "/models/x" is often meant relative to the storage root.
            return str(_secure_join(root, raw, f"model path '{raw}'"))
        if root is None:
            return str(Path.cwd() / candidate)
        return str(_secure_join(root, raw, f"model path '{raw}'"))

    def _pvc_path(self, claim: str, sub: str) -> str:
        if not claim or "/" in claim or claim in (".", ".."):
            raise StorageError(f"invalid PVC claim name '{claim}'")
        claim_root = self.pvc_root / claim
        return str(_secure_join(claim_root, sub, f"path '{sub}' in PVC '{claim}'"))

    @staticmethod
    def _check_local(resolved: str, original: str) -> Path:
        local = Path(resolved)
        if not local.exists():
            shown = original if original == resolved else f"{original} (looked at {resolved})"
            raise StorageNotFound(f"model path {shown} does not exist")
        return local

    # -- downloads --------------------------------------------------------------------------

    def _lock_for(self, model_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(model_id, threading.Lock())

    def _s3(self, entry: StorageEntry) -> S3Puller:
        ident = json.dumps([entry.key, entry.type, dict(entry.params)], sort_keys=True, default=str)
        with self._guard:
            puller = self._s3_clients.get(ident)
        if puller is None:
            puller = S3Puller(entry, self._s3_options, self.cache_dir / ".certs")
            with self._guard:
                puller = self._s3_clients.setdefault(ident, puller)
        return puller

    def _download(self, model_id: str, source: Source) -> Path:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        final = self.cache_path(model_id)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=self.cache_dir))
        try:
            if source.kind == "s3":
                assert source.entry is not None
                got = self._s3(source.entry).pull(source.bucket, source.location, tmp, self.max_bytes)
            else:
                got = self._pull_http(source, tmp)
            if got.is_file() and archive_kind(got.name):
                got = unpack_in_place(got, max_bytes=self.max_bytes, max_members=self.max_members)
            relative = got.relative_to(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("fetched model %s from %s into %s", model_id, source.kind, final)
        return final / relative

    def _pull_http(self, source: Source, tmp: Path) -> Path:
        entry = source.entry
        puller = HttpPuller(
            timeout=self._http_timeout,
            attempts=self._attempts,
            headers=parse_headers(entry.params.get("headers")) if entry else None,
            certificate=entry.get("certificate") if entry else "",
        )
        name = Path(urllib.parse.unquote(urllib.parse.urlsplit(source.location).path)).name
        if name in ("", ".", ".."):
            name = "_model"
        return puller.pull(source.location, tmp / name, self.max_bytes)


def make_fetcher(storage_config: Path | None, cache_dir: Path | None) -> ModelFetcher:
    """A fetcher from process settings: ``storage_config`` as for ``StorageConfig.load``; downloads
    under ``cache_dir`` (a new temp dir when None)."""
    import tempfile

    from .config import StorageConfig

    cache = cache_dir or Path(tempfile.mkdtemp(prefix="kserve-mesh-models-"))
    cache.mkdir(parents=True, exist_ok=True)
    return ModelFetcher(StorageConfig.load(storage_config), cache)
