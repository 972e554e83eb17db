"""StorageConfig: ModelMesh storage-config Secret parsing from a mapping, a directory and a file."""

import json
from pathlib import Path

import pytest

from kserve_mesh.core.errors import StorageError
from kserve_mesh.storage import StorageConfig

S3 = {
    "type": "s3",
    "access_key_id": "AKIA",
    "secret_access_key": "s3cr3t",
    "endpoint_url": "http://minio:9000",
    "region": "us-south",
    "default_bucket": "models",
}


def test_from_mapping_parses_json_strings() -> None:
    config = StorageConfig.from_mapping({"myStorage": json.dumps(S3)})
    entry = config.require("myStorage")
    assert entry.type == "s3"
    assert entry.get("endpoint_url") == "http://minio:9000"
    assert entry.bucket == "models"  # default_bucket fills in for bucket
    assert len(config) == 1


def test_bucket_wins_over_default_bucket() -> None:
    config = StorageConfig.from_mapping({"k": json.dumps({**S3, "bucket": "explicit"})})
    assert config.require("k").bucket == "explicit"


def test_repr_hides_secrets() -> None:
    entry = StorageConfig.from_mapping({"k": json.dumps(S3)}).require("k")
    shown = repr(entry)
    assert "s3cr3t" not in shown and "AKIA" not in shown
    assert "minio:9000" in shown


def test_bad_json_names_the_key() -> None:
    with pytest.raises(StorageError, match="'broken' is not valid JSON"):
        StorageConfig.from_mapping({"broken": '{"type": "s3", '})


def test_non_object_and_missing_type_are_refused() -> None:
    with pytest.raises(StorageError, match="'listy' must be a JSON object"):
        StorageConfig.from_mapping({"listy": "[1, 2]"})
    with pytest.raises(StorageError, match="'typeless' has no 'type'"):
        StorageConfig.from_mapping({"typeless": '{"bucket": "b"}'})


def test_unknown_key_is_named() -> None:
    config = StorageConfig.from_mapping({"a": json.dumps(S3)})
    with pytest.raises(StorageError, match="unknown storage key 'nope'.*a"):
        config.require("nope")


def test_default_lookup() -> None:
    config = StorageConfig.from_mapping({
        "default": json.dumps(S3),
        "default_pvc": json.dumps({"type": "pvc", "name": "claim"}),
    })
    assert config.default().key == "default"
    assert config.default("pvc").get("name") == "claim"
    assert config.default("http") is None
    assert StorageConfig.empty().default() is None


def test_other_types_parse(caplog: pytest.LogCaptureFixture) -> None:
    config = StorageConfig.from_mapping({
        "g": json.dumps({"type": "gcs", "private_key": "x"}),
        "a": json.dumps({"type": "azure", "account_name": "acc"}),
        "h": json.dumps({"type": "http", "url": "https://example.test/models"}),
        "odd": json.dumps({"type": "ftp"}),
    })
    assert {e.type for e in config.entries.values()} == {"gcs", "azure", "http", "ftp"}
    assert "unknown type 'ftp'" in caplog.text


def test_from_dir_reads_a_mounted_secret(tmp_path: Path) -> None:
    (tmp_path / "myStorage").write_text(json.dumps(S3))
    (tmp_path / "localMinIO").write_text(json.dumps({**S3, "bucket": "other"}))
    (tmp_path / "..data").mkdir()  # Kubernetes bookkeeping; ignored
    (tmp_path / ".hidden").write_text("not json")
    config = StorageConfig.from_dir(tmp_path)
    assert sorted(config.entries) == ["localMinIO", "myStorage"]
    assert config.require("localMinIO").bucket == "other"


def test_from_dir_missing(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        StorageConfig.from_dir(tmp_path / "absent")


def test_from_file_json_and_yaml(tmp_path: Path) -> None:
    json_file = tmp_path / "storage.json"
    json_file.write_text(json.dumps({"a": S3, "b": json.dumps({"type": "pvc", "name": "c"})}))
    config = StorageConfig.from_file(json_file)
    assert config.require("a").type == "s3" and config.require("b").get("name") == "c"

    yaml_file = tmp_path / "storage.yaml"
    yaml_file.write_text("default:\n  type: s3\n  bucket: models\n  endpoint_url: http://x:1\n")
    assert StorageConfig.from_file(yaml_file).default().bucket == "models"

    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert len(StorageConfig.from_file(empty)) == 0


def test_from_file_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot read storage config file"):
        StorageConfig.from_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(StorageError, match="cannot be parsed"):
        StorageConfig.from_file(bad)
    listy = tmp_path / "list.json"
    listy.write_text("[]")
    with pytest.raises(StorageError, match="must map storage keys"):
        StorageConfig.from_file(listy)
