"""``tensorflow`` and ``keras`` models: a TensorFlow SavedModel directory, or a Keras 3 file
(``.keras``, or legacy ``.h5``), run on the CPU.

- SavedModel: ``tf.saved_model.load`` and its ``serving_default`` signature (the only one, or the
  first, when there is no such name); V2 metadata from the signature's inputs and outputs (names,
  dtypes, shapes with -1 for unknown dimensions). ModelMesh Serving's tensorflow example is one
  (``tensorflow/mnist.savedmodel``).
- Keras file: ``keras.saving.load_model(compile=False)``; inputs named after the model's input
  layers, outputs after its output layers (``output-0``... when Keras gives none); called as
  ``model(inputs, training=False)``. ModelMesh Serving's keras example is an ``.h5`` file.

A ``tensorflow`` model given as a Keras file and a ``keras`` model given as a SavedModel are loaded
all the same: both need the same libraries. TensorFlow runs one intra-op and one inter-op thread
(set before its first use in the process: many models share it, as ONNX sessions do).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from kserve_mesh.core.errors import ModelLoadFailed
from kserve_mesh.runtime.builtin.formats.common import dim, input_spec
from kserve_mesh.runtime.builtin.formats.deps import import_framework
from kserve_mesh.runtime.builtin.models import KERAS, SAVED_MODEL_FILE, TENSORFLOW, LoadedModel, TensorSpec

logger = logging.getLogger(__name__)

_configure = threading.Lock()
_configured = False

_TF_DATATYPES = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64", "float16": "FP16",
    "float32": "FP32", "float64": "FP64", "string": "BYTES",
}


def _tf(model_type: str) -> Any:
    global _configured
    tf = import_framework(model_type, "tensorflow")
    with _configure:
        if not _configured:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(1)
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:  # TensorFlow already ran something in this process: keep its threads
                logger.debug("TensorFlow was initialised before the first model load; thread settings kept")
            _configured = True
    return tf


def _datatype(model_type: str, what: str, name: str, dtype: Any) -> str:
    key = getattr(dtype, "name", str(dtype))
    if key not in _TF_DATATYPES:
        raise ModelLoadFailed(f"{what} '{name}' has dtype {key}, which no V2 datatype carries")
    return _TF_DATATYPES[key]


def _shape(shape: Any) -> tuple[int, ...]:
    dims = getattr(shape, "as_list", lambda: list(shape))() if shape is not None else None
    return tuple(dim(d) for d in dims) if dims is not None else (-1,)


class SavedModel(LoadedModel):
    model_type = TENSORFLOW
    platform = "tensorflow_savedmodel"

    def __init__(self, tf: Any, loaded: Any, signature_name: str, model_type: str) -> None:
        self.model_type = model_type
        self._tf = tf
        self._loaded = loaded  # keeps the variables the signature captures alive
        self._fn = loaded.signatures[signature_name]
        args, kwargs = self._fn.structured_input_signature
        if args:
            raise ModelLoadFailed(f"signature '{signature_name}' takes positional inputs; only named ones are served")
        specs = list(kwargs.items())
        single = len(specs) == 1
        self.inputs = tuple(
            input_spec(name, _datatype(model_type, "input", name, spec.dtype), _shape(spec.shape), single=single)
            for name, spec in specs)
        outputs = self._fn.structured_outputs
        if not isinstance(outputs, dict):
            raise ModelLoadFailed(f"signature '{signature_name}' does not return named outputs")
        self.outputs = tuple(TensorSpec(name, _datatype(model_type, "output", name, spec.dtype), _shape(spec.shape))
                             for name, spec in outputs.items())

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = self._tf
        feed = {}
        for spec in self.inputs:
            arr = inputs[spec.name]
            feed[spec.name] = tf.constant(arr.astype(np.bytes_) if spec.datatype == "BYTES" else arr)
        try:
            result = self._fn(**feed)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise ValueError(_first_line(exc)) from exc
        return {name: np.asarray(value.numpy()) for name, value in result.items()}


class KerasModel(LoadedModel):
    model_type = KERAS
    platform = "keras"

    def __init__(self, model: Any, model_type: str) -> None:
        self.model_type = model_type
        self._model = model
        tensors_in = list(getattr(model, "inputs", None) or [])
        if not tensors_in:
            raise ModelLoadFailed("the Keras model has no defined inputs (build it with keras.Input)")
        single = len(tensors_in) == 1
        self.inputs = tuple(
            input_spec(t.name, _datatype(model_type, "input", t.name, t.dtype), _shape(t.shape), single=single)
            for t in tensors_in)
        tensors_out = list(getattr(model, "outputs", None) or [])
        names = list(getattr(model, "output_names", None) or [])
        if len(names) != len(tensors_out):
            names = [f"output-{i}" for i in range(len(tensors_out))]
        self.outputs = tuple(TensorSpec(n, _datatype(model_type, "output", n, t.dtype), _shape(t.shape))
                             for n, t in zip(names, tensors_out, strict=True))

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [inputs[s.name] for s in self.inputs]
        try:
            result = self._model(args[0] if len(args) == 1 else args, training=False)
        except (ValueError, TypeError) as exc:
            raise ValueError(_first_line(exc)) from exc
        except Exception as exc:
            if type(exc).__name__ == "InvalidArgumentError":  # tf.errors: a shape or a dtype the graph refuses
                raise ValueError(_first_line(exc)) from exc
            raise
        values = list(result.values()) if isinstance(result, dict) else \
            list(result) if isinstance(result, (list, tuple)) else [result]
        return {spec.name: np.asarray(v) for spec, v in zip(self.outputs, values, strict=True)}


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def load_tensorflow(path: Path, model_type: str = TENSORFLOW) -> LoadedModel:
    tf = _tf(model_type)
    if path.is_dir():
        if not (path / SAVED_MODEL_FILE).is_file():
            raise ModelLoadFailed(f"directory '{path.name}' is not a SavedModel (no {SAVED_MODEL_FILE})")
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:  # TensorFlow raises many kinds for a bad directory
            raise ModelLoadFailed(f"'{path.name}' is not a readable SavedModel: {type(exc).__name__}: "
                                  f"{_first_line(exc)[:300]}") from exc
        names = list(loaded.signatures.keys())
        if not names:
            raise ModelLoadFailed(f"the SavedModel '{path.name}' has no signatures (export it with a serving "
                                  "signature: model.export() or tf.saved_model.save(..., signatures=...))")
        name = "serving_default" if "serving_default" in names else names[0]
        return SavedModel(tf, loaded, name, model_type)
    keras = import_framework(model_type, "keras")
    try:
        model = keras.saving.load_model(str(path), compile=False)
    except Exception as exc:  # h5py, zipfile and Keras all raise their own
        raise ModelLoadFailed(f"'{path.name}' is not a readable Keras model: {type(exc).__name__}: "
                              f"{_first_line(exc)[:300]}") from exc
    return KerasModel(model, model_type)
