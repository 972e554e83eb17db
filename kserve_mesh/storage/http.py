"""Pull one model file over HTTP(S) with the standard library, streamed to disk under a size cap.

Used for ``http(s)://`` storage URIs and for ``type: http`` storage entries (a ``url`` base plus
the model path, optional ``headers`` object, optional ``certificate`` PEM). Connect/read timeouts
are short and transient failures (connection errors, 5xx) are retried a bounded number of times.
"""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from kserve_mesh.core.errors import (
    StorageAccessDenied,
    StorageError,
    StorageNotFound,
    StorageUnreachable,
)

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


def _redact(url: str) -> str:
    """The URL without user info or query string (which may hold tokens)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_headers(raw: object) -> dict[str, str]:
    """Headers from a storage entry: an object or a JSON string of one."""
    if not raw:
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise StorageError(f"http storage 'headers' is not a JSON object: {exc.msg}") from exc
    if not isinstance(raw, Mapping):
        raise StorageError("http storage 'headers' must be an object of name → value")
    return {str(k): str(v) for k, v in raw.items()}


class HttpPuller:
    """Streams a URL to a file. One instance per fetch; holds no connections between calls."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        attempts: int = 3,
        backoff: float = 0.2,
        headers: Mapping[str, str] | None = None,
        certificate: str = "",
    ) -> None:
        self._timeout = timeout
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._headers = dict(headers or {})
        self._context: ssl.SSLContext | None = None
        if certificate:
            self._context = ssl.create_default_context(cadata=certificate)

    def pull(self, url: str, target: Path, max_bytes: int) -> Path:
        shown = _redact(url)
        last: StorageError | None = None
        for attempt in range(1, self._attempts + 1):
            try:
                self._pull_once(url, shown, target, max_bytes)
                return target
            except StorageUnreachable as exc:
                last = exc
                target.unlink(missing_ok=True)
                if attempt < self._attempts:
                    log.info("retrying %s after: %s (attempt %d/%d)", shown, exc, attempt, self._attempts)
                    time.sleep(self._backoff * attempt)
        assert last is not None
        raise last

    def _pull_once(self, url: str, shown: str, target: Path, max_bytes: int) -> None:
        request = urllib.request.Request(url, headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout, context=self._context) as resp:
                length = resp.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > max_bytes:
                    raise StorageError(f"{shown} is {length} bytes, more than the limit {max_bytes}")
                target.parent.mkdir(parents=True, exist_ok=True)
                total = 0
                digest = hashlib.sha256()
                with open(target, "wb") as out:
                    while chunk := resp.read(_CHUNK):
                        total += len(chunk)
                        if total > max_bytes:
                            raise StorageError(
                                f"{shown} is larger than the limit {max_bytes} bytes (download stopped)"
                            )
                        digest.update(chunk)
                        out.write(chunk)
                log.info("downloaded %s (%d bytes, sha256 %s)", shown, total, digest.hexdigest()[:12])
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404 or exc.code == 410:
                raise StorageNotFound(f"{shown} not found (HTTP {exc.code})") from exc
            if exc.code in (401, 403):
                raise StorageAccessDenied(f"access to {shown} denied (HTTP {exc.code})") from exc
            if exc.code >= 500 or exc.code == 429:
                raise StorageUnreachable(f"{shown} answered HTTP {exc.code}") from exc
            raise StorageError(f"{shown} answered HTTP {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLError):
                raise StorageError(f"TLS error fetching {shown}: {reason}") from exc
            raise StorageUnreachable(f"{shown} unreachable: {reason}") from exc
        except (TimeoutError, ConnectionError) as exc:
            raise StorageUnreachable(f"{shown} unreachable: {exc or type(exc).__name__}") from exc
        except StorageError:
            target.unlink(missing_ok=True)
            raise
        except OSError as exc:
            raise StorageError(f"cannot download {shown} to local disk: {exc}") from exc
