"""Get a model's files onto local disk: the one entry point the mesh and runtimes call.

:class:`ModelFetcher` turns (model id, model path, modelKey) into a local path:

=============================  ==============================================================
``/abs/path``, ``rel/path``    local file or folder inside an allowed root, used in place
``file:///abs``, ``file://rel`` the same (a relative path: the current folder, then each root)
``pvc://claim/sub/path``       ``pvc_mount_root/claim/sub/path``, used in place
``s3://bucket/key``            downloaded (one object, or every object under a "folder" prefix)
``http(s)://host/file``        downloaded, streamed with a size cap
bare path + modelKey/config    the storage entry's type decides (s3 bucket, pvc ``name``,
                               http ``url`` base), as ModelMesh-serving's puller does
=============================  ==============================================================

Every path is checked against the :class:`~.policy.StoragePolicy` (allowed local roots, PVC
claims, http hosts) when it is resolved; local folders are also checked for symbolic links that
lead outside the roots on every fetch. :meth:`ModelFetcher.check` is the same check for a
registration: refusals become ``InvalidArgument`` there.

Downloads land in ``cache_dir/<safe name of model id>/`` atomically: they are written into a
temporary sibling directory and renamed into place only when complete, so a crash never leaves a
half model that looks whole. A ``.tar.gz``/``.tgz``/``.tar``/``.zip``, downloaded or local, is
extracted safely (see :mod:`.archive`) into the cache, never next to a local archive. When the
modelKey pins a ``sha256`` (see :mod:`.digest`), what was fetched (an archive before unpacking)
must match it. Fetches of different models run in parallel; fetches of the same model are
serialised by a per-model lock. ``release`` deletes what ``fetch`` put in the cache and never
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
from collections.abc import Callable
from pathlib import Path

from kserve_mesh.core.errors import InvalidArgument, MeshError, StorageError, StorageNotFound
from kserve_mesh.core.records import ModelInfo

from .archive import DEFAULT_MAX_MEMBERS, archive_kind, unpack_in_place
from .config import StorageConfig
from .digest import verify_digest
from .http import HttpPuller, parse_headers
from .policy import StoragePolicy
from .resolve import Source, StorageResolver
from .s3 import S3Options, S3Puller

log = logging.getLogger(__name__)

GiB = 1 << 30

__all__ = ["GiB", "ModelFetcher", "Source", "disk_usage", "make_fetcher", "model_check", "safe_name"]

Produce = Callable[[Path], Path]  # fills a temporary folder, returns what it fetched


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


class ModelFetcher:
    """Fetches model files to local disk under a :class:`StoragePolicy`. Thread-safe; one per
    process is enough. Without a policy nothing local is allowed (no roots)."""

    def __init__(
        self,
        config: StorageConfig,
        cache_dir: Path,
        *,
        policy: StoragePolicy | None = None,
        max_bytes: int = 4 * GiB,
        max_members: int = DEFAULT_MAX_MEMBERS,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 3,
    ) -> None:
        self.config = config
        self.policy = policy if policy is not None else StoragePolicy()
        self.resolver = StorageResolver(config, self.policy)
        self.cache_dir = Path(cache_dir)
        self.max_bytes = max_bytes
        self.max_members = max_members
        self._s3_options = S3Options(connect_timeout, read_timeout, max_attempts)
        self._http_timeout = max(connect_timeout, read_timeout)
        self._attempts = max_attempts
        self._s3_clients: dict[str, S3Puller] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # -- public API -------------------------------------------------------------------------

    def fetch(self, model_id: str, path: str, key: str = "") -> Path:
        """Return a local path holding the model's files, downloading or unpacking them if needed."""
        source = self.resolve(path, key)
        if source.kind == "local":
            return self._fetch_local(model_id, source, path)
        with self._lock_for(model_id):
            return self._into_cache(model_id, source, self._puller(source))

    def release(self, model_id: str) -> None:
        """Delete what ``fetch`` put in the cache for ``model_id`` (no-op for in-place paths)."""
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
        """Decide where ``path`` lives, given the modelKey ``key``, under the policy."""
        return self.resolver.resolve(path, key)

    def check(self, path: str, key: str = "") -> None:
        """The registration check (see :meth:`StorageResolver.check`)."""
        self.resolver.check(path, key)

    # -- local files ------------------------------------------------------------------------

    def _fetch_local(self, model_id: str, source: Source, original: str) -> Path:
        local = Path(source.location)
        if not local.exists():
            shown = original if original == source.location else f"{original} (looked at {local})"
            raise StorageNotFound(f"model path {shown} does not exist")
        self.policy.check_links_inside(local, source.roots, original)
        if local.is_file() and archive_kind(local.name):
            with self._lock_for(model_id):
                return self._into_cache(model_id, source, lambda tmp: self._copy_archive(local, tmp))
        verify_digest(local, source.sha256, original)
        return local

    def _copy_archive(self, archive: Path, tmp: Path) -> Path:
        """A private copy of a local archive: the bytes checked are the bytes unpacked."""
        size = archive.stat().st_size
        if size > self.max_bytes:
            raise StorageError(f"archive {archive.name} is {size} bytes, more than the limit {self.max_bytes}")
        target = tmp / archive.name
        shutil.copyfile(archive, target)
        return target

    # -- downloads --------------------------------------------------------------------------

    def _lock_for(self, model_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(model_id, threading.Lock())

    def _s3(self, source: Source) -> S3Puller:
        entry = source.entry
        assert entry is not None
        ident = json.dumps([entry.key, entry.type, dict(entry.params)], sort_keys=True, default=str)
        with self._guard:
            puller = self._s3_clients.get(ident)
        if puller is None:
            puller = S3Puller(entry, self._s3_options, self.cache_dir / ".certs")
            with self._guard:
                puller = self._s3_clients.setdefault(ident, puller)
        return puller

    def _puller(self, source: Source) -> Produce:
        if source.kind == "s3":
            return lambda tmp: self._s3(source).pull(source.bucket, source.location, tmp, self.max_bytes)
        return lambda tmp: self._pull_http(source, tmp)

    def _into_cache(self, model_id: str, source: Source, produce: Produce) -> Path:
        """Run ``produce(tmp)`` in a fresh temporary folder of the cache, check the pinned digest,
        unpack an archive, then move the folder into place at once."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        final = self.cache_path(model_id)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=self.cache_dir))
        try:
            got = produce(tmp)
            verify_digest(got, source.sha256, model_id)
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
            check_url=self.policy.check_url,
        )
        name = Path(urllib.parse.unquote(urllib.parse.urlsplit(source.location).path)).name
        if name in ("", ".", ".."):
            name = "_model"
        return puller.pull(source.location, tmp / name, self.max_bytes)


def make_fetcher(storage_config: Path | None, cache_dir: Path | None,
                 policy: StoragePolicy | None = None) -> ModelFetcher:
    """A fetcher from process settings: ``storage_config`` as for ``StorageConfig.load``; downloads
    under ``cache_dir`` (a new temp dir when None); ``policy`` says what may be read (default: no
    local path, only configured PVC claims, any http host)."""
    cache = cache_dir or Path(tempfile.mkdtemp(prefix="kserve-mesh-models-"))
    cache.mkdir(parents=True, exist_ok=True)
    return ModelFetcher(StorageConfig.load(storage_config), cache, policy=policy)


def model_check(storage_config: Path | None, policy: StoragePolicy, *,
                check_type: Callable[[ModelInfo], object] | None = None) -> Callable[[ModelInfo], None]:
    """The registration check of a mesh instance (``Instance(check_model=...)``): refuses, as
    ``InvalidArgument``, a model whose path the policy refuses or does not exist (a local path),
    whose modelKey is malformed, or whose type and key ``check_type`` refuses (by raising a
    ``MeshError``; given where the runtime's model types and key fields are known)."""
    resolver = StorageResolver(StorageConfig.load(storage_config), policy)
    if check_type is None:
        return resolver.check_model

    def check(info: ModelInfo) -> None:
        try:
            check_type(info)
        except MeshError as exc:
            raise InvalidArgument(exc.message) from exc
        resolver.check_model(info)

    return check
