"""Tiny models of the built-in runtime's deep-learning and custom formats, made by the tests with
the real libraries (TorchScript, Keras/SavedModel, OpenVINO IR, custom ``model.py``), and the
numpy arithmetic that says what each must answer.

Each numeric model is the same function, ``softmax(x @ W + b)`` on 4 features into 3 classes, with
fixed weights, so an answer through any runtime and any transport is checked against one formula.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO lines on import
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

W = np.array([[0.5, -0.2, 0.1], [0.3, 0.8, -0.5], [-0.6, 0.1, 0.9], [0.2, -0.4, 0.3]], dtype=np.float32)
B = np.array([0.1, -0.1, 0.05], dtype=np.float32)
X = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


def expected(x: np.ndarray = X) -> np.ndarray:
    z = x.astype(np.float32) @ W + B
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def make_torchscript(folder: Path, name: str = "model.pt") -> Path:
    """``folder/name``: a scripted ``Linear(4, 3)`` + softmax; its argument is named ``x``."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)
            with torch.no_grad():
                self.linear.weight.copy_(torch.from_numpy(W.T.copy()))
                self.linear.bias.copy_(torch.from_numpy(B))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.linear(x), dim=1)

    folder.mkdir(parents=True, exist_ok=True)
    torch.jit.script(Net().eval()).save(str(folder / name))
    return folder / name


TRITON_CONFIG = """\
name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: 8
input [
  {{
    name: "INPUT__0"
    data_type: TYPE_FP32
    dims: [ 4 ]
  }}
]
output [
  {{
    name: "OUTPUT__0"
    data_type: TYPE_FP32
    dims: [ 3 ]
  }}
]
"""


def make_torch_triton_layout(folder: Path) -> Path:
    """ModelMesh Serving's pytorch example layout: ``folder/config.pbtxt`` and ``folder/1/model.pt``."""
    make_torchscript(folder / "1")
    (folder / "config.pbtxt").write_text(TRITON_CONFIG.format(name=folder.name))
    return folder


def keras_model():  # type: ignore[no-untyped-def]
    import keras

    inp = keras.Input(shape=(4,), name="features")
    out = keras.layers.Dense(3, activation="softmax", name="probs")(inp)
    model = keras.Model(inp, out)
    model.get_layer("probs").set_weights([W, B])
    return model


def make_keras(folder: Path, name: str = "model.keras") -> Path:
    """``folder/name`` (``.keras`` or legacy ``.h5``): input ``features``, output ``probs``."""
    folder.mkdir(parents=True, exist_ok=True)
    keras_model().save(str(folder / name))
    return folder / name


def make_savedmodel(folder: Path) -> Path:
    """A TensorFlow SavedModel directory (``saved_model.pb`` + ``variables/``), exported by Keras:
    signature ``serving_default`` with input ``features`` and output ``output_0``."""
    keras_model().export(str(folder), verbose=False)
    return folder


def make_openvino(folder: Path, name: str = "model") -> Path:
    """``folder/name.xml`` + ``.bin``: an OpenVINO graph (MatMul, Add, SoftMax) built with the
    opset API, input ``features`` and output ``probs``."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([-1, 4], np.float32, name="features")
    z = ops.add(ops.matmul(x, ops.constant(W), False, False), ops.constant(B))
    probs = ops.softmax(z, 1)
    probs.output(0).get_tensor().set_names({"probs"})
    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Model([probs], [x], "tiny"), str(folder / f"{name}.xml"), compress_to_fp16=False)
    return folder / f"{name}.xml"


CUSTOM_MODEL = '''\
import numpy as np
from kserve_mesh.model import Model, Tensor


class Softmax(Model):
    """softmax(x @ W + b), its weights read from weights.json beside this file."""

    inputs = [Tensor("x", "FP32", [-1, 4])]
    outputs = [Tensor("probs", "FP32", [-1, 3]), Tensor("label", "BYTES", [-1])]

    def load(self) -> None:
        import json

        doc = json.loads((self.model_dir / "weights.json").read_text())
        self.w = np.array(doc["w"], dtype=np.float32)
        self.b = np.array(doc["b"], dtype=np.float32)
        self.labels = self.parameters.get("labels", ["a", "b", "c"])

    def predict(self, inputs):
        x = inputs["x"]
        if np.isnan(x).any():
            raise ValueError("x must not hold NaN")
        z = x @ self.w + self.b
        e = np.exp(z - z.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
        return {"probs": probs, "label": np.array([self.labels[i] for i in probs.argmax(axis=1)])}
'''


def make_custom(folder: Path, labels: list[str] | None = None) -> Path:
    """A custom model folder: ``model.py`` (class ``Softmax``), ``weights.json`` and, given
    ``labels``, a ``model-settings.json`` passing them as parameters."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(CUSTOM_MODEL)
    (folder / "weights.json").write_text(json.dumps({"w": W.tolist(), "b": B.tolist()}))
    if labels is not None:
        (folder / "model-settings.json").write_text(json.dumps({"parameters": {"labels": labels}}))
    return folder


def make_custom_source(folder: Path, source: str) -> Path:
    """A custom model folder whose ``model.py`` is ``source`` (dedented)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(textwrap.dedent(source))
    return folder
