"""Fixtures of the runtime unit tests: tiny real models, made once per session by
examples/make_models.py, and a helper to build V2 requests from its inputs.json."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _make_models_module() -> ModuleType:
    name = "kserve_mesh_example_make_models"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "make_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


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
