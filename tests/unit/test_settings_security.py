"""The security settings refuse what would have no effect, and turn authentication on where an
instance can be reached from elsewhere (settings.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from kserve_mesh.settings import MeshSettings, is_loopback

AUTH = Path("auth.yaml")


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.3.4.5", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.1", False), ("my-host", False),
])
def test_which_addresses_stay_on_this_machine(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_authentication_is_on_off_loopback_and_with_an_auth_file() -> None:
    assert not MeshSettings().auth_enabled
    assert MeshSettings(auth_file=AUTH).auth_enabled  # giving a file means wanting it
    assert MeshSettings(host="0.0.0.0", auth_file=AUTH).auth_enabled
    assert not MeshSettings(host="0.0.0.0", auth="off").auth_enabled  # said on purpose
    with pytest.raises(ValidationError, match="not a loopback address, so authentication is on"):
        MeshSettings(host="0.0.0.0")
    with pytest.raises(ValidationError, match="auth=on: give auth_file"):
        MeshSettings(auth="on")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tls_cert": Path("c")}, "tls_cert and tls_key go together"),
    ({"tls_key": Path("k")}, "tls_cert and tls_key go together"),
    ({"tls_cert": Path("c"), "tls_key": Path("k"), "tls_client_auth": "require"}, "needs tls_client_ca"),
    ({"tls_client_ca": Path("ca")}, "needs tls_cert and tls_key"),
    ({"tls_metrics": True}, "tls_metrics needs tls_cert"),
    ({"tls_ca": Path("ca")}, "tls_ca is about TLS towards peers"),
    ({"tls_server_name": "mesh.ns"}, "tls_server_name is about TLS towards peers"),
    ({"peer_token_file": Path("t")}, "needs a mesh of several instances"),
    ({"auth": "off", "auth_file": AUTH}, "contradict each other"),
    ({"tls_client_auth": "sometimes"}, "'none', 'optional' or 'require'"),
])
def test_settings_that_would_have_no_effect_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MeshSettings(**kwargs)
