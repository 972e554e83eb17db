"""ModelFetcher against real S3-protocol servers: moto_server (content) and nanio (credentials)."""

from __future__ import annotations

import io
import json
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from storage_servers import S3Server, free_port

from kserve_mesh.core.errors import (
    StorageAccessDenied,
    StorageError,
    StorageNotFound,
    StorageUnreachable,
    UnsafeArchive,
)
from kserve_mesh.storage import ModelFetcher, StorageConfig

pytestmark = pytest.mark.integration

BUCKET = "models"


def _targz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _config(server: S3Server, *, secret: str | None = None, access: str | None = None) -> StorageConfig:
    entry = {
        "type": "s3",
        "access_key_id": access or server.access_key,
        "secret_access_key": secret or server.secret_key,
        "endpoint_url": server.endpoint,
        "region": "us-east-1",
        "default_bucket": BUCKET,
    }
    return StorageConfig.from_mapping({"localMinIO": json.dumps(entry)})


def _fetcher(config: StorageConfig, cache: Path, **kw: object) -> ModelFetcher:
    return ModelFetcher(config, cache, connect_timeout=1.0, read_timeout=5.0, max_attempts=2, **kw)


@pytest.fixture(scope="module")
def s3(moto: S3Server) -> S3Server:
    client = moto.client()
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="sklearn/model.joblib", Body=b"joblib-bytes")
    client.put_object(Bucket=BUCKET, Key="onnx/mnist/", Body=b"")  # folder marker
    client.put_object(Bucket=BUCKET, Key="onnx/mnist/model.onnx", Body=b"onnx-bytes")
    client.put_object(Bucket=BUCKET, Key="onnx/mnist/config/conf.json", Body=b"{}")
    client.put_object(Bucket=BUCKET, Key="onnx/mnist-v2/other.onnx", Body=b"not mine")
    client.put_object(Bucket=BUCKET, Key="archives/xgb.tar.gz",
                      Body=_targz({"xgb/model.json": b"xgb", "xgb/README": b"r"}))
    client.put_object(Bucket=BUCKET, Key="archives/evil.tar.gz", Body=_targz({"../../escape": b"x"}))
    client.put_object(Bucket=BUCKET, Key="big/blob.bin", Body=b"0" * 4096)
    return moto


def test_single_object_by_uri(s3: S3Server, tmp_path: Path) -> None:
    f = _fetcher(_config(s3), tmp_path / "cache")
    got = f.fetch("isvc-sk", "s3://models/sklearn/model.joblib", key='{"storage_key": "localMinIO"}')
    assert got.read_bytes() == b"joblib-bytes"
    assert got.name == "model.joblib"
    assert got.is_relative_to(f.cache_path("isvc-sk"))
    f.release("isvc-sk")
    assert not f.cache_path("isvc-sk").exists()


def test_folder_prefix_with_modelmesh_key(s3: S3Server, tmp_path: Path) -> None:
    f = _fetcher(_config(s3), tmp_path / "cache")
    key = json.dumps({"storage_key": "localMinIO", "storage_params": {"bucket": BUCKET},
                      "model_type": {"name": "onnx"}})
    got = f.fetch("mnist", "/onnx/mnist", key=key)  # leading slash, as ModelMesh users write it
    assert got.is_dir()
    files = sorted(p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file())
    assert files == ["config/conf.json", "model.onnx"]  # not onnx/mnist-v2/*


def test_default_bucket_from_config_and_bare_key_name(s3: S3Server, tmp_path: Path) -> None:
    f = _fetcher(_config(s3), tmp_path / "cache")
    assert f.fetch("sk", "sklearn/model.joblib", key="localMinIO").read_bytes() == b"joblib-bytes"


def test_archive_is_extracted(s3: S3Server, tmp_path: Path) -> None:
    f = _fetcher(_config(s3), tmp_path / "cache")
    got = f.fetch("xgb", "s3://models/archives/xgb.tar.gz", key="localMinIO")
    assert got.is_dir() and got.name == "xgb"
    assert (got / "xgb" / "model.json").read_bytes() == b"xgb"
    assert not list(got.parent.glob("*.tar.gz"))


def test_unsafe_archive_leaves_nothing(s3: S3Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    f = _fetcher(_config(s3), cache)
    with pytest.raises(UnsafeArchive, match="'../../escape'"):
        f.fetch("evil", "s3://models/archives/evil.tar.gz", key="localMinIO")
    assert list(cache.iterdir()) == []
    assert not (tmp_path / "escape").exists()


def test_missing_object_and_bucket(s3: S3Server, tmp_path: Path) -> None:
    f = _fetcher(_config(s3), tmp_path / "cache")
    with pytest.raises(StorageNotFound, match="s3://models/sklearn/absent.joblib"):
        f.fetch("m", "s3://models/sklearn/absent.joblib", key="localMinIO")
    with pytest.raises(StorageNotFound, match="s3://no-such-bucket/x"):
        f.fetch("m", "s3://no-such-bucket/x", key="localMinIO")
    assert list((tmp_path / "cache").iterdir()) == []


def test_size_limit(s3: S3Server, tmp_path: Path) -> None:
    f = _fetcher(_config(s3), tmp_path / "cache", max_bytes=1000)
    with pytest.raises(StorageError, match="4096 bytes, more than the limit 1000"):
        f.fetch("big", "s3://models/big/blob.bin", key="localMinIO")
    with pytest.raises(StorageError, match="more than the limit 1000"):
        f.fetch("big", "s3://models/big/", key="localMinIO")


def test_concurrent_fetches_do_not_collide(s3: S3Server, tmp_path: Path) -> None:
    f = _fetcher(_config(s3), tmp_path / "cache")
    jobs = {f"model-{i}": ("s3://models/onnx/mnist" if i % 2 else "s3://models/sklearn/model.joblib")
            for i in range(8)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        paths = list(pool.map(lambda kv: f.fetch(kv[0], kv[1], "localMinIO"), jobs.items()))
    results = dict(zip(jobs, paths, strict=True))
    assert len({p.parent for p in results.values()}) == 8
    for model_id, path in results.items():
        if jobs[model_id].endswith("mnist"):
            assert (path / "model.onnx").read_bytes() == b"onnx-bytes"
        else:
            assert path.read_bytes() == b"joblib-bytes"
    # Fetching the same model again replaces its files atomically.
    again = f.fetch("model-0", "s3://models/sklearn/model.joblib", "localMinIO")
    assert again == results["model-0"] and again.read_bytes() == b"joblib-bytes"
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp")]


def test_unreachable_endpoint(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here any more
    config = StorageConfig.from_mapping({"dead": json.dumps({
        "type": "s3", "endpoint_url": f"http://127.0.0.1:{port}", "access_key_id": "a",
        "secret_access_key": "b", "bucket": BUCKET})})
    f = _fetcher(config, tmp_path / "cache")
    started = time.monotonic()
    with pytest.raises(StorageUnreachable, match=f"127.0.0.1:{port}") as info:
        f.fetch("m", "sklearn/model.joblib", key="dead")
    assert time.monotonic() - started < 20
    assert "Traceback" not in str(info.value)


def test_nanio_good_credentials(nanio: S3Server, tmp_path: Path) -> None:
    client = nanio.client()
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="lgb/model.txt", Body=b"tree")
    f = _fetcher(_config(nanio), tmp_path / "cache")
    assert f.fetch("lgb", "lgb/model.txt", key="localMinIO").read_bytes() == b"tree"


@pytest.mark.parametrize("bad", [{"secret": "wrong-secret"}, {"access": "unknown-access-key"}])
def test_nanio_bad_credentials(nanio: S3Server, tmp_path: Path, bad: dict[str, str]) -> None:
    client = nanio.client()
    if BUCKET not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="lgb/model.txt", Body=b"tree")
    f = _fetcher(_config(nanio, **bad), tmp_path / "cache")
    with pytest.raises(StorageAccessDenied, match="denied") as info:
        f.fetch("lgb", "s3://models/lgb/model.txt", key="localMinIO")
    assert "wrong-secret" not in str(info.value)
    assert list((tmp_path / "cache").iterdir()) == []
