"""Tiny Triton models made in the tests: an ONNX graph (y = 2x + 1), Python-backend models (one that
adds one, one that grows after its first call, one that raises while loading), a model whose
config.pbtxt is broken (the child-process helpers are in tests/support/child_process.py)."""

from __future__ import annotations

from pathlib import Path

ADD_CONFIG = """name: "whatever-it-was-called"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""

ADD_MODEL = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", (x + 1).astype(np.float32))]))
        return out
"""

# Small when loaded; holds 96 MiB from its first call on (memory no measured size accounts for).
GROW_MODEL = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        if not hasattr(self, "ballast"):
            self.ballast = np.ones(96 << 20, dtype=np.uint8)
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x.astype(np.float32))]))
        return out
"""

# Decoupled: answers a request for n with n responses 0..n-1, then the final flag.
COUNT_CONFIG = ADD_CONFIG + "model_transaction_policy { decoupled: true }\n"
COUNT_MODEL = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            n = int(pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()[0])
            for i in range(n):
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", np.array([i], np.float32))]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
"""

RAISING_MODEL = """class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("the weights are corrupt (raised on purpose)")

    def execute(self, requests):
        return []
"""


def make_python_model(root: Path, name: str, code: str = ADD_MODEL, config: str = ADD_CONFIG) -> Path:
    """A Triton Python-backend model folder: config.pbtxt + 1/model.py."""
    folder = root / name
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(config)
    (folder / "1" / "model.py").write_text(code)
    return folder


def make_onnx_model(root: Path, name: str = "affine") -> Path:
    """A folder holding model.onnx: y = 2x + 1 on float tensors of shape [n, 3]."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["t"]), helper.make_node("Add", ["t", "one"], ["y"])],
                              "affine", [x], [y], [two, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder = root / name
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")
    return folder
