"""Pull one model file over HTTP(S) with the standard library, streamed to disk under a size cap.

Used for ``http(s)://`` storage URIs and for ``type: http`` storage entries (a ``url`` base plus
the model path, optional ``headers`` object, optional ``certificate`` PEM). Connect/read timeouts
are short and transient failures (connection errors, 5xx) are retried a bounded number of times.
Every redirect is checked too (``check_url``: the host allow-list of the storage policy), and the
entry's own headers (credentials) are not sent on to another host.
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
from collections.abc import Callable, Mapping
from pathlib import Path

from kserve_mesh.core.errors import (
    StorageAccessDenied,
    StorageError,
    StorageNotFound,
    StorageUnreachable,
)

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


def redact_url(url: str) -> str:
    """The URL without user info or query string (which may hold tokens)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    if port:
        host = f"{host}:{port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


_redact = redact_url


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


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL that ``check_url`` accepts; drops the entry's headers when
    the host changes (they may carry credentials meant for the first host only)."""

    def __init__(self, check_url: Callable[[str, str], None], own_headers: Mapping[str, str]) -> None:
        super().__init__()
        self._check_url = check_url
        self._own = {k.lower() for k in own_headers} | {"authorization"}  # also a URL's user:password

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is None:
            return None
        try:
            self._check_url(new.full_url, f"{redact_url(new.full_url)} (redirected from {redact_url(req.full_url)})")
        except StorageError:
            fp.close()
            raise
        old_host = urllib.parse.urlsplit(req.full_url).hostname
        if urllib.parse.urlsplit(new.full_url).hostname != old_host:
            for name in [k for k in new.headers if k.lower() in self._own]:
                del new.headers[name]
        return new


def _any_url(url: str, shown: str) -> None:
    return None


def _userinfo_as_header(url: str, headers: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """``http://user:password@host/…`` as the URL without them and a Basic ``Authorization`` header
    (``urllib`` would take ``user:password@host`` for a host, and quote it in its error)."""
    import base64

    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, dict(headers)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()).decode()
    clean = urllib.parse.urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return clean, {**headers, "Authorization": f"Basic {token}"}


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
        check_url: Callable[[str, str], None] = _any_url,
    ) -> None:
        self._timeout = timeout
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._headers = dict(headers or {})
        context: ssl.SSLContext | None = None
        if certificate:
            context = ssl.create_default_context(cadata=certificate)
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                                   _CheckedRedirects(check_url, self._headers))

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
        url, headers = _userinfo_as_header(url, self._headers)
        request = urllib.request.Request(url, headers=headers)
        try:
            with self._opener.open(request, timeout=self._timeout) as resp:
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
        except ValueError:  # http.client.InvalidURL and friends (their text may quote the netloc: secrets)
            raise StorageError(f"cannot download {shown}: not a valid URL (host or port)") from None
