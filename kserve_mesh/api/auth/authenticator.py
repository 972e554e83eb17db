"""``Authenticator``: checks a caller's credentials against the auth file (re-read when it changes),
and logs refusals without the credentials and without letting a caller's text start a log line."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from kserve_mesh.api.auth.credentials import Credentials, Principal, Role, token_digest
from kserve_mesh.core.errors import InvalidArgument, PermissionDenied, Unauthenticated

log = logging.getLogger("kserve_mesh.api.auth")  # one logger for the whole package, as before the split


def bearer(value: str | bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, else None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Authenticator:
    """Checks credentials against the auth file, which it re-reads when it changes."""

    def __init__(self, path: Path | None = None, credentials: Credentials | None = None) -> None:
        self.path = path
        self._stamp = _stamp(path)
        self.credentials = credentials if credentials is not None else (
            Credentials.load(path) if path is not None else Credentials({}, {}))
        if not self.credentials:
            where = f"the auth file {path}" if path is not None else "the auth configuration"
            raise InvalidArgument(f"{where} lists no tokens and no identities: nobody could call this instance")
        self._refusals = _RefusalLog()

    def reload_if_changed(self) -> bool:
        if self.path is None:
            return False
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            credentials = Credentials.load(self.path)
        except InvalidArgument as exc:
            log.warning("the auth file changed but was not taken (the previous one stays): %s", exc)
            return False
        if not credentials:
            log.warning("the auth file %s now lists nobody; the previous one stays", self.path)
            return False
        self.credentials = credentials
        log.info("auth file %s re-read: %d tokens, %d identities", self.path, len(credentials.tokens),
                 len(credentials.identities))
        return True

    def principal(self, authorization: str | bytes | None, identities: Iterable[str] = ()) -> Principal | None:
        token = bearer(authorization)
        if token is not None:
            digest = token_digest(token)
            # A lookup by digest: its timing says nothing about the tokens themselves.
            return self.credentials.tokens.get(digest)  # a wrong token is never rescued by a certificate
        for subject in identities:
            found = self.credentials.identities.get(subject)
            if found is not None:
                return found
        return None

    def check(self, need: Role, authorization: str | bytes | None, identities: Iterable[str], what: str,
              peer: str) -> Principal:
        """The caller, if it may do ``what``; else raises Unauthenticated / PermissionDenied."""
        principal = self.principal(authorization, identities)
        if principal is None:
            reason = ("the bearer token is not known" if bearer(authorization) is not None
                      else "the Authorization header is not 'Bearer <token>'" if authorization
                      else "no credentials")
            self._refusals.note(peer, what, reason)
            raise Unauthenticated(f"{what} needs authentication: {reason} (send 'Authorization: Bearer <token>'"
                                  " or a client certificate the auth file names)")
        if principal.role < need:
            self._refusals.note(peer, what, f"'{principal.name}' has role {principal.role.label}")
            raise PermissionDenied(f"{what} needs role {need.label}; '{principal.name}' has role "
                                   f"{principal.role.label}")
        return principal


def _stamp(path: Path | None) -> tuple[int, int, int]:
    if path is None:
        return (0, 0, 0)
    try:
        st = os.stat(path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)
    except OSError:
        return (0, 0, 0)


class _RefusalLog:
    """Refusals at WARNING, at most one line per 10 s (a flood of bad calls must not flood the log)."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last = -every_s
        self._quiet = 0

    def note(self, peer: str, what: str, reason: str) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            self._quiet += 1
            return
        more = f" ({self._quiet} more refusals since the last line)" if self._quiet else ""
        log.warning("refused %s from %s: %s%s", what, peer or "?", reason, more)
        self._last, self._quiet = now, 0


def printable(text: str) -> str:
    """``text`` with control characters escaped, so that what a caller sent cannot start a log line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
