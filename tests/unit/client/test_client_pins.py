"""sha256 pins from the client side: ``kserve-mesh digest`` and ``register --sha256`` (the pin goes
into the modelKey JSON next to what it already holds)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kserve_mesh.cli import app
from kserve_mesh.client import InvalidInputError
from kserve_mesh.client.rest import with_sha256
from kserve_mesh.storage import model_digest

PIN = "ab" * 32


def test_a_pin_joins_the_storage_key() -> None:
    assert json.loads(with_sha256("", PIN)) == {"sha256": PIN}
    assert json.loads(with_sha256('{"storage_key": "s3"}', PIN)) == {"storage_key": "s3", "sha256": PIN}
    with pytest.raises(InvalidInputError, match="must be a JSON object"):
        with_sha256("not json", PIN)
    with pytest.raises(InvalidInputError, match="must be a JSON object"):
        with_sha256("[1]", PIN)


def test_digest_prints_the_pin_of_a_file_and_of_a_folder(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.string").write_text("hello")
    runner = CliRunner()
    file_out = runner.invoke(app, ["digest", str(tmp_path / "m" / "model.string")])
    assert file_out.exit_code == 0 and file_out.stdout.strip() == hashlib.sha256(b"hello").hexdigest()
    folder_out = runner.invoke(app, ["digest", str(tmp_path / "m")])
    assert folder_out.exit_code == 0 and folder_out.stdout.strip() == model_digest(tmp_path / "m")
    missing = runner.invoke(app, ["digest", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "does not exist" in missing.output
