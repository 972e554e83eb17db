"""The built-in Python runtime: model loaders for sklearn, xgboost, lightgbm, onnx, pytorch
(TorchScript), tensorflow / keras, openvino_ir, custom Python models (``kserve_mesh.model``) and a
tiny ``string`` test type, behind the ModelRuntime port (in-process, or as a gRPC server process).
The deep-learning and custom formats live in ``formats/``; docs/formats.md has the table."""

from kserve_mesh.runtime.builtin.fetch import Fetcher, LocalFetcher
from kserve_mesh.runtime.builtin.loaders import load_model_file
from kserve_mesh.runtime.builtin.models import (
    EXTENSIONS,
    LoadedModel,
    TensorSpec,
    detect_model_type,
    find_model_file,
    resolve_model_spec,
)
from kserve_mesh.runtime.builtin.runtime import BuiltinRuntime, RuntimeConfig

__all__ = [
    "EXTENSIONS",
    "BuiltinRuntime",
    "Fetcher",
    "LoadedModel",
    "LocalFetcher",
    "RuntimeConfig",
    "TensorSpec",
    "detect_model_type",
    "find_model_file",
    "load_model_file",
    "resolve_model_spec",
]
