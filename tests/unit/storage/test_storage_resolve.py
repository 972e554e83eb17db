"""Path resolution: local, file://, pvc://, s3://, http(s):// and bare paths with a modelKey."""

import json
from pathlib import Path

import pytest

from kserve_mesh.core.errors import StorageError, StorageNotAllowed, StorageNotFound
from kserve_mesh.storage import ModelFetcher, StorageConfig, StoragePolicy, disk_usage, safe_name

CONFIG = StorageConfig.from_mapping({
    "minio": json.dumps({"type": "s3", "bucket": "models", "endpoint_url": "http://127.0.0.1:1"}),
    "claims": json.dumps({"type": "pvc", "name": "claim-a"}),
    "web": json.dumps({"type": "http", "url": "http://models.test/base/"}),
    "gcs": json.dumps({"type": "gcs"}),
})


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "root" / "sk" / "model").mkdir(parents=True)
    (tmp_path / "root" / "sk" / "model" / "model.joblib").write_bytes(b"m")
    (tmp_path / "pvc" / "claim-a" / "models" / "onnx").mkdir(parents=True)
    return tmp_path


def fetcher(tree: Path, config: StorageConfig = CONFIG) -> ModelFetcher:
    policy = StoragePolicy.of(allow_local_paths=[tree / "root"], pvc_mount_root=tree / "pvc")
    return ModelFetcher(config, tree / "cache", policy=policy)


def test_local_paths_are_used_in_place(tree: Path) -> None:
    f = fetcher(tree)
    model = tree / "root" / "sk" / "model"
    assert f.fetch("m1", str(model)) == model
    assert f.fetch("m1", "sk/model") == model
    assert f.fetch("m1", f"file://{model}") == model
    assert f.fetch("m1", "file://sk/model") == model
    f.release("m1")  # never deletes in-place files
    assert (model / "model.joblib").exists()
    assert not (tree / "cache").exists()


def test_an_absolute_path_is_never_re_rooted(tree: Path) -> None:
    # "/sk/model" is /sk/model, not root/sk/model: an absolute path outside the roots is refused.
    with pytest.raises(StorageNotAllowed, match="'/sk/model' refused: it is outside the allowed folders"):
        fetcher(tree).fetch("m", "/sk/model")


def test_missing_local_path_names_it(tree: Path) -> None:
    with pytest.raises(StorageNotFound, match="nope/model .*does not exist"):
        fetcher(tree).fetch("m", "nope/model")
    with pytest.raises(StorageNotAllowed, match="'/abs/missing' refused: local paths are not allowed"):
        ModelFetcher(StorageConfig.empty(), tree / "cache").fetch("m", "/abs/missing")


def test_relative_path_cannot_escape_root(tree: Path) -> None:
    with pytest.raises(StorageNotAllowed, match="'../pvc' refused: it contains '..'"):
        fetcher(tree).fetch("m", "../pvc")


def test_relative_path_is_looked_up_in_the_current_folder_first(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tree / "root" / "sk" / "sk" / "model").mkdir(parents=True)
    monkeypatch.chdir(tree / "root" / "sk")  # cwd/sk/model exists and is inside the root: it wins
    assert fetcher(tree).fetch("m", "sk/model") == tree / "root" / "sk" / "sk" / "model"
    monkeypatch.chdir(tree)  # cwd/sk/model is outside every root: the root's sk/model is used
    assert fetcher(tree).fetch("m", "sk/model") == tree / "root" / "sk" / "model"


def test_pvc_uri_and_pvc_entry(tree: Path) -> None:
    f = fetcher(tree)
    expected = tree / "pvc" / "claim-a" / "models" / "onnx"
    assert f.fetch("m", "pvc://claim-a/models/onnx") == expected
    assert f.fetch("m", "/models/onnx", key='{"storage_key": "claims"}') == expected
    with pytest.raises(StorageNotFound, match="does not exist"):
        f.fetch("m", "pvc://claim-a/absent")
    with pytest.raises(StorageNotAllowed, match="contains '..'"):
        f.fetch("m", "pvc://claim-a/../../root")
    with pytest.raises(StorageNotAllowed, match="invalid PVC claim name ''"):
        f.fetch("m", "pvc:///x")


def test_s3_resolution(tree: Path) -> None:
    f = fetcher(tree)
    src = f.resolve("s3://bucket-x/a/b", '{"storage_key": "minio"}')
    assert (src.kind, src.bucket, src.location) == ("s3", "bucket-x", "a/b")
    assert src.entry is not None and src.entry.key == "minio"
    bare = f.resolve("/sklearn/mnist", '{"storage_key": "minio", "storage_params": {"bucket": "b2"}}')
    assert (bare.kind, bare.bucket, bare.location) == ("s3", "b2", "sklearn/mnist")
    legacy = f.resolve("p", '{"storage_key": "minio", "bucket": "old"}')
    assert legacy.bucket == "old"
    anonymous = fetcher(tree, StorageConfig.empty()).resolve("s3://b/k")
    assert anonymous.entry is not None and anonymous.entry.key == "anonymous"


def test_default_entry_serves_s3_uris(tree: Path) -> None:
    config = StorageConfig.from_mapping({"default": json.dumps({"type": "s3", "endpoint_url": "http://x:1"})})
    src = fetcher(tree, config).resolve("s3://b/k")
    assert src.entry is not None and src.entry.key == "default"
    # A bare path with an empty key stays local even when a default S3 entry exists.
    assert fetcher(tree, config).resolve("sk/model").kind == "local"
    # ... but a ModelMesh modelKey routes it to the default entry, as ModelMesh-serving does.
    assert fetcher(tree, config).resolve("sk/model", '{"model_type": {"name": "sklearn"}}').kind == "s3"


def test_http_resolution(tree: Path) -> None:
    f = fetcher(tree)
    assert f.resolve("https://h.test/m.tgz").location == "https://h.test/m.tgz"
    via_entry = f.resolve("/dir/m.zip", '{"storage_key": "web"}')
    assert (via_entry.kind, via_entry.location) == ("http", "http://models.test/base/dir/m.zip")


def test_unknown_scheme_and_key_and_unsupported_type(tree: Path) -> None:
    f = fetcher(tree)
    with pytest.raises(StorageError, match="unknown storage scheme 'ftp://' in 'ftp://h/m'"):
        f.fetch("m", "ftp://h/m")
    with pytest.raises(StorageError, match="'gs://' \\(gcs\\).*not supported"):
        f.fetch("m", "gs://b/m")
    with pytest.raises(StorageError, match="unknown storage key 'ghost'"):
        f.fetch("m", "x", key='{"storage_key": "ghost"}')
    with pytest.raises(StorageError, match="storage type 'gcs' \\(storage key 'gcs'\\)"):
        f.fetch("m", "x", key="gcs")
    with pytest.raises(StorageError, match="no bucket for S3 path"):
        fetcher(tree, StorageConfig.from_mapping({"s": '{"type": "s3", "endpoint_url": "http://127.0.0.1:1"}'})
                ).fetch("m", "k", key="s")


def test_safe_name_is_unique_and_harmless() -> None:
    a, b = safe_name("isvc/model:1"), safe_name("isvc_model_1")
    assert a != b and "/" not in a and ":" not in a
    assert safe_name("../..").startswith("model-")
    assert len(safe_name("x" * 500)) < 100


def test_disk_usage_counts_files(tree: Path) -> None:
    model = tree / "root" / "sk" / "model"
    (model / "extra.bin").write_bytes(b"0" * 100)
    assert disk_usage(model) == 101
    assert disk_usage(model / "extra.bin") == 100
