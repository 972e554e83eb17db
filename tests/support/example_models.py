"""The example models (examples/make_models.py), made once per test session; scripts loaded as modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str, path: Path) -> ModuleType:
    """The script at ``path`` (a repository file outside the package: an example, a benchmark) as
    module ``name``, loaded once per test session."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def make_models_module() -> ModuleType:
    return load_script("kserve_mesh_example_make_models", ROOT / "examples" / "make_models.py")
