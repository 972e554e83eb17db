"""TLS for every port an instance serves and for its calls to peers, from PEM files that may change.

One :class:`TlsMaterial` holds the bytes of the certificate chain, its key and the CA bundles, read
together and checked (the key must match the certificate) before they replace the previous ones, so
a half-written or mismatched file set never takes effect: the old material keeps serving and a
warning says why. :meth:`TlsMaterial.reload_if_changed` is polled by the server (``tls_reload_s``);
what it swaps in is used from the next handshake on, without a restart:

- REST and metrics (Python ``ssl``): the listening socket keeps one *front* context whose SNI
  callback hands each new connection the current context (OpenSSL calls it for every ClientHello,
  with or without a server name), so certificate and client-CA changes both apply;
- gRPC (``dynamic_ssl_server_credentials``): gRPC core asks for the current configuration at each
  handshake; the fetcher returns the new one once after a change;
- peers: client contexts and channel credentials are built from the current material on demand,
  and listeners (``on_change``) drop pooled connections made with the old one.

Client certificates: ``require`` checks them on every port; ``optional`` checks a certificate when
one is sent (REST, metrics, and gRPC on the mesh's own server, ``h2_server_context``). grpcio's
Python API can only require client certificates or not ask for them, so with ``--grpc-server
grpcio`` ``optional`` does not ask on gRPC (a peer authenticates there with its token).
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from kserve_mesh.core.errors import InvalidArgument

log = logging.getLogger(__name__)

CLIENT_AUTH_MODES = ("none", "optional", "require")


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where the PEM files are, and how client certificates are treated."""

    cert: Path
    key: Path
    client_ca: Path | None = None
    client_auth: str = "none"
    ca: Path | None = None
    """What this instance trusts when it calls a peer (default: client_ca, else cert itself)."""
    server_name: str = ""
    """The name a peer's certificate is checked against (default: the address dialled)."""

    def __post_init__(self) -> None:
        if self.client_auth not in CLIENT_AUTH_MODES:
            raise InvalidArgument(f"TLS client auth must be one of {', '.join(CLIENT_AUTH_MODES)}, "
                                  f"got '{self.client_auth}'")
        if self.client_auth != "none" and self.client_ca is None:
            raise InvalidArgument(f"TLS client auth '{self.client_auth}' needs a client CA bundle")

    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.cert, self.key, self.client_ca, self.ca) if p is not None)


@dataclass(frozen=True, slots=True)
class _Pems:
    cert: bytes
    key: bytes
    client_ca: bytes | None
    trust: bytes  # what peers' certificates are checked against


def _stamp(paths: tuple[Path, ...]) -> tuple[tuple[int, int, int], ...]:
    out = []
    for path in paths:
        try:
            st = os.stat(path)  # follows links: a mounted Secret swaps a symlink
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((0, 0, 0))
    return tuple(out)


def _read(files: TlsFiles) -> _Pems:
    def read(path: Path, what: str) -> bytes:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidArgument(f"cannot read the TLS {what} {path}: {exc.strerror or exc}") from None
        if b"-----BEGIN" not in data:
            raise InvalidArgument(f"the TLS {what} {path} is not PEM (no '-----BEGIN' line)")
        return data

    cert = read(files.cert, "certificate")
    key = read(files.key, "private key")
    client_ca = read(files.client_ca, "client CA bundle") if files.client_ca is not None else None
    trust = read(files.ca, "CA bundle") if files.ca is not None else (client_ca or cert)
    pems = _Pems(cert, key, client_ca, trust)
    _server_context(pems, files.client_auth)  # a key that does not match its certificate fails here
    return pems


def _load_chain(ctx: ssl.SSLContext, pems: _Pems) -> None:
    # ssl wants files: write them to a private temp dir for the moment of loading only.
    with tempfile.TemporaryDirectory(prefix="kserve-mesh-tls-") as tmp:
        cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        cert.write_bytes(pems.cert)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pems.key)
        try:
            ctx.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise InvalidArgument(f"the TLS certificate and key do not load together: {exc.reason or exc}") from None


def _server_context(pems: _Pems, client_auth: str, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, pems)
    if client_auth != "none" and pems.client_ca is not None:
        try:
            ctx.load_verify_locations(cadata=pems.client_ca.decode("ascii", "replace"))
        except ssl.SSLError as exc:
            raise InvalidArgument(f"the TLS client CA bundle does not load: {exc.reason or exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if client_auth == "require" else ssl.CERT_OPTIONAL
    return ctx


class TlsMaterial:
    """The current TLS material of an instance; see the module docstring."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._stamp = _stamp(files.paths())
        self._pems = _read(files)  # raises InvalidArgument with the reason at start
        self._server_ctx = _server_context(self._pems, files.client_auth)
        self._h2_ctx = _server_context(self._pems, files.client_auth, ("h2",))
        self._client_ctx: ssl.SSLContext | None = None
        self._grpc_pending: grpc.ServerCertificateConfiguration | None = None
        self.version = 1
        self.listeners: list[Callable[[], None]] = []

    # -- reloading ---------------------------------------------------------------------------------
    def reload_if_changed(self) -> bool:
        """Re-read the files if any changed; True when new material took effect."""
        stamp = _stamp(self.files.paths())
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            pems = _read(self.files)
        except InvalidArgument as exc:
            log.warning("TLS files changed but were not taken (the previous certificate stays): %s", exc)
            return False
        if pems == self._pems:
            return False
        self._pems = pems
        self._server_ctx = _server_context(pems, self.files.client_auth)
        self._h2_ctx = _server_context(pems, self.files.client_auth, ("h2",))
        self._client_ctx = None
        self._grpc_pending = self._grpc_config()
        self.version += 1
        log.info("TLS certificate files re-read (version %d)", self.version)
        for listener in self.listeners:
            try:
                listener()
            except Exception:  # one listener must not stop the others
                log.exception("TLS change listener failed")
        return True

    def on_change(self, listener: Callable[[], None]) -> None:
        self.listeners.append(listener)

    # -- serving -----------------------------------------------------------------------------------
    def server_context(self) -> ssl.SSLContext:
        """A context for a listening socket that always hands out the current material."""
        front = _server_context(self._pems, self.files.client_auth)

        def pick(conn: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            conn.context = self._server_ctx

        front.sni_callback = pick  # type: ignore[assignment]
        return front

    def h2_server_context(self) -> ssl.SSLContext:
        """As ``server_context``, offering HTTP/2 in ALPN (the native gRPC server, api/grpc_native.py)."""
        front = _server_context(self._pems, self.files.client_auth, ("h2",))

        def pick(conn: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            conn.context = self._h2_ctx

        front.sni_callback = pick  # type: ignore[assignment]
        return front

    def _grpc_config(self) -> grpc.ServerCertificateConfiguration:
        roots = self._pems.client_ca if self.files.client_auth == "require" else None
        return grpc.ssl_server_certificate_configuration([(self._pems.key, self._pems.cert)], root_certificates=roots)

    def grpc_server_credentials(self) -> grpc.ServerCredentials:
        def fetch() -> grpc.ServerCertificateConfiguration | None:
            pending, self._grpc_pending = self._grpc_pending, None
            return pending

        return grpc.dynamic_ssl_server_credentials(self._grpc_config(), fetch,
                                                   require_client_authentication=self.files.client_auth == "require")

    # -- calling peers -----------------------------------------------------------------------------
    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts the peers' CA and presents this instance's certificate."""
        if self._client_ctx is None:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self._pems.trust.decode("ascii", "replace"))
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            _load_chain(ctx, self._pems)
            self._client_ctx = ctx
        return self._client_ctx

    def grpc_channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self._pems.trust, private_key=self._pems.key,
                                            certificate_chain=self._pems.cert)

    def peer_name(self, host: str) -> str:
        """The name a peer's certificate must carry when this instance dials ``host``."""
        return self.files.server_name or host.strip("[]")
