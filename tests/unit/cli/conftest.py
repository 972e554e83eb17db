"""Fixtures of the CLI tests: a real mesh serving two string models (loaded at start), and a runner
of the ``kserve-mesh`` app in this process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mesh_process import MeshProcess
from typer.testing import CliRunner

from kserve_mesh.cli import app
from kserve_mesh.cli.example_models import make_string


@pytest.fixture(scope="module")
def cli_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-models")
    make_string(out, "string-1")
    make_string(out, "string-2")
    return out


@pytest.fixture(scope="module")
def cli_mesh(cli_models: Path) -> Iterator[MeshProcess]:
    proc = MeshProcess.start("--models", str(cli_models), "--load")
    try:
        proc.wait_state("string-2", {"LOADED"})
        yield proc
    finally:
        proc.stop()


class Run:
    """``kserve-mesh ARGS`` in this process: exit code, stdout and stderr apart."""

    def __init__(self) -> None:
        from kserve_mesh.cli_kube import register_commands

        if not any(c.name == "apply" for c in app.registered_commands):
            register_commands(app)
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        result = self.runner.invoke(app, list(args), input=input, env=env, prog_name="kserve-mesh")
        out = result.stdout + result.stderr
        assert "Traceback" not in out, out
        return result


@pytest.fixture(scope="module")
def cli() -> Run:
    return Run()
