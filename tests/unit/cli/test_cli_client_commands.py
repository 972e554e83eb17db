"""The commands that talk to a running mesh, as a newcomer meets them: ``-o table|json|yaml`` (an
unknown format refused), "never" for models never used, a true cache age, errors in full, a
not-found ``unregister``, ``infer`` with no request, registrations refused at once (unknown type,
missing local path), load failures logged by the server, ``--version``. No traceback ever (the
runner asserts it), a non-zero exit on every error."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml
from mesh_process import MeshProcess

from kserve_mesh import __version__
from kserve_mesh.core.ids import ModelId
from kserve_mesh.core.records import ModelInfo, ModelRecord
from kserve_mesh.store.codec import decode_model, encode_model

STRING_REQUEST = json.dumps({"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]})


def squeeze(text: str) -> str:
    """A table's text without borders and white space (a wrapped cell reads as one string)."""
    return re.sub(r"[\s│┃|]", "", text)


def test_version(cli) -> None:  # type: ignore[no-untyped-def]
    for flag in ("--version", "-V"):
        result = cli(flag)
        assert result.exit_code == 0 and result.stdout.strip() == f"kserve-mesh {__version__}"


def test_output_formats_everywhere_and_unknown_ones_refused(cli, cli_mesh: MeshProcess) -> None:  # type: ignore[no-untyped-def]
    url = ("--url", cli_mesh.rest)
    as_json = json.loads(cli("models", "-o", "json", *url).stdout)
    as_yaml = yaml.safe_load(cli("models", "-o", "yaml", *url).stdout)
    assert {m["modelId"] for m in as_json} == {m["modelId"] for m in as_yaml} == {"string-1", "string-2"}
    assert yaml.safe_load(cli("status", "--output", "yaml", *url).stdout)["modelsRegistered"] == 2
    for command in (("models",), ("status",), ("vmodel", "get", "v"), ("get", "isvc")):
        result = cli(*command, "-o", "xml", *url)
        assert result.exit_code != 0 and "xml" in result.stderr, (command, result.stderr)


def test_never_used_models_say_never_and_the_cache_age_is_true(cli, cli_mesh: MeshProcess) -> None:  # type: ignore[no-untyped-def]
    url = ("--url", cli_mesh.rest)
    rows = {m["modelId"]: m for m in json.loads(cli("models", "-o", "json", *url).stdout)}
    assert rows["string-1"]["lastUsedTime"] == rows["string-2"]["lastUsedTime"] == 0
    status = cli("status", *url).stdout
    assert "unused" in status and "60m" not in status and "6.0h" not in status, status
    assert "GPU memory accounting off: no GPU: " in " ".join(status.split()), status  # said, not hidden
    assert cli("infer", "string-1", "-d", STRING_REQUEST, *url).exit_code == 0
    table = cli("models", *url).stdout
    line = {ln.split("│")[1].strip(): ln for ln in table.splitlines() if "string-" in ln}
    assert re.search(r"\d+s ago", line["string-1"]) and "never" in line["string-2"], table
    used = {m["modelId"]: m for m in json.loads(cli("models", "-o", "json", *url).stdout)}["string-1"]
    assert abs(used["lastUsedTime"] / 1000 - time.time()) < 60


def test_the_registration_time_is_kept_by_the_store() -> None:
    rec = ModelRecord(ModelId("m"), ModelInfo("string", "p"), last_used_ms=5, registered_ms=9)
    assert decode_model(encode_model(rec)).registered_ms == 9
    old = ModelRecord(ModelId("m"), ModelInfo("string", "p"), last_used_ms=5)
    assert b"registered" not in encode_model(old) and decode_model(encode_model(old)).registered_ms == 0


def test_unregister_of_an_unknown_model_is_an_error(cli, cli_mesh: MeshProcess) -> None:  # type: ignore[no-untyped-def]
    result = cli("unregister", "no-such-model", "--url", cli_mesh.rest)
    assert result.exit_code == 1
    assert "no-such-model" in result.stderr and "not found" in result.stderr.lower(), result.stderr
    assert "unregistered" not in result.stdout


def test_registration_refuses_an_unknown_type_and_a_missing_path_at_once(cli, cli_mesh: MeshProcess,  # type: ignore[no-untyped-def]
                                                                        cli_models: Path) -> None:
    url = ("--url", cli_mesh.rest)
    path = str(cli_models / "string-1")
    result = cli("register", "bad-type", "--type", "pmml", "--path", path, *url)
    assert result.exit_code == 1 and "unsupported model type 'pmml'" in result.stderr, result.stderr
    missing = str(cli_models / "not-there.joblib")
    result = cli("register", "bad-path", "--type", "sklearn", "--path", missing, *url)
    assert result.exit_code == 1 and f"model path '{missing}' does not exist" in result.stderr, result.stderr
    ids = {m["modelId"] for m in json.loads(cli("models", "-o", "json", *url).stdout)}
    assert not ids & {"bad-type", "bad-path"}
    code, body = cli_mesh.call("PUT", "/mesh/v1/models/bad-type", {"modelInfo": {"type": "nope", "path": path}})
    assert code == 400 and "nope" in json.dumps(body)


def test_load_errors_show_in_full_and_the_server_logs_them(cli, cli_mesh: MeshProcess, cli_models: Path) -> None:  # type: ignore[no-untyped-def]
    url = ("--url", cli_mesh.rest)
    broken = cli_models / ("a-model-file-with-a-rather-long-name-so-that-its-error-runs-past-sixty-"
                           "characters.joblib")
    broken.write_bytes(b"not a pickled model")
    result = cli("register", "cli-broken", "--type", "sklearn", "--path", str(broken), "--load", *url)
    assert result.exit_code == 1 and "cannot load sklearn model" in result.stderr, result.stderr
    try:
        error = {m["modelId"]: m for m in json.loads(cli("models", "-o", "json", *url).stdout)}["cli-broken"]["errors"][0]
        assert len(error) > 100
        assert squeeze(error) in squeeze(cli("models", *url).stdout)
        deadline = time.monotonic() + 10
        while "loading model cli-broken failed" not in cli_mesh.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        logged = [ln for ln in cli_mesh.log().splitlines() if "loading model cli-broken failed" in ln]
        assert logged and "WARNING" in logged[0] and "cannot load sklearn model" in cli_mesh.log(), cli_mesh.log()
    finally:
        cli("unregister", "cli-broken", *url)


def test_infer_request_sources(cli, cli_mesh: MeshProcess, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = ("--url", cli_mesh.rest)
    result = cli("infer", "string-1", "-f", str(tmp_path / "missing.json"), *url)
    assert result.exit_code == 1 and "cannot read the request file" in result.stderr
    piped = cli("infer", "string-1", *url, input=STRING_REQUEST)
    assert piped.exit_code == 0 and json.loads(piped.stdout)["model_name"] == "string-1"
    empty = cli("infer", "string-1", *url, input="")
    assert empty.exit_code == 1 and "no request" in empty.stderr


def test_infer_on_a_terminal_without_a_request_is_an_error_not_a_wait(cli_mesh: MeshProcess) -> None:
    leader, follower = pty.openpty()
    try:
        out = subprocess.run([sys.executable, "-m", "kserve_mesh.cli", "infer", "string-1", "--url", cli_mesh.rest],
                             stdin=follower, capture_output=True, text=True, timeout=60, check=False)
    finally:
        os.close(leader)
        os.close(follower)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "no request" in out.stderr and "-d" in out.stderr and "Traceback" not in out.stderr
