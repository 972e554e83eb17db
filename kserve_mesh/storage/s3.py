"""Pull model files from S3-protocol storage (AWS S3, MinIO, Ceph, moto, nanio) with boto3.

boto3 is the optional ``[s3]`` extra, so it is imported only when an S3 pull happens. A path is
either one object (downloaded as one file) or a "folder" prefix (every object under it is
downloaded, keeping the relative layout). Endpoint, credentials, region and CA certificate come
from the storage entry; connects and reads have short timeouts and a bounded number of retries.

botocore's errors are translated here and never escape: missing bucket/key → StorageNotFound,
bad credentials → StorageAccessDenied, connection problems → StorageUnreachable.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kserve_mesh.core.errors import (
    StorageAccessDenied,
    StorageError,
    StorageNotFound,
    StorageUnreachable,
)

from .archive import check_member_name
from .config import StorageEntry

log = logging.getLogger(__name__)

_NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
_DENIED = {"403", "401", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
           "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed", "InvalidClientTokenId"}


@dataclass(frozen=True)
class S3Options:
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 3


class S3Puller:
    """Downloads from one S3 endpoint described by a :class:`StorageEntry` of type ``s3``."""

    def __init__(self, entry: StorageEntry, options: S3Options, cert_dir: Path) -> None:
        self._entry = entry
        self._options = options
        self._cert_dir = cert_dir
        self._endpoint = entry.get("endpoint_url") or "AWS default endpoint"
        self._client = self._make_client()

    def _make_client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise StorageError(
                "S3 storage needs boto3: install kserve-mesh[s3]"
            ) from exc
        e = self._entry
        config = Config(
            connect_timeout=self._options.connect_timeout,
            read_timeout=self._options.read_timeout,
            retries={"max_attempts": self._options.max_attempts, "mode": "standard"},
            signature_version="s3v4",
            s3={"addressing_style": "path"} if e.get("endpoint_url") else None,
        )
        kwargs: dict[str, Any] = {"config": config}
        if e.get("endpoint_url"):
            kwargs["endpoint_url"] = e.get("endpoint_url")
        if e.get("region"):
            kwargs["region_name"] = e.get("region")
        elif e.get("endpoint_url"):
            kwargs["region_name"] = "us-east-1"
        if e.get("access_key_id"):
            kwargs["aws_access_key_id"] = e.get("access_key_id")
            kwargs["aws_secret_access_key"] = e.get("secret_access_key")
        cert = e.get("certificate")
        if cert:
            kwargs["verify"] = str(self._write_cert(cert))
        session = boto3.session.Session()
        return session.client("s3", **kwargs)

    def _write_cert(self, pem: str) -> Path:
        self._cert_dir.mkdir(parents=True, exist_ok=True)
        path = self._cert_dir / f"{hashlib.sha256(pem.encode()).hexdigest()[:16]}.pem"
        if not path.exists():
            path.write_text(pem if pem.endswith("\n") else pem + "\n", encoding="utf-8")
        return path

    def pull(self, bucket: str, key: str, dest_dir: Path, max_bytes: int) -> Path:
        """Download ``key`` (an object or a prefix) into ``dest_dir``; return the local path."""
        if not bucket:
            raise StorageError(
                f"no bucket for S3 path '{key}' (set storage_params.bucket or the entry's bucket)"
            )
        key = key.lstrip("/")  # ModelMesh paths often carry a leading slash; S3 keys do not.
        where = f"s3://{bucket}/{key}"
        name = Path(key.rstrip("/")).name or bucket
        if key and not key.endswith("/"):
            size = self._head(bucket, key, where)
            if size is not None:
                if size > max_bytes:
                    raise StorageError(f"{where} is {size} bytes, more than the limit {max_bytes}")
                target = dest_dir / name
                self._download(bucket, key, target, where)
                return target
        prefix = key if not key or key.endswith("/") else key + "/"
        objects = self._list(bucket, prefix, where)
        if not objects:
            raise StorageNotFound(f"{where} not found (no object and no objects under that prefix)")
        total = sum(size for _, size in objects)
        if total > max_bytes:
            raise StorageError(f"{where} holds {total} bytes, more than the limit {max_bytes}")
        folder = dest_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for obj_key, _ in objects:
            rel = check_member_name(obj_key[len(prefix):])
            self._download(bucket, obj_key, folder / str(rel), f"s3://{bucket}/{obj_key}")
        log.info("downloaded %d objects (%d bytes) from %s", len(objects), total, where)
        return folder

    def _head(self, bucket: str, key: str, where: str) -> int | None:
        try:
            head = self._client.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            err = self._translate(exc, where)
            if isinstance(err, StorageNotFound):
                return None
            raise err from exc
        return int(head.get("ContentLength", 0))

    def _list(self, bucket: str, prefix: str, where: str) -> list[tuple[str, int]]:
        found: list[tuple[str, int]] = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []) or []:
                    if not obj["Key"].endswith("/"):  # skip "folder" marker objects
                        found.append((obj["Key"], int(obj.get("Size", 0))))
        except Exception as exc:
            raise self._translate(exc, where) from exc
        return found

    def _download(self, bucket: str, key: str, target: Path, where: str) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._client.download_file(bucket, key, str(target))
        except Exception as exc:
            raise self._translate(exc, where) from exc

    def _translate(self, exc: Exception, where: str) -> StorageError:
        """Map a boto3/botocore error to the mesh's storage errors, with a short message."""
        from botocore import exceptions as bce

        endpoint = self._endpoint
        if isinstance(exc, bce.ClientError):
            error = exc.response.get("Error", {}) or {}
            code = str(error.get("Code", ""))
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            message = error.get("Message") or code or status
            if code in _NOT_FOUND or (not code and status == "404") or status == "404":
                what = "bucket" if code == "NoSuchBucket" else "object"
                return StorageNotFound(f"{where} not found ({what} missing: {message})")
            if code in _DENIED or status in ("401", "403"):
                return StorageAccessDenied(
                    f"access to {where} denied by {endpoint}: {code or status} {message}".strip()
                )
            return StorageError(f"S3 error for {where}: {code or status} {message}".strip())
        if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
            return StorageAccessDenied(f"no usable S3 credentials for {where}: {exc}")
        if isinstance(exc, bce.EndpointConnectionError | bce.ConnectTimeoutError
                      | bce.ReadTimeoutError | bce.ConnectionClosedError | bce.ConnectionError):
            return StorageUnreachable(f"S3 endpoint {endpoint} unreachable for {where}: {exc}")
        if isinstance(exc, bce.BotoCoreError):
            return StorageError(f"S3 client error for {where}: {exc}")
        if isinstance(exc, OSError):
            return StorageError(f"cannot write {where} to local disk: {exc}")
        return StorageError(f"S3 download of {where} failed: {type(exc).__name__}: {exc}")
