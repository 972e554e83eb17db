"""Where a model's files are, decided from (model path, modelKey, storage-config, policy).

:class:`StorageResolver` reproduces ModelMesh-serving's choice of storage (a URI scheme, else the
modelKey's storage entry, else a local path) and applies the :class:`~.policy.StoragePolicy` to the
result, so every path that reaches a puller is an allowed one. It does no network I/O, which is
why the mesh can run the same check when a model is registered (:meth:`StorageResolver.check_model`,
refusals as ``InvalidArgument``) as the fetcher runs before every fetch.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path

from kserve_mesh.core.errors import InvalidArgument, StorageError, StorageNotAllowed
from kserve_mesh.core.records import ModelInfo

from .config import StorageConfig, StorageEntry
from .http import redact_url as _redact
from .modelkey import ModelKey, parse_model_key, resolve_entry
from .policy import StoragePolicy

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_UNSUPPORTED = {"gs": "gcs", "gcs": "gcs", "wasb": "azure", "wasbs": "azure", "abfs": "azure",
                "abfss": "azure", "hdfs": "hdfs", "webhdfs": "hdfs", "hf": "huggingface"}


@dataclass(frozen=True)
class Source:
    """Where a model's files are: ``kind`` is local | s3 | http; the other fields per kind.

    ``location`` is the real local path (all links resolved), the s3 key, or the URL; ``roots``
    are the folders a local model's links must stay in; ``sha256`` is the pinned digest, if any.
    """

    kind: str
    location: str  # local path, s3 key, or URL
    bucket: str = ""
    entry: StorageEntry | None = None
    in_place: bool = False
    roots: tuple[Path, ...] = ()
    sha256: str | None = None


class StorageResolver:
    """Resolves model paths under one storage-config and one policy. Thread-safe (read-only)."""

    def __init__(self, config: StorageConfig, policy: StoragePolicy | None = None) -> None:
        self.config = config
        self.policy = policy if policy is not None else StoragePolicy()

    def resolve(self, path: str, key: str = "") -> Source:
        """The source of ``path`` given the modelKey ``key``; :class:`StorageNotAllowed` when the
        policy refuses it, :class:`StorageError` when it names no usable storage."""
        model_key = parse_model_key(key)
        path = path.strip()
        match = _SCHEME.match(path)
        if match:
            try:
                source = self._resolve_uri(match.group(1).lower(), path, model_key)
            except ValueError as exc:  # urlsplit: a malformed host or port
                raise StorageNotAllowed(f"model path '{path}' is not a valid URI ({exc}); give a well-formed "
                                        "URI or a local path") from exc
        else:
            entry = None if model_key.is_empty else resolve_entry(self.config, model_key)
            source = self._local(path) if entry is None else self._resolve_with_entry(entry, path)
        return replace(source, sha256=model_key.sha256) if model_key.sha256 else source

    def check(self, path: str, key: str = "") -> None:
        """The registration check: a path the policy refuses, a malformed modelKey (bad JSON, a
        malformed ``sha256``), or a plain local path (bare or ``file://``) that does not exist, is
        :class:`InvalidArgument`. Other storage problems (an unknown storage key, a PVC or remote
        object not there yet) are left for the load to report: they may be fixed before it."""
        try:
            source = self.resolve(path, key)
        except StorageNotAllowed as exc:
            raise InvalidArgument(str(exc)) from exc
        except StorageError:
            return
        if self._plain_local(path, key) and not os.path.exists(source.location):
            raise InvalidArgument(f"model path '{path.strip()}' does not exist")

    def _plain_local(self, path: str, key: str) -> bool:
        """Whether ``path`` names a local file itself (not a PVC, a URL or a storage entry's object)."""
        match = _SCHEME.match(path.strip())
        if match:
            return match.group(1).lower() == "file"
        model_key = parse_model_key(key)
        return model_key.is_empty or resolve_entry(self.config, model_key) is None

    def check_model(self, info: ModelInfo) -> None:
        """:meth:`check` for a model's registration info (``Instance(check_model=...)``)."""
        self.check(info.path, info.key)

    # -- resolution -------------------------------------------------------------------------

    def _resolve_uri(self, scheme: str, uri: str, model_key: ModelKey) -> Source:
        parts = urllib.parse.urlsplit(uri)
        if scheme == "file":
            host = parts.netloc if parts.netloc not in ("", "localhost") else ""
            raw = urllib.parse.unquote(host + parts.path) if host else urllib.parse.unquote(parts.path)
            return self._local(raw, uri)
        if scheme == "pvc":
            return self._pvc(parts.netloc, urllib.parse.unquote(parts.path))
        if scheme == "s3":
            entry = self._entry_of_type(model_key, "s3") or StorageEntry("anonymous", "s3")
            return Source("s3", urllib.parse.unquote(parts.path).lstrip("/"),
                          bucket=parts.netloc, entry=entry)
        if scheme in ("http", "https"):
            self.policy.check_url(uri, _redact(uri))
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
            return self._pvc(claim, path)
        if entry.type in ("http", "https"):
            base = entry.get("url")
            if not base:
                raise StorageError(f"http storage entry '{entry.key}' has no 'url'")
            url = base.rstrip("/") + "/" + path.lstrip("/") if path else base
            self.policy.check_url(url, _redact(url))
            return Source("http", url, entry=entry)
        raise StorageError(
            f"storage type '{entry.type}' (storage key '{entry.key}') is not supported for pulling"
        )

    def _local(self, raw: str, shown: str = "") -> Source:
        real, _root = self.policy.local_path(raw, shown)
        return Source("local", str(real), in_place=True, roots=self.policy.local_roots)

    def _pvc(self, claim: str, sub: str) -> Source:
        real, claim_root = self.policy.pvc_path(claim, sub, self.config)
        return Source("local", str(real), in_place=True, roots=(claim_root,))

