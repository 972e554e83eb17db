"""TLS material from PEM files: checked when read, swapped on change, used by the next handshake
(mesh/tls.py), with real TLS connections on loopback."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

import pytest
import trustme

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.mesh.tls import TlsFiles, TlsMaterial


def write(ca: trustme.CA, folder: Path, *names: str) -> TlsFiles:
    cert = ca.issue_cert(*(names or ("127.0.0.1", "localhost")))
    folder.mkdir(parents=True, exist_ok=True)
    cert.cert_chain_pems[0].write_to_path(str(folder / "tls.crt"))
    cert.private_key_pem.write_to_path(str(folder / "tls.key"))
    ca.cert_pem.write_to_path(str(folder / "ca.crt"))
    return TlsFiles(folder / "tls.crt", folder / "tls.key", client_ca=folder / "ca.crt", client_auth="optional")


async def handshake(material: TlsMaterial, trust: trustme.CA, client: trustme.LeafCert | None = None) -> object:
    """Serve one TLS connection with ``material``; return what the server saw of the client cert."""
    seen: list[object] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("ssl_object").getpeercert())
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=material.server_context())
    port = server.sockets[0].getsockname()[1]
    try:
        ctx = ssl.create_default_context()
        trust.configure_trust(ctx)
        if client is not None:
            client.configure_cert(ctx)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
        assert await asyncio.wait_for(reader.readline(), 10) == b"ok\n"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    return seen[0]


async def test_a_swapped_certificate_is_served_from_the_next_handshake(tmp_path: Path) -> None:
    ca1, ca2 = trustme.CA(), trustme.CA()
    files = write(ca1, tmp_path)
    material = TlsMaterial(files)
    changed: list[int] = []
    material.on_change(lambda: changed.append(material.version))
    assert await handshake(material, ca1) is None  # no client certificate: optional lets it in
    seen = await handshake(material, ca1, ca1.issue_cert("alice.example", common_name="alice"))
    assert ("commonName", "alice") in [rdn[0] for rdn in seen["subject"]]  # type: ignore[index]
    assert not material.reload_if_changed()

    write(ca2, tmp_path)  # a new certificate from another CA, as a renewed Secret would be
    os.utime(tmp_path / "tls.crt", ns=(1, 1))  # make sure the stamp differs even within one tick
    assert material.reload_if_changed() and changed == [2]
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(material, ca1)
    assert await handshake(material, ca2) is None


async def test_a_half_written_or_mismatched_file_set_is_not_taken(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ca = trustme.CA()
    files = write(ca, tmp_path)
    material = TlsMaterial(files)
    other = trustme.CA().issue_cert("127.0.0.1")
    other.private_key_pem.write_to_path(str(tmp_path / "tls.key"))  # key of another certificate
    assert not material.reload_if_changed()
    assert "were not taken" in caplog.text and "do not load together" in caplog.text
    assert await handshake(material, ca) is None  # the previous material still serves
    (tmp_path / "tls.crt").write_text("garbage")
    assert not material.reload_if_changed()
    assert "is not PEM" in caplog.text


def test_bad_files_at_start_are_clear_errors(tmp_path: Path) -> None:
    ca = trustme.CA()
    files = write(ca, tmp_path)
    with pytest.raises(InvalidArgument, match="cannot read the TLS certificate"):
        TlsMaterial(TlsFiles(tmp_path / "missing.crt", files.key))
    (tmp_path / "bad.key").write_text("not a key")
    with pytest.raises(InvalidArgument, match="private key .* is not PEM"):
        TlsMaterial(TlsFiles(files.cert, tmp_path / "bad.key"))
    with pytest.raises(InvalidArgument, match="needs a client CA bundle"):
        TlsFiles(files.cert, files.key, client_auth="require")
    with pytest.raises(InvalidArgument, match="must be one of"):
        TlsFiles(files.cert, files.key, client_ca=files.client_ca, client_auth="sometimes")


def test_peers_are_checked_against_the_configured_name(tmp_path: Path) -> None:
    files = write(trustme.CA(), tmp_path)
    assert TlsMaterial(files).peer_name("[::1]") == "::1"
    named = TlsFiles(files.cert, files.key, server_name="modelmesh-serving.ns")
    assert TlsMaterial(named).peer_name("10.0.0.7") == "modelmesh-serving.ns"
    ctx = TlsMaterial(named).client_context()
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname
