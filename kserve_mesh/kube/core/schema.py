"""Small typed readers over decoded YAML/JSON, each naming the field path it reads.

The kserve model classes drop unknown fields and accept wrong types; these readers refuse both, and
every refusal is an ``InvalidSpec`` whose message starts with the full field path
(``spec.predictor.model.modelFormat.name: ...``). Resource parsers (``parse.py``) are written
with them field by field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kserve_mesh.kube.core.errors import InvalidSpec


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def mapping(value: Any, path: str, allowed: Iterable[str] | None = None) -> dict[str, Any]:
    """``value`` as an object; with ``allowed``, any other field is an error naming it."""
    if not isinstance(value, dict):
        raise InvalidSpec(path, f"must be an object, got {_kind_of(value)}")
    for key in value:
        if not isinstance(key, str):
            raise InvalidSpec(path, f"field names must be strings, got {key!r}")
    if allowed is not None:
        known = frozenset(allowed)
        unknown = sorted(k for k in value if k not in known)
        if unknown:
            raise InvalidSpec(join(path, unknown[0]), "unknown field")
    return value


def opt_mapping(obj: Mapping[str, Any], key: str, path: str,
                allowed: Iterable[str] | None = None) -> dict[str, Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    return mapping(value, join(path, key), allowed)


def opt_str(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidSpec(join(path, key), f"must be a string, got {_kind_of(value)}")
    return value


def req_str(obj: Mapping[str, Any], key: str, path: str) -> str:
    value = opt_str(obj, key, path)
    if value is None or not value.strip():
        raise InvalidSpec(join(path, key), "is required")
    return value


def opt_bool(obj: Mapping[str, Any], key: str, path: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise InvalidSpec(join(path, key), f"must be true or false, got {_kind_of(value)}")
    return value


def opt_int(obj: Mapping[str, Any], key: str, path: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec(join(path, key), f"must be an integer, got {_kind_of(value)}")
    return value


def opt_list(obj: Mapping[str, Any], key: str, path: str) -> list[Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidSpec(join(path, key), f"must be a list, got {_kind_of(value)}")
    return value


def opt_str_map(obj: Mapping[str, Any], key: str, path: str) -> dict[str, str] | None:
    """A ``map[string]string`` (labels, annotations, storage parameters)."""
    value = opt_mapping(obj, key, path)
    if value is None:
        return None
    for k, v in value.items():
        if not isinstance(v, str):
            raise InvalidSpec(join(join(path, key), k), f"must be a string, got {_kind_of(v)}")
    return dict(value)


def opt_str_list(obj: Mapping[str, Any], key: str, path: str) -> list[str] | None:
    items = opt_list(obj, key, path)
    if items is None:
        return None
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidSpec(join(join(path, key), i), f"must be a string, got {_kind_of(item)}")
    return list(items)
