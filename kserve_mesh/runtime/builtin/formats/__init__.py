"""Loaders of the deep-learning and custom formats of the built-in runtime.

``pytorch`` (TorchScript), ``tensorflow`` (SavedModel) and ``keras`` (``.keras`` / ``.h5``),
``openvino_ir`` (``.xml`` + ``.bin``) and ``python`` (custom models, ``kserve_mesh.model``). Each
framework is an optional dependency (a pyproject extra, ``deps.py``) imported only when the first
model of its format loads, so the mesh's start and the other formats never pay for it.
docs/formats.md has the table of formats, runtimes and tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kserve_mesh.runtime.builtin.formats.deps import FRAMEWORKS, Framework, import_framework
from kserve_mesh.runtime.builtin.models import KERAS, OPENVINO, PYTHON, PYTORCH, TENSORFLOW, LoadedModel


def _load_pytorch(path: Path, model_id: str) -> LoadedModel:
    from kserve_mesh.runtime.builtin.formats.torchscript import load_torchscript

    return load_torchscript(path)


def _load_tensorflow(path: Path, model_id: str) -> LoadedModel:
    from kserve_mesh.runtime.builtin.formats.tensorflow import load_tensorflow

    return load_tensorflow(path, TENSORFLOW)


def _load_keras(path: Path, model_id: str) -> LoadedModel:
    from kserve_mesh.runtime.builtin.formats.tensorflow import load_tensorflow

    return load_tensorflow(path, KERAS)


def _load_openvino(path: Path, model_id: str) -> LoadedModel:
    from kserve_mesh.runtime.builtin.formats.openvino_ir import load_openvino_ir

    return load_openvino_ir(path)


def _load_python(path: Path, model_id: str) -> LoadedModel:
    from kserve_mesh.runtime.builtin.formats.custom import load_custom_model

    return load_custom_model(path, model_id)


FORMAT_LOADERS: dict[str, Callable[[Path, str], LoadedModel]] = {
    PYTORCH: _load_pytorch,
    TENSORFLOW: _load_tensorflow,
    KERAS: _load_keras,
    OPENVINO: _load_openvino,
    PYTHON: _load_python,
}

__all__ = ["FORMAT_LOADERS", "FRAMEWORKS", "Framework", "import_framework"]
