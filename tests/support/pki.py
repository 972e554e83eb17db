"""A test PKI for the TLS tests: a CA (trustme), a server certificate for 127.0.0.1 / localhost,
client certificates, and an auth file with an admin token, an infer token (stored as its SHA-256
only) and the client certificate ``alice`` (role infer)."""

from __future__ import annotations

import hashlib
import json
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

ADMIN = "admin-Tok3n-for-the-tls-test-0123456789"
INFER = "infer-Tok3n-for-the-tls-test-0123456789"


@dataclass
class Pki:
    dir: Path
    ca: trustme.CA
    cert: Path
    key: Path
    ca_pem: Path
    alice: Path  # client certificate + key, CN alice, from the CA
    alice_cert: Path
    alice_key: Path
    stranger: Path  # client certificate + key from a CA nobody trusts
    auth: Path

    def context(self, client: Path | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_pem))
        if client is not None:
            ctx.load_cert_chain(client)
        return ctx


def make_pki(root: Path) -> Pki:
    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(root / "tls.crt"))
    server.private_key_pem.write_to_path(str(root / "tls.key"))
    ca.cert_pem.write_to_path(str(root / "ca.crt"))
    alice = ca.issue_cert("alice.example", common_name="alice")
    alice.private_key_and_cert_chain_pem.write_to_path(str(root / "alice.pem"))
    alice.cert_chain_pems[0].write_to_path(str(root / "alice.crt"))
    alice.private_key_pem.write_to_path(str(root / "alice.key"))
    trustme.CA().issue_cert("stranger.example").private_key_and_cert_chain_pem.write_to_path(str(root / "stranger.pem"))
    (root / "auth.yaml").write_text(json.dumps({
        "tokens": [{"name": "ops", "role": "admin", "token": ADMIN},
                   {"name": "dashboards", "role": "infer", "sha256": hashlib.sha256(INFER.encode()).hexdigest()}],
        "identities": [{"name": "alice", "role": "infer", "subject": "alice"}],
    }))
    return Pki(root, ca, root / "tls.crt", root / "tls.key", root / "ca.crt", root / "alice.pem",
               root / "alice.crt", root / "alice.key", root / "stranger.pem", root / "auth.yaml")
