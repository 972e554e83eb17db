"""Store value codecs: records <-> compact JSON bytes.

Values are JSON objects with short, stable field names; fields equal to their default are left
out, so a record costs tens of bytes. Decoding ignores fields it does not know (a newer instance may
add some: forward compatibility) and fills missing optional fields with defaults. Anything else
wrong (not JSON, not an object, a required field missing, a field of the wrong type) raises
``CorruptRecord`` naming the record kind and the field.

Layout (``?`` = optional)::

    model:    {"id", "type", "path"?, "key"?, "lastUsed", "autoDelete"?, "refCount"?,
               "instances"?: {instanceId: loadStartMs}, "failures"?: [[instanceId, timeMs, msg]],
               "minCopies"?, "maxCopies"?, "registered"?: registeredMs}
    vmodel:   {"id", "owner", "active", "target", "failed"?}
    instance: {"id", "endpoint", "capacity", "used", "models", "lruTime", "loadingThreads"?,
               "loading"?, "rpm"?, "shuttingDown"?, "startTime"?, "version"?, "zone"?, "labels"?,
               "victimValue"?}
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from kserve_mesh.core.errors import InternalError
from kserve_mesh.core.ids import InstanceId, ModelId, VModelId
from kserve_mesh.core.records import (
    FailureRecord,
    InstanceRecord,
    ModelInfo,
    ModelRecord,
    VModelRecord,
)

T = TypeVar("T")


class CorruptRecord(InternalError):
    """A store value could not be decoded as the record its key says it holds."""

    def __init__(self, kind: str, problem: str) -> None:
        super().__init__(f"corrupt {kind} record in the store: {problem}")
        self.kind = kind


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _load(kind: str, data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CorruptRecord(kind, f"not JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise CorruptRecord(kind, f"expected a JSON object, got {type(obj).__name__}")
    return obj


class _Fields:
    """Typed access to a decoded JSON object, raising ``CorruptRecord`` on a bad field."""

    def __init__(self, kind: str, obj: dict[str, Any]) -> None:
        self.kind = kind
        self.obj = obj

    def _typed(self, name: str, want: type[T], default: T | None) -> T:
        if name not in self.obj:
            if default is None:
                raise CorruptRecord(self.kind, f"required field {name!r} is missing")
            return default
        value = self.obj[name]
        # bool is an int subclass in Python: keep them apart.
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise CorruptRecord(
                self.kind, f"field {name!r} should be {want.__name__}, got {type(value).__name__}"
            )
        return value

    def text(self, name: str, default: str | None = None) -> str:
        return self._typed(name, str, default)

    def integer(self, name: str, default: int | None = None) -> int:
        return self._typed(name, int, default)

    def flag(self, name: str, default: bool | None = None) -> bool:
        return self._typed(name, bool, default)

    def mapping(self, name: str) -> dict[str, Any]:
        return self._typed(name, dict, {})

    def items(self, name: str) -> list[Any]:
        return self._typed(name, list, [])


def _put_nondefault(obj: dict[str, Any], name: str, value: Any, default: Any) -> None:
    if value != default:
        obj[name] = value


# ---- models ----


def encode_model(record: ModelRecord) -> bytes:
    obj: dict[str, Any] = {"id": record.model_id, "type": record.info.type}
    _put_nondefault(obj, "path", record.info.path, "")
    _put_nondefault(obj, "key", record.info.key, "")
    obj["lastUsed"] = record.last_used_ms
    _put_nondefault(obj, "autoDelete", record.auto_delete, False)
    _put_nondefault(obj, "refCount", record.refcount, 0)
    _put_nondefault(obj, "instances", dict(record.instances), {})
    failures = [[f.instance, f.time_ms, f.message] for f in record.failures]
    _put_nondefault(obj, "failures", failures, [])
    _put_nondefault(obj, "minCopies", record.min_copies, 0)
    _put_nondefault(obj, "maxCopies", record.max_copies, 0)
    _put_nondefault(obj, "registered", record.registered_ms, 0)
    return _dump(obj)


def decode_model(data: bytes) -> ModelRecord:
    f = _Fields("model", _load("model", data))
    instances: dict[InstanceId, int] = {}
    for instance, started in f.mapping("instances").items():
        if not isinstance(started, int) or isinstance(started, bool):
            raise CorruptRecord("model", f"instances[{instance!r}] should be int")
        instances[InstanceId(instance)] = started
    failures = []
    for entry in f.items("failures"):
        if (
            not isinstance(entry, list)
            or len(entry) < 3
            or not isinstance(entry[0], str)
            or not isinstance(entry[1], int)
            or isinstance(entry[1], bool)
            or not isinstance(entry[2], str)
        ):
            raise CorruptRecord("model", f"bad failure entry {entry!r}")
        failures.append(FailureRecord(InstanceId(entry[0]), entry[1], entry[2]))
    return ModelRecord(
        model_id=ModelId(f.text("id")),
        info=ModelInfo(type=f.text("type"), path=f.text("path", ""), key=f.text("key", "")),
        last_used_ms=f.integer("lastUsed"),
        auto_delete=f.flag("autoDelete", False),
        refcount=f.integer("refCount", 0),
        instances=instances,
        failures=tuple(failures),
        min_copies=f.integer("minCopies", 0),
        max_copies=f.integer("maxCopies", 0),
        registered_ms=f.integer("registered", 0),
    )


# ---- vmodels ----


def encode_vmodel(record: VModelRecord) -> bytes:
    obj: dict[str, Any] = {
        "id": record.vmodel_id,
        "owner": record.owner,
        "active": record.active,
        "target": record.target,
    }
    _put_nondefault(obj, "failed", record.failed, False)
    return _dump(obj)


def decode_vmodel(data: bytes) -> VModelRecord:
    f = _Fields("vmodel", _load("vmodel", data))
    return VModelRecord(
        vmodel_id=VModelId(f.text("id")),
        owner=f.text("owner", ""),
        active=ModelId(f.text("active")),
        target=ModelId(f.text("target")),
        failed=f.flag("failed", False),
    )


# ---- instances ----

_INSTANCE_OPTIONAL_INTS = (
    ("loadingThreads", "loading_threads", 1),
    ("loading", "loads_in_progress", 0),
    ("rpm", "requests_per_minute", 0),
    ("startTime", "start_time_ms", 0),
    ("victimValue", "victim_value", -1),  # issue 12; absent from older records
)


def encode_instance(record: InstanceRecord) -> bytes:
    obj: dict[str, Any] = {
        "id": record.instance_id,
        "endpoint": record.endpoint,
        "capacity": record.capacity_bytes,
        "used": record.used_bytes,
        "models": record.model_count,
        "lruTime": record.lru_time_ms,
    }
    for name, attr, default in _INSTANCE_OPTIONAL_INTS:
        _put_nondefault(obj, name, getattr(record, attr), default)
    _put_nondefault(obj, "shuttingDown", record.shutting_down, False)
    _put_nondefault(obj, "recycling", record.recycling, False)
    _put_nondefault(obj, "version", record.version, "")
    _put_nondefault(obj, "zone", record.zone, "")
    _put_nondefault(obj, "labels", list(record.labels), [])
    return _dump(obj)


def decode_instance(data: bytes) -> InstanceRecord:
    f = _Fields("instance", _load("instance", data))
    labels = f.items("labels")
    if not all(isinstance(label, str) for label in labels):
        raise CorruptRecord("instance", f"labels should be strings, got {labels!r}")
    optional = {attr: f.integer(name, default) for name, attr, default in _INSTANCE_OPTIONAL_INTS}
    return InstanceRecord(
        instance_id=InstanceId(f.text("id")),
        endpoint=f.text("endpoint"),
        capacity_bytes=f.integer("capacity"),
        used_bytes=f.integer("used"),
        model_count=f.integer("models"),
        lru_time_ms=f.integer("lruTime"),
        shutting_down=f.flag("shuttingDown", False),
        recycling=f.flag("recycling", False),
        version=f.text("version", ""),
        zone=f.text("zone", ""),
        labels=tuple(labels),
        **optional,
    )
