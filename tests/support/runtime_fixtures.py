"""Runtime test fixtures: tiny real models, made once per session by examples/make_models.py, and
the samples of its inputs.json."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from example_models import make_models_module as _make_models_module


@pytest.fixture(scope="session")
def make_models() -> ModuleType:
    return _make_models_module()


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory, make_models: ModuleType) -> tuple[Path, dict[str, Any]]:
    """(directory of example models, the inputs.json map)."""
    out = tmp_path_factory.mktemp("models")
    return out, make_models.make_all(out, string_models=2)


@pytest.fixture(scope="session")
def models_dir(models: tuple[Path, dict[str, Any]]) -> Path:
    return models[0]


@pytest.fixture(scope="session")
def samples(models: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    return models[1]
