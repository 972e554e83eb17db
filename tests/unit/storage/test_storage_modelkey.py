"""modelKey parsing (ModelMesh-serving's ModelKeyInfo JSON) and storage entry selection."""

import json

import pytest

from kserve_mesh.core.errors import InvalidArgument, StorageError
from kserve_mesh.storage import StorageConfig, parse_model_key, resolve_entry

CONFIG = StorageConfig.from_mapping({
    "myStorage": json.dumps({"type": "s3", "bucket": "configured", "endpoint_url": "http://m:9"}),
    "default": json.dumps({"type": "s3", "default_bucket": "fallback", "endpoint_url": "http://d:9"}),
    "default_pvc": json.dumps({"type": "pvc", "name": "shared"}),
})


def test_full_modelmesh_key() -> None:
    key = parse_model_key(json.dumps({
        "storage_key": "myStorage",
        "storage_params": {"bucket": "b"},
        "bucket": "old",
        "model_type": {"name": "sklearn", "version": "1"},
        "schema_path": "schema/s.json",
        "disk_size_bytes": 1234,
        "future_field": True,
    }))
    assert key.storage_key == "myStorage"
    assert dict(key.storage_params) == {"bucket": "b"}
    assert key.bucket == "old"
    assert key.model_type_name == "sklearn"
    assert key.schema_path == "schema/s.json"
    assert key.disk_size_bytes == 1234
    assert dict(key.extra) == {"future_field": True}


@pytest.mark.parametrize("raw", ["", "   ", None, "{}"])
def test_empty_keys(raw: str | None) -> None:
    key = parse_model_key(raw)
    assert key.is_empty == (raw != "{}")
    assert key.storage_key is None and key.schema_path is None and key.model_type is None


def test_bare_name_is_a_storage_key() -> None:
    assert parse_model_key("myStorage").storage_key == "myStorage"


def test_string_model_type_is_accepted() -> None:
    assert parse_model_key('{"model_type": "onnx"}').model_type_name == "onnx"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{nope", "not valid JSON"),
        ('{"storage_key": 3}', "'storage_key' must be a string"),
        ('{"storage_params": [1]}', "'storage_params' must be an object"),
        ('{"disk_size_bytes": "big"}', "'disk_size_bytes' is not a number"),
    ],
)
def test_bad_keys(raw: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_model_key(raw)


def test_explicit_key_with_params_override() -> None:
    key = '{"storage_key": "myStorage", "storage_params": {"bucket": "b2"}}'
    entry = resolve_entry(CONFIG, parse_model_key(key))
    assert entry is not None and entry.bucket == "b2" and entry.get("endpoint_url") == "http://m:9"


def test_deprecated_top_level_bucket_overrides_config() -> None:
    entry = resolve_entry(CONFIG, parse_model_key('{"storage_key": "myStorage", "bucket": "legacy"}'))
    assert entry is not None and entry.bucket == "legacy"
    both = resolve_entry(CONFIG, parse_model_key(
        '{"storage_key": "myStorage", "bucket": "legacy", "storage_params": {"bucket": "new"}}'))
    assert both is not None and both.bucket == "new"


def test_unknown_explicit_key_is_an_error() -> None:
    with pytest.raises(StorageError, match="unknown storage key 'ghost'"):
        resolve_entry(CONFIG, parse_model_key('{"storage_key": "ghost"}'))


def test_default_and_typed_default() -> None:
    plain = resolve_entry(CONFIG, parse_model_key('{"model_type": {"name": "x"}, "bucket": "bb"}'))
    assert plain is not None and plain.key == "default" and plain.bucket == "bb"
    typed = resolve_entry(CONFIG, parse_model_key('{"storage_params": {"type": "pvc"}}'))
    assert typed is not None and typed.key == "default_pvc" and typed.get("name") == "shared"


def test_params_only_without_config() -> None:
    entry = resolve_entry(StorageConfig.empty(), parse_model_key(
        '{"storage_params": {"type": "s3", "bucket": "p", "endpoint_url": "http://e:1"}}'))
    assert entry is not None and entry.type == "s3" and entry.bucket == "p"
    assert resolve_entry(StorageConfig.empty(), parse_model_key('{"bucket": "x"}')) is None
