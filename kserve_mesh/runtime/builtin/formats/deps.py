"""The optional framework of each format: which module it needs, which pyproject extra brings it,
and the one error a missing framework gives (naming the extra to install).

Imported lazily, by the first load of a model of that format: ``import torch`` costs seconds and
hundreds of MB, which a mesh serving only sklearn models must never pay.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType

from kserve_mesh.core.errors import ModelLoadFailed
from kserve_mesh.runtime.builtin.models import KERAS, OPENVINO, PYTORCH, TENSORFLOW


@dataclass(frozen=True, slots=True)
class Framework:
    """``modules`` are imported (in order) before a model of the format loads; ``package`` is what
    pip calls the distribution, ``extra`` the kserve-mesh extra that installs it."""

    modules: tuple[str, ...]
    package: str
    extra: str
    env: tuple[tuple[str, str], ...] = ()
    """Environment defaults set before the first import (a variable already set is kept)."""

    @property
    def install_hint(self) -> str:
        return f"pip install 'kserve-mesh[{self.extra}]'"


# TensorFlow's C++ INFO/WARNING lines (oneDNN, CPU features) go to stderr on import; keep errors.
_TF_ENV = (("TF_CPP_MIN_LOG_LEVEL", "2"), ("KERAS_BACKEND", "tensorflow"))

FRAMEWORKS: dict[str, Framework] = {
    PYTORCH: Framework(("torch",), "torch", "torch"),
    TENSORFLOW: Framework(("tensorflow", "keras"), "tensorflow", "tensorflow", _TF_ENV),
    KERAS: Framework(("tensorflow", "keras"), "tensorflow", "tensorflow", _TF_ENV),
    OPENVINO: Framework(("openvino",), "openvino", "openvino"),
}


def import_framework(model_type: str, module: str) -> ModuleType:
    """``importlib.import_module(module)``; a framework that is not installed is a
    ``ModelLoadFailed`` naming the format, the package and the extra that installs it."""
    framework = FRAMEWORKS.get(model_type)
    for name, value in framework.env if framework is not None else ():
        os.environ.setdefault(name, value)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if framework is None:
            raise
        raise ModelLoadFailed(
            f"cannot load {model_type} models: the Python package '{framework.package}' is not installed "
            f"in the runtime ({exc}); install it with {framework.install_hint}"
        ) from exc
