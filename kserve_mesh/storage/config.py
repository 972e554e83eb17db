"""Storage credentials and endpoints, in ModelMesh's ``storage-config`` Secret format.

ModelMesh-serving mounts one Secret whose keys are storage names and whose values are JSON
objects, for example::

    myStorage: {"type": "s3", "access_key_id": "...", "secret_access_key": "...",
                "endpoint_url": "http://minio:9000", "region": "us-east-1", "bucket": "models"}

This module reads that format from a mapping, a mounted Secret directory (one file per key),
or a single JSON/YAML file, and hands out frozen :class:`StorageEntry` objects. The entry named
``default`` (or ``default_<type>``) is the fallback when a model names no storage key. Secret
values are never logged and never appear in ``repr``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kserve_mesh.core.errors import StorageError

log = logging.getLogger(__name__)

DEFAULT_KEY = "default"
KNOWN_TYPES = frozenset({"s3", "http", "https", "pvc", "gcs", "azure"})
_SECRET_FIELDS = frozenset({"secret_access_key", "access_key_id", "certificate", "private_key",
                            "connection_string", "account_key", "client_secret"})


@dataclass(frozen=True)
class StorageEntry:
    """One storage definition: its ``type`` plus every other field as a string-valued mapping."""

    key: str
    type: str
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, name: str, default: str = "") -> str:
        value = self.params.get(name)
        return default if value is None else str(value)

    @property
    def bucket(self) -> str:
        # ModelMesh: ``bucket`` wins; the deprecated ``default_bucket`` fills in when absent.
        return self.get("bucket") or self.get("default_bucket")

    def with_overrides(self, overrides: Mapping[str, Any]) -> StorageEntry:
        """Return a copy with per-model parameters (``storage_params``) applied on top."""
        if not overrides:
            return self
        merged = dict(self.params)
        merged.update({k: v for k, v in overrides.items() if k != "type"})
        new_type = str(overrides.get("type") or self.type)
        return StorageEntry(self.key, new_type, MappingProxyType(merged))

    def __repr__(self) -> str:
        shown = {k: ("***" if k in _SECRET_FIELDS else v) for k, v in self.params.items()}
        return f"StorageEntry(key={self.key!r}, type={self.type!r}, params={shown!r})"


def parse_entry(key: str, raw: str | bytes | Mapping[str, Any]) -> StorageEntry:
    """Parse one Secret value (a JSON string or an already-decoded mapping) for ``key``."""
    if isinstance(raw, Mapping):
        data: Any = dict(raw)
    else:
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StorageError(
                f"storage config entry '{key}' is not valid JSON: {exc.msg} "
                f"(line {exc.lineno}, column {exc.colno})"
            ) from exc
    if not isinstance(data, dict):
        raise StorageError(
            f"storage config entry '{key}' must be a JSON object, got {type(data).__name__}"
        )
    storage_type = str(data.pop("type", "") or "").strip().lower()
    if not storage_type:
        raise StorageError(f"storage config entry '{key}' has no 'type' field")
    if storage_type not in KNOWN_TYPES:
        log.warning("storage config entry '%s' has unknown type '%s'", key, storage_type)
    return StorageEntry(key, storage_type, MappingProxyType(data))


@dataclass(frozen=True)
class StorageConfig:
    """All storage entries by key. Build with one of the ``from_*`` constructors."""

    entries: Mapping[str, StorageEntry] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def empty(cls) -> StorageConfig:
        return cls()

    @classmethod
    def from_mapping(cls, data: Mapping[str, str | bytes | Mapping[str, Any]]) -> StorageConfig:
        """From Secret ``stringData``-like data: storage key → JSON string (or decoded dict)."""
        entries = {str(k): parse_entry(str(k), v) for k, v in data.items()}
        return cls(MappingProxyType(entries))

    @classmethod
    def load(cls, path: str | Path | None) -> StorageConfig:
        """A mounted Secret folder, a JSON/YAML file, or (None) an empty config."""
        if path is None:
            return cls.empty()
        return cls.from_dir(path) if Path(path).is_dir() else cls.from_file(path)

    @classmethod
    def from_dir(cls, path: str | Path) -> StorageConfig:
        """From a mounted Secret: one file per key. Kubernetes' ``..data`` bookkeeping is skipped."""
        root = Path(path)
        if not root.is_dir():
            raise StorageError(f"storage config directory '{root}' does not exist")
        data: dict[str, bytes] = {}
        for item in sorted(root.iterdir()):
            if item.name.startswith(".") or not item.is_file():
                continue
            data[item.name] = item.read_bytes()
        return cls.from_mapping(data)

    @classmethod
    def from_file(cls, path: str | Path) -> StorageConfig:
        """From one JSON or YAML file mapping key → entry (an object, or a JSON string)."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise StorageError(f"cannot read storage config file '{file}': {exc.strerror}") from exc
        try:
            if file.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:  # yaml.YAMLError / json.JSONDecodeError
            raise StorageError(f"storage config file '{file}' cannot be parsed: {exc}") from exc
        if data is None:
            return cls.empty()
        if not isinstance(data, dict):
            raise StorageError(f"storage config file '{file}' must map storage keys to entries")
        return cls.from_mapping(data)

    def get(self, key: str) -> StorageEntry | None:
        return self.entries.get(key)

    def require(self, key: str) -> StorageEntry:
        """The entry for ``key``; an unknown key is a :class:`StorageError` naming it."""
        entry = self.entries.get(key)
        if entry is None:
            known = ", ".join(sorted(self.entries)) or "none"
            raise StorageError(f"unknown storage key '{key}' (configured keys: {known})")
        return entry

    def default(self, storage_type: str = "") -> StorageEntry | None:
        """``default_<type>`` when a type is known, else ``default`` (ModelMesh's fallback)."""
        if storage_type:
            return self.entries.get(f"{DEFAULT_KEY}_{storage_type}")
        return self.entries.get(DEFAULT_KEY)

    def __len__(self) -> int:
        return len(self.entries)
