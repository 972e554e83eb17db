"""The http(s) host allow-list and sha256 pins against real HTTP servers: refused hosts are never
contacted, a redirect to a host off the list is not followed, credentials do not follow a redirect
to another host, and a download that is not the pinned file never reaches the cache."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kserve_mesh.core.errors import DigestMismatch, StorageNotAllowed
from kserve_mesh.storage import ModelFetcher, StorageConfig, StoragePolicy

pytestmark = pytest.mark.integration


@dataclass
class Site:
    """A loopback HTTP server: ``/model.onnx`` is a file, ``/go`` redirects to ``redirect_to``."""

    url: str
    port: int
    seen: list[dict[str, str]] = field(default_factory=list)
    redirect_to: str = ""


def _handler(site: Site) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
            if self.path.startswith("/go"):
                self.send_response(302)
                self.send_header("Location", site.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b"onnx-bytes"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def sites() -> Iterator[tuple[Site, Site]]:
    """Two servers: one reached as 127.0.0.1, the other as localhost (another host name)."""
    servers, made = [], []
    for host in ("127.0.0.1", "localhost"):
        site = Site("", 0)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(site))
        site.port = server.server_address[1]
        site.url = f"http://{host}:{site.port}"
        thread = threading.Thread(target=server.serve_forever, name=f"site-{host}", daemon=True)
        thread.start()
        servers.append((server, thread))
        made.append(site)
    try:
        yield made[0], made[1]
    finally:
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


def _fetcher(tmp_path: Path, hosts: list[str], config: StorageConfig | None = None) -> ModelFetcher:
    return ModelFetcher(config or StorageConfig.empty(), tmp_path / "cache", connect_timeout=1.0,
                        read_timeout=5.0, max_attempts=1, policy=StoragePolicy.of(http_allowed_hosts=hosts))


def test_an_allowed_host_is_fetched(sites: tuple[Site, Site], tmp_path: Path) -> None:
    a, _ = sites
    got = _fetcher(tmp_path, ["127.0.0.1"]).fetch("m", f"{a.url}/model.onnx")
    assert got.read_bytes() == b"onnx-bytes"


def test_a_host_off_the_list_is_never_contacted(sites: tuple[Site, Site], tmp_path: Path) -> None:
    a, _ = sites
    with pytest.raises(StorageNotAllowed, match="host '127.0.0.1' is not in the http allow-list"):
        _fetcher(tmp_path, ["models.example.com"]).fetch("m", f"{a.url}/model.onnx")
    assert a.seen == []


def test_a_redirect_to_a_host_off_the_list_is_not_followed(sites: tuple[Site, Site], tmp_path: Path) -> None:
    a, b = sites
    a.redirect_to = f"{b.url}/model.onnx"
    with pytest.raises(StorageNotAllowed, match=r"localhost:\d+/model.onnx \(redirected from .*/go\) refused: "
                       "host 'localhost' is not in the http allow-list"):
        _fetcher(tmp_path, ["127.0.0.1"]).fetch("m", f"{a.url}/go")
    assert [s["path"] for s in a.seen] == ["/go"] and b.seen == []
    assert list((tmp_path / "cache").iterdir()) == []


def test_credentials_do_not_follow_a_redirect_to_another_host(sites: tuple[Site, Site], tmp_path: Path) -> None:
    a, b = sites
    a.redirect_to = f"{b.url}/model.onnx"
    config = StorageConfig.from_mapping({"web": json.dumps({
        "type": "http", "url": a.url, "headers": {"Authorization": "Bearer secret-token"}})})
    got = _fetcher(tmp_path, ["127.0.0.1", "localhost"], config).fetch("m", "/go", key='{"storage_key": "web"}')
    assert got.read_bytes() == b"onnx-bytes"
    assert a.seen[0]["authorization"] == "Bearer secret-token"
    assert "authorization" not in b.seen[0]


def test_a_download_must_match_its_pin(sites: tuple[Site, Site], tmp_path: Path) -> None:
    a, _ = sites
    f = _fetcher(tmp_path, [])
    good = json.dumps({"sha256": hashlib.sha256(b"onnx-bytes").hexdigest()})
    assert f.fetch("m", f"{a.url}/model.onnx", good).read_bytes() == b"onnx-bytes"
    f.release("m")
    with pytest.raises(DigestMismatch, match=f"expected {'a' * 64}, got {hashlib.sha256(b'onnx-bytes').hexdigest()}"):
        f.fetch("m", f"{a.url}/model.onnx", json.dumps({"sha256": "a" * 64}))
    assert list((tmp_path / "cache").iterdir()) == []


def test_user_and_password_in_a_url_travel_as_basic_auth_and_never_follow_a_redirect(
        sites: tuple[Site, Site], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import base64

    a, b = sites
    a.redirect_to = f"{b.url}/model.onnx"
    url = f"http://alice:S3cret%40pw@127.0.0.1:{a.port}/go"
    got = _fetcher(tmp_path, ["127.0.0.1", "localhost"]).fetch("m", url)
    assert got.read_bytes() == b"onnx-bytes"
    assert a.seen[0]["authorization"] == "Basic " + base64.b64encode(b"alice:S3cret@pw").decode()
    assert "authorization" not in b.seen[0]  # the other host never sees the password
    assert "S3cret" not in caplog.text
