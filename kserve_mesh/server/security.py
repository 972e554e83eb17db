"""What secures an instance: its TLS material, the auth file's tokens and identities, the token it
presents to its peers; read and checked before anything listens, re-read when the files change."""

from __future__ import annotations

import asyncio
import logging

from kserve_mesh.api.auth import Authenticator, Role
from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.mesh.tls import TlsFiles, TlsMaterial
from kserve_mesh.settings import MeshSettings

log = logging.getLogger(__name__)


class Security:
    def __init__(self, tls: TlsMaterial | None, auth: Authenticator | None, peer_token: str) -> None:
        self.tls = tls
        self.auth = auth
        self.peer_token = peer_token

    @classmethod
    def load(cls, s: MeshSettings) -> Security:
        """The TLS material and auth file the settings name, checked (``InvalidArgument`` says why not)."""
        tls = auth = None
        if s.tls_cert is not None and s.tls_key is not None:
            tls = TlsMaterial(TlsFiles(s.tls_cert, s.tls_key, s.tls_client_ca, s.tls_client_auth, s.tls_ca,
                                       s.tls_server_name))
        if s.auth_enabled:
            assert s.auth_file is not None  # settings refuse auth without a file
            auth = Authenticator(s.auth_file)
        security = cls(tls, auth, _peer_token(s))
        security._check_peers(s)
        return security

    def _check_peers(self, s: MeshSettings) -> None:
        """In a mesh, peers call each other: their credential must be one this instance accepts as
        admin (all instances share the auth file), or their client certificates must be required."""
        if self.auth is None or not s.etcd_endpoints:
            return
        if self.peer_token:
            peer = self.auth.principal(f"Bearer {self.peer_token}")
            if peer is None or peer.role is not Role.ADMIN:
                raise InvalidArgument(f"the token in {s.peer_token_file} is not an admin token of the auth file "
                                      f"{s.auth_file}: peers would refuse this instance's forwarded requests")
        elif s.tls_client_auth != "require":
            raise InvalidArgument("authentication is on in a mesh of several instances, so instances must "
                                  "authenticate to each other: give --peer-token-file (an admin token of the "
                                  "auth file), or require client certificates (--tls-client-auth require) and "
                                  "name the instances' certificate in the auth file's identities")

    @property
    def reloadable(self) -> bool:
        return self.tls is not None or self.auth is not None

    async def reload_forever(self, every_s: float) -> None:
        """Re-read certificate files and the auth file when they change (no restart)."""
        while True:
            await asyncio.sleep(every_s)
            try:
                if self.tls is not None:
                    self.tls.reload_if_changed()
                if self.auth is not None:
                    self.auth.reload_if_changed()
            except Exception:  # a failed check must not end the checking
                log.exception("checking the TLS and auth files failed")


def _peer_token(s: MeshSettings) -> str:
    if s.peer_token_file is None:
        return ""
    try:
        token = s.peer_token_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"cannot read the peer token file {s.peer_token_file}: {exc}") from None
    if not token:
        raise InvalidArgument(f"the peer token file {s.peer_token_file} is empty")
    return token
