"""The ``modelKey`` that ModelMesh-serving attaches to each registered model, and what it selects.

ModelMesh-serving registers a model with ``ModelInfo.key`` set to a JSON object (the runtime
adapter's ``ModelKeyInfo``)::

    {"storage_key": "myStorage", "storage_params": {"type": "s3", "bucket": "b"},
     "bucket": "b", "model_type": {"name": "sklearn", "version": "1"},
     "schema_path": "schemas/s.json", "disk_size_bytes": 1234}

kserve-mesh adds one optional field: ``"sha256": "<64 hex digits>"`` pins the model's files (see
:mod:`.digest`); a malformed digest is ``InvalidArgument``.

Every field is optional, and an empty key is fine: with no key at all a bare path is local;
with any JSON key (even ``{}``) the storage entry is chosen as ModelMesh-serving's puller does.
:func:`resolve_entry` reproduces the adapter's choice: an explicit ``storage_key`` must exist;
otherwise ``default_<type>`` (when ``storage_params.type`` is set) or ``default``; then
``storage_params`` override the entry's fields and the deprecated top-level ``bucket``
overrides the bucket. As a convenience a key that is not JSON (``"myStorage"``) is read as a
bare storage key name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kserve_mesh.core.errors import InvalidArgument

from .config import StorageConfig, StorageEntry
from .digest import parse_digest


@dataclass(frozen=True)
class ModelKey:
    """The parsed ``modelKey``. ``extra`` keeps unknown fields so they can be passed on."""

    storage_key: str | None = None
    storage_params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    bucket: str = ""
    model_type: Mapping[str, Any] | None = None
    schema_path: str | None = None
    disk_size_bytes: int | None = None
    sha256: str | None = None  # the pinned digest (lower-case hex), see .digest
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    present: bool = False  # False when no key was given at all (empty string or None)

    @property
    def is_empty(self) -> bool:
        """No key given: a bare path then means a local path, whatever the config holds."""
        return not self.present

    @property
    def model_type_name(self) -> str:
        return str((self.model_type or {}).get("name", "") or "")


def parse_model_key(key: str | Mapping[str, Any] | None) -> ModelKey:
    """Parse a modelKey given as JSON text, a decoded mapping, a bare storage key name, or nothing."""
    if key is None:
        return ModelKey()
    if isinstance(key, Mapping):
        data: dict[str, Any] = dict(key)
    else:
        text = key.strip()
        if not text:
            return ModelKey()
        if not text.startswith("{"):
            return ModelKey(storage_key=text, present=True)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"modelKey is not valid JSON: {exc.msg} (column {exc.colno})") from exc
        if not isinstance(data, dict):
            raise InvalidArgument("modelKey must be a JSON object")
    storage_key = data.pop("storage_key", None)
    if storage_key is not None and not isinstance(storage_key, str):
        raise InvalidArgument("modelKey field 'storage_key' must be a string")
    params = data.pop("storage_params", None) or {}
    if not isinstance(params, dict):
        raise InvalidArgument("modelKey field 'storage_params' must be an object")
    model_type = data.pop("model_type", None)
    if model_type is not None and not isinstance(model_type, dict):
        model_type = {"name": str(model_type)}
    schema_path = data.pop("schema_path", None)
    size = data.pop("disk_size_bytes", None)
    pinned = data.pop("sha256", None)
    sha256 = parse_digest(pinned) if pinned is not None else None
    try:
        disk_size = int(size) if size is not None else None
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"modelKey field 'disk_size_bytes' is not a number: {size!r}") from exc
    return ModelKey(
        storage_key=storage_key or None,
        storage_params=MappingProxyType({str(k): str(v) for k, v in params.items()}),
        bucket=str(data.pop("bucket", "") or ""),
        model_type=MappingProxyType(dict(model_type)) if model_type is not None else None,
        schema_path=str(schema_path) if schema_path else None,
        disk_size_bytes=disk_size,
        sha256=sha256,
        extra=MappingProxyType(data),
        present=True,
    )


def resolve_entry(config: StorageConfig, key: ModelKey) -> StorageEntry | None:
    """The storage entry a model uses, with its per-model overrides; ``None`` if nothing applies.

    Raises :class:`~kserve_mesh.core.errors.StorageError` when an explicit storage key is unknown.
    """
    params = dict(key.storage_params)
    if key.storage_key is not None:
        entry: StorageEntry | None = config.require(key.storage_key)
    else:
        wanted_type = params.get("type", "").lower()
        entry = config.default(wanted_type) if wanted_type else None
        if entry is None:
            fallback = config.default()
            if fallback is not None and (not wanted_type or fallback.type == wanted_type):
                entry = fallback
    if entry is None:
        if not params.get("type"):
            return None
        entry = StorageEntry("storage_params", params["type"].lower())
    if key.bucket:
        params.setdefault("bucket", key.bucket)
    return entry.with_overrides(params)
