"""``up`` and ``instance`` before and around a start: from any folder and with the base install (the
example models made with what is installed), every KSERVE_MESH_* variable honoured, a missing models
folder or a taken port as one line naming the flag, help with descriptions, defaults and variables
for every command (``runtime`` and ``controller`` too), logs printed above progress bars."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mesh_process import MeshProcess

from kserve_mesh.cli import example_models
from kserve_mesh.cli.serving import start_failure

TRAINING_LIBRARIES = ("sklearn", "joblib", "xgboost", "lightgbm", "onnxruntime", "skl2onnx", "onnx")


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_missing_models_folder_is_one_line_naming_the_flag(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("up", "--models", str(tmp_path / "nope"))
    assert result.exit_code == 1 and "--models" in result.stderr and "does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    result = cli("up", env={"KSERVE_MESH_MODELS_DIR": str(tmp_path / "nope")})  # the variable is honoured
    assert result.exit_code == 1 and "nope does not exist" in result.stderr, result.stderr
    result = cli("instance", "--models", str(tmp_path / "nope"))
    assert result.exit_code == 1 and "--models" in result.stderr, result.stderr


def test_a_taken_port_is_one_line_naming_it_whether_a_flag_or_a_variable_chose_it(  # type: ignore[no-untyped-def]
        cli, cli_models: Path, taken_port: int) -> None:
    base = ("--models", str(cli_models), "--metrics-port", "0")
    result = cli("up", *base, "--rest-port", "0", "--grpc-port", str(taken_port))
    assert result.exit_code == 1, result.stdout
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and f"port {taken_port} on 127.0.0.1 is in use" in line
    assert "--grpc-port" in line and "KSERVE_MESH_GRPC_PORT" in line
    result = cli("up", *base, "--grpc-port", "0", env={"KSERVE_MESH_REST_PORT": str(taken_port)})
    assert result.exit_code == 1 and f"port {taken_port}" in result.stderr and "--rest-port" in result.stderr
    result = cli("instance", "--models", str(cli_models), "--rest-port", "0", "--grpc-port", "0",
                 env={"KSERVE_MESH_METRICS_PORT": str(taken_port)})
    assert result.exit_code == 1 and f"port {taken_port}" in result.stderr and "--metrics-port" in result.stderr


def test_a_bind_failure_during_the_start_names_the_port() -> None:
    from kserve_mesh.settings import MeshSettings

    s = MeshSettings(grpc_port=8033)
    text = start_failure(RuntimeError("Failed to bind to address 127.0.0.1:8033; set GRPC_VERBOSITY=debug"), s)
    assert text.startswith("port 8033 on 127.0.0.1 is in use") and "--grpc-port" in text


def test_a_second_up_on_the_same_ports_is_one_line(cli_mesh: MeshProcess, cli_models: Path) -> None:
    port = cli_mesh.grpc.rsplit(":", 1)[1]
    out = subprocess.run([sys.executable, "-m", "kserve_mesh.cli", "up", "--models", str(cli_models),
                          "--rest-port", "0", "--metrics-port", "0", "--grpc-port", port],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1
    expected = (f"error: port {port} on 127.0.0.1 is in use (another kserve-mesh running?): stop it, or choose "
                "other ports with --grpc-port (or KSERVE_MESH_GRPC_PORT; 0 takes any free port)")
    assert out.stderr.strip().splitlines() == [expected], out.stderr


def test_help_has_descriptions_defaults_and_variables_in_one_style(cli) -> None:  # type: ignore[no-untyped-def]
    for command in ("up", "instance"):
        text = re.sub(r"[\s│]", "", cli(command, "--help", env={"COLUMNS": "300"}).stdout)  # cells as one string
        assert "(envKSERVE_MESH_REST_PORT;default8008)" in text, text
        assert "whensetenvKSERVE_MESH_CAPACITY_BYTES;default536870912" in text.replace("(", "").replace(")", ""), text
    runtime = cli("runtime", "--help")
    assert runtime.exit_code == 0 and "╭─ Options" in runtime.stdout and "[default: 8085]" in runtime.stdout
    assert "loads run at once" in runtime.stdout
    controller = cli("controller", "--help")
    assert controller.exit_code == 0 and "╭─ Options" in controller.stdout
    assert "KSERVE_MESH_MESH_ADDRESS" in controller.stdout and "{service}.{namespace}:{port}" in controller.stdout


def test_logs_go_through_the_console_that_draws_progress_bars() -> None:
    from rich.logging import RichHandler

    from kserve_mesh.cli.output import err_console
    from kserve_mesh.cli.serving import setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("warning", terminal=True)
        assert [type(h) for h in root.handlers] == [RichHandler] and root.handlers[0].console is err_console
        assert root.level == logging.WARNING
        setup_logging("info", terminal=False)  # a pipe or a pod's log: plain lines, as tools read them
        assert [type(h) for h in root.handlers] == [logging.StreamHandler] and root.level == logging.INFO
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])


def test_examples_are_made_with_what_is_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # find_spec says: not installed
    inputs = example_models.make_all(tmp_path, installed_only=True)
    assert sorted(inputs) == ["string-1", "string-2", "string-3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs.json", "string-1", "string-2", "string-3"]


def test_up_outside_a_clone_with_the_base_install(tmp_path: Path) -> None:
    """From an empty folder, with the training libraries hidden (as after `pip install kserve-mesh`):
    the example models that need nothing are made in the user's cache and served, loaded with --load."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(f"import sys\nfor name in {TRAINING_LIBRARIES!r}:\n"
                                           "    sys.modules[name] = None\n")
    work = tmp_path / "anywhere"
    work.mkdir()
    env = {"PYTHONPATH": str(hide), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    mesh = MeshProcess.start("--load", cwd=work, env=env, timeout=120)
    try:
        models = {m["modelId"]: m for m in mesh.call("GET", "/mesh/v1/models")[1]["models"]}
        assert sorted(models) == ["string-1", "string-2", "string-3"]
        for model_id in models:
            mesh.wait_state(model_id, {"LOADED"})
        log = mesh.log()
        assert "not made:" in log and "sklearn-iris" in log and "kserve-mesh[runtimes]" in log, log
        assert "loading them now" in log and "loaded on first request" not in log
        assert (tmp_path / "cache" / "kserve-mesh" / "example-models" / "string-1" / "model.string").exists()
        assert not list(work.iterdir())  # nothing written where it was started
    finally:
        assert mesh.stop() == 0, mesh.log()
