"""Model storage: get a model's files from local disk, a PVC, S3 or HTTP(S) onto local disk.

Public API::

    config = StorageConfig.from_dir("/storage-config")     # ModelMesh storage-config Secret
    fetcher = ModelFetcher(config, Path("/models-cache"))
    local = fetcher.fetch("mnist__isvc-1", "s3://models/mnist", key='{"storage_key": "minio"}')
    fetcher.release("mnist__isvc-1")

boto3 (the ``[s3]`` extra) is imported only when an S3 pull happens.
"""

from .archive import archive_kind, extract_archive
from .config import StorageConfig, StorageEntry
from .fetcher import GiB, ModelFetcher, Source, disk_usage, make_fetcher, safe_name
from .modelkey import ModelKey, parse_model_key, resolve_entry

__all__ = [
    "GiB",
    "ModelFetcher",
    "ModelKey",
    "Source",
    "StorageConfig",
    "StorageEntry",
    "archive_kind",
    "disk_usage",
    "extract_archive",
    "make_fetcher",
    "parse_model_key",
    "resolve_entry",
    "safe_name",
]
