"""The README's flow on a fresh folder: `kserve-mesh up` makes the example models and serves them,
`kserve-mesh infer` answers, `models` and `status` show tables, `register`/`unregister` work, and
bad input gives a one-line error with a non-zero exit (no traceback)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mesh_process import MeshProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kserve_mesh.cli", *args], capture_output=True, text=True,
                          input=stdin, timeout=120)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("fresh-clone")
    (work / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "make_models.py", work / "examples" / "make_models.py")
    return work


@pytest.fixture(scope="module")
def up(workdir: Path) -> Iterator[MeshProcess]:
    # `kserve-mesh up` as the README runs it, but on ephemeral ports so tests never collide.
    proc = MeshProcess.start(cwd=workdir, timeout=180)
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.log()


def test_up_makes_the_examples_and_serves_them(up: MeshProcess, workdir: Path) -> None:
    assert (workdir / "examples" / "models" / "inputs.json").exists()
    out = cli("models", "--url", up.rest)
    assert out.returncode == 0, out.stderr
    for model_id in ("sklearn-iris", "xgboost-iris", "lightgbm-iris", "onnx-iris"):
        assert model_id in out.stdout


def test_infer_answers(up: MeshProcess, workdir: Path) -> None:
    cases = json.loads((workdir / "examples" / "models" / "inputs.json").read_text())
    request = json.dumps(cases["sklearn-iris"]["request"])
    out = cli("infer", "sklearn-iris", "-d", request, "--url", up.rest)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["model_name"] == "sklearn-iris"
    assert body["outputs"][0]["data"] == cases["sklearn-iris"]["expected"]["outputs"][0]["data"]
    out = cli("infer", "onnx-iris", "--url", up.rest, stdin=json.dumps(cases["onnx-iris"]["request"]))
    assert out.returncode == 0 and json.loads(out.stdout)["model_name"] == "onnx-iris", out.stderr
    status = cli("status", "--url", up.rest)
    assert status.returncode == 0 and "CAPACITY" in status.stdout, status.stderr
    as_json = json.loads(cli("status", "-o", "json", "--url", up.rest).stdout)
    assert as_json["modelsLoaded"] >= 2 and as_json["usedBytes"] <= as_json["capacityBytes"]


def test_register_and_unregister(up: MeshProcess, workdir: Path) -> None:
    path = str(workdir / "examples" / "models" / "xgboost-iris")
    out = cli("register", "my-xgb", "--type", "xgboost", "--path", path, "--load", "--url", up.rest)
    assert out.returncode == 0 and "LOADED" in out.stdout, out.stdout + out.stderr
    models = json.loads(cli("models", "-o", "json", "--url", up.rest).stdout)
    assert any(m["modelId"] == "my-xgb" and m["status"] == "LOADED" for m in models)
    assert cli("unregister", "my-xgb", "--url", up.rest).returncode == 0
    models = json.loads(cli("models", "-o", "json", "--url", up.rest).stdout)
    assert not any(m["modelId"] == "my-xgb" for m in models)


def test_cli_errors_are_one_line(up: MeshProcess, workdir: Path) -> None:
    cases = [
        (("infer", "nope", "-d", '{"inputs": []}', "--url", up.rest), "not found"),
        (("infer", "sklearn-iris", "-d", "{bad json", "--url", up.rest), "not valid JSON"),
        (("register", "bad", "--type", "sklearn", "--path", str(workdir / "missing"), "--load", "--url", up.rest),
         "missing"),
        (("models", "--url", "http://127.0.0.1:1"), "cannot reach"),
    ]
    for args, fragment in cases:
        out = cli(*args)
        assert out.returncode != 0, args
        assert fragment in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr + out.stdout
