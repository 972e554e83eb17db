"""Model storage: get a model's files from local disk, a PVC, S3 or HTTP(S) onto local disk.

Public API::

    config = StorageConfig.from_dir("/storage-config")     # ModelMesh storage-config Secret
    policy = StoragePolicy.of(models_dir=Path("models"), allow_local_paths=[Path("/data")])
    fetcher = ModelFetcher(config, Path("/models-cache"), policy=policy)
    local = fetcher.fetch("mnist__isvc-1", "s3://models/mnist", key='{"storage_key": "minio"}')
    fetcher.release("mnist__isvc-1")
    check = model_check(Path("/storage-config"), policy)   # registration: InvalidArgument if refused
    pin = model_digest(Path("models/mnist.joblib"))        # the modelKey's {"sha256": pin}

boto3 (the ``[s3]`` extra) is imported only when an S3 pull happens.
"""

from .archive import archive_kind, extract_archive
from .config import StorageConfig, StorageEntry
from .digest import model_digest, parse_digest
from .fetcher import GiB, ModelFetcher, Source, disk_usage, make_fetcher, model_check, safe_name
from .modelkey import ModelKey, parse_model_key, resolve_entry
from .policy import StoragePolicy
from .resolve import StorageResolver

__all__ = [
    "GiB",
    "ModelFetcher",
    "ModelKey",
    "Source",
    "StorageConfig",
    "StorageEntry",
    "StoragePolicy",
    "StorageResolver",
    "archive_kind",
    "disk_usage",
    "extract_archive",
    "make_fetcher",
    "model_check",
    "model_digest",
    "parse_digest",
    "parse_model_key",
    "resolve_entry",
    "safe_name",
]
