"""Loaders of the formats the built-in runtime serves: sklearn, xgboost, lightgbm, onnx, string here;
pytorch, tensorflow, keras, openvino_ir and python (custom models) in ``formats/``.

Each loader reads one model file and returns a ``LoadedModel`` with V2 metadata. Framework imports
happen inside the loaders, so a process that never loads an ONNX model never pays for onnxruntime.
Numeric models take one ``input-0`` tensor ``[-1, n_features]`` (ONNX models keep their own input
names) and answer ``output-0``; the runtime casts numeric request datatypes to the model's dtype.

Loading a pickle (sklearn) runs code from the file: only load models you trust, as with any
pickle-based server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kserve_mesh.core.errors import ModelLoadFailed
from kserve_mesh.runtime.builtin.models import (
    BYTES_DATATYPES,
    INPUT_ALIASES,
    LIGHTGBM,
    ONNX,
    PYTHON,
    SKLEARN,
    STRING,
    XGBOOST,
    LoadedModel,
    TensorSpec,
    accepted_datatypes,
)
from kserve_mesh.runtime.builtin.sklearn_linear import linear_predict

logger = logging.getLogger(__name__)

INPUT = "input-0"
OUTPUT = "output-0"


def _datatype_of_numpy(dtype: np.dtype) -> str:
    if dtype.kind in "USO":
        return "BYTES"
    from kserve_mesh.protocol.tensors import datatype_of

    return datatype_of(dtype)


def _features_input(n_features: int, dtype: Any) -> TensorSpec:
    dt = np.dtype(dtype)
    datatype = _datatype_of_numpy(dt)
    return TensorSpec(INPUT, datatype, (-1, n_features), accepted_datatypes(datatype), dt, INPUT_ALIASES)


def _trusted_inputs() -> Any:
    """scikit-learn's configuration for inputs already checked: no finiteness check, no parameter
    validation (thread-local, so other threads' predicts are not affected)."""
    import sklearn

    return sklearn.config_context(assume_finite=True, skip_parameter_validation=True)


class SklearnModel(LoadedModel):
    """A scikit-learn estimator (or pipeline) from joblib/pickle; ``output-0`` is ``predict``."""

    model_type = SKLEARN
    platform = "sklearn"

    def __init__(self, estimator: Any) -> None:
        if not hasattr(estimator, "predict"):
            raise ModelLoadFailed(f"the sklearn file holds a {type(estimator).__name__}, which has no predict()")
        self._estimator = estimator
        self._linear = linear_predict(estimator)
        n_features = int(getattr(estimator, "n_features_in_", -1))
        self.inputs = (_features_input(n_features, np.float64),)
        classes = getattr(estimator, "classes_", None)
        out_dt = _datatype_of_numpy(np.asarray(classes).dtype) if classes is not None else "FP64"
        self.outputs = (TensorSpec(OUTPUT, out_dt, (-1,)),)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs[INPUT]
        finite = x.dtype.kind == "f" and bool(np.isfinite(x).all())
        if finite and self._linear is not None and x.dtype == np.float64 and x.ndim == 2 and len(x):
            # One of scikit-learn's linear models, checked at load to give exactly its answers
            # (sklearn_linear.py): the matrix product alone, ~5 µs instead of ~300 for a few rows.
            result = self._linear(x)
        elif finite:
            # Checked here (float, finite; shape and dtype by the runtime's validation): scikit-learn
            # need not check again (~30% of a small predict). Non-finite inputs take the plain path,
            # so estimators that accept NaN still see it and the others still refuse it.
            with _trusted_inputs():
                result = np.asarray(self._estimator.predict(x))
        else:
            result = np.asarray(self._estimator.predict(x))
        if result.dtype.kind == "U":
            result = np.array([s.encode() for s in result.ravel()], dtype=object).reshape(result.shape)
        return {OUTPUT: result}


class XGBoostModel(LoadedModel):
    """An XGBoost Booster (.json/.ubj); ``output-0`` is what the booster predicts (probabilities
    for ``multi:softprob``, classes for ``multi:softmax``, a score or probability otherwise)."""

    model_type = XGBOOST
    platform = "xgboost"

    def __init__(self, booster: Any) -> None:
        self._booster = booster
        config = json.loads(booster.save_config())
        learner = config.get("learner", {})
        objective = learner.get("objective", {}).get("name", "")
        num_class = int(learner.get("learner_model_param", {}).get("num_class", "0") or 0)
        self.inputs = (_features_input(int(booster.num_features()), np.float32),)
        shape = (-1, num_class) if objective == "multi:softprob" and num_class > 1 else (-1,)
        self.outputs = (TensorSpec(OUTPUT, "FP32", shape),)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {OUTPUT: np.asarray(self._booster.inplace_predict(inputs[INPUT]))}


class LightGBMModel(LoadedModel):
    """A LightGBM Booster (text format); ``output-0`` is ``predict`` (class probabilities for
    multiclass models)."""

    model_type = LIGHTGBM
    platform = "lightgbm"

    def __init__(self, booster: Any) -> None:
        self._booster = booster
        self.inputs = (_features_input(int(booster.num_feature()), np.float64),)
        per_iteration = int(booster.num_model_per_iteration())
        shape = (-1, per_iteration) if per_iteration > 1 else (-1,)
        self.outputs = (TensorSpec(OUTPUT, "FP64", shape),)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {OUTPUT: np.asarray(self._booster.predict(inputs[INPUT], num_threads=1))}


_ONNX_TYPES = {
    "tensor(float)": ("FP32", np.float32),
    "tensor(double)": ("FP64", np.float64),
    "tensor(float16)": ("FP16", np.float16),
    "tensor(int8)": ("INT8", np.int8),
    "tensor(int16)": ("INT16", np.int16),
    "tensor(int32)": ("INT32", np.int32),
    "tensor(int64)": ("INT64", np.int64),
    "tensor(uint8)": ("UINT8", np.uint8),
    "tensor(uint16)": ("UINT16", np.uint16),
    "tensor(uint32)": ("UINT32", np.uint32),
    "tensor(uint64)": ("UINT64", np.uint64),
    "tensor(bool)": ("BOOL", np.bool_),
    "tensor(string)": ("BYTES", np.object_),
}


def _onnx_shape(shape: list[Any]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


class OnnxModel(LoadedModel):
    """An ONNX graph run by onnxruntime on CPU, one thread per session (many models share a
    process, so per-model thread pools would multiply threads). Non-tensor outputs (e.g. the
    ZipMap of skl2onnx classifiers) are left out of the metadata and the response."""

    model_type = ONNX
    platform = "onnxruntime_onnx"

    def __init__(self, session: Any) -> None:
        self._session = session
        specs = []
        for arg in session.get_inputs():
            if arg.type not in _ONNX_TYPES:
                raise ModelLoadFailed(f"ONNX input '{arg.name}' has unsupported type {arg.type}")
            datatype, dt = _ONNX_TYPES[arg.type]
            specs.append(
                TensorSpec(arg.name, datatype, _onnx_shape(arg.shape), accepted_datatypes(datatype), np.dtype(dt))
            )
        self.inputs = tuple(specs)
        outs = []
        for arg in session.get_outputs():
            if arg.type in _ONNX_TYPES:
                outs.append(TensorSpec(arg.name, _ONNX_TYPES[arg.type][0], _onnx_shape(arg.shape)))
        if not outs:
            raise ModelLoadFailed("the ONNX model has no tensor outputs")
        self.outputs = tuple(outs)
        self._output_names = [o.name for o in outs]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._session.run(self._output_names, inputs)
        return dict(zip(self._output_names, (np.asarray(r) for r in results), strict=True))


class StringModel(LoadedModel):
    """A tiny test model for density runs: its "weights" are the text of its file.

    Input ``input-0`` BYTES ``[-1]``; output ``output-0`` BYTES, each element the model text
    followed by the input element (so a response shows which model answered).
    """

    model_type = STRING
    platform = "kserve-mesh_string"
    # Interpreter overhead of one loaded string model (objects, dict slots), a generous round figure.
    OVERHEAD_BYTES = 2048

    def __init__(self, text: bytes) -> None:
        self._text = text
        self.inputs = (TensorSpec(INPUT, "BYTES", (-1,), BYTES_DATATYPES, None, INPUT_ALIASES),)
        self.outputs = (TensorSpec(OUTPUT, "BYTES", (-1,)),)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arr = inputs[INPUT]
        text = self._text
        out = np.empty(arr.shape, dtype=object)
        flat_in, flat_out = arr.reshape(-1), out.reshape(-1)
        for i, item in enumerate(flat_in):
            flat_out[i] = text + (item if isinstance(item, bytes) else str(item).encode())
        return {OUTPUT: out}

    def fixed_size_bytes(self) -> int | None:
        return self.OVERHEAD_BYTES + len(self._text)

    def warm_up(self) -> None:
        return None


def _load_sklearn(path: Path) -> LoadedModel:
    import joblib

    return SklearnModel(joblib.load(path))


def _load_xgboost(path: Path) -> LoadedModel:
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(str(path))
    booster.set_param({"nthread": 1})
    return XGBoostModel(booster)


def _load_lightgbm(path: Path) -> LoadedModel:
    import lightgbm

    return LightGBMModel(lightgbm.Booster(model_file=str(path)))


def _load_onnx(path: Path) -> LoadedModel:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return OnnxModel(session)


def _load_string(path: Path) -> LoadedModel:
    return StringModel(path.read_bytes().strip())


LOADERS: dict[str, Callable[[Path], LoadedModel]] = {
    SKLEARN: _load_sklearn,
    XGBOOST: _load_xgboost,
    LIGHTGBM: _load_lightgbm,
    ONNX: _load_onnx,
    STRING: _load_string,
}


def load_model_file(model_type: str, path: Path, model_id: str = "") -> LoadedModel:
    """Load one model file (or directory: SavedModel, custom model) of a known format. Blocking;
    wraps library errors in ModelLoadFailed. ``model_id`` names a custom model in its errors
    (its file is always ``model.py``) and keeps its module apart from other models'."""
    from kserve_mesh.runtime.builtin.formats import FORMAT_LOADERS

    if model_type in FORMAT_LOADERS:
        return _load_format(model_type, path, model_id, FORMAT_LOADERS[model_type])
    loader = LOADERS.get(model_type)
    if loader is None:
        raise ModelLoadFailed(f"unsupported model type '{model_type}'")
    try:
        return loader(path)
    except ModelLoadFailed:
        raise
    except ImportError as exc:
        raise ModelLoadFailed(f"cannot load {model_type} models here: {exc}") from exc
    except Exception as exc:  # any library error is a load failure of this file
        raise ModelLoadFailed(f"cannot load {model_type} model '{path.name}': {type(exc).__name__}: {exc}") from exc


def _load_format(model_type: str, path: Path, model_id: str, loader: Callable[[Path, str], LoadedModel]) -> LoadedModel:
    """A loader of ``formats/``: its own errors already say what is wrong; each gets the model's name."""
    shown = model_id if model_type == PYTHON and model_id else path.name
    try:
        return loader(path, model_id)
    except ModelLoadFailed as exc:
        if str(exc).startswith("cannot load "):
            raise
        raise ModelLoadFailed(f"cannot load {model_type} model '{shown}': {exc}") from exc
    except Exception as exc:  # any library error is a load failure of this file
        raise ModelLoadFailed(f"cannot load {model_type} model '{shown}': {type(exc).__name__}: {exc}") from exc
