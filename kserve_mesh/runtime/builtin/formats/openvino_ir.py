"""``openvino_ir`` models: an OpenVINO IR graph (``model.xml``) and its weights (``model.bin``,
the same name beside it), compiled for the CPU by the ``openvino`` runtime.

V2 metadata from the compiled model's ports: each port's tensor name, element type and partial
shape (-1 for a dynamic dimension). Compiled with one inference thread and one stream (many models
share the process), in f32 precision (the CPU plugin would otherwise pick bf16 where the CPU has it). A missing or empty ``.bin`` is checked before OpenVINO is asked (its own
message only says "Empty weights data"); an ``.xml`` that is not IR is refused as such (OpenVINO
would otherwise try each of its other frontends on it).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from kserve_mesh.core.errors import ModelLoadFailed
from kserve_mesh.runtime.builtin.formats.common import datatype_of, dim, input_spec
from kserve_mesh.runtime.builtin.formats.deps import import_framework
from kserve_mesh.runtime.builtin.models import OPENVINO, LoadedModel, TensorSpec

# One thread and one stream per model (many share the process); f32 as the model says: on CPUs with
# bf16 or fp16 units OpenVINO's default precision hint lowers it (answers off by ~1e-2).
_CPU_CONFIG = {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32"}

_core_lock = threading.Lock()
_core: Any = None


def _openvino_core() -> tuple[Any, Any]:
    global _core
    ov = import_framework(OPENVINO, "openvino")
    with _core_lock:
        if _core is None:
            _core = ov.Core()
    return ov, _core


def _port_name(port: Any, index: int, kind: str) -> str:
    try:
        return str(port.get_any_name())
    except RuntimeError:  # a port without a tensor name
        return f"{kind}-{index}"


def _port_datatype(port: Any, name: str) -> str:
    try:
        return datatype_of(port.get_element_type().to_dtype())
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ModelLoadFailed(f"port '{name}' has element type {port.get_element_type()}, which no V2 datatype "
                              "carries") from exc


def _port_shape(port: Any) -> tuple[int, ...]:
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        return (-1,)
    return tuple(-1 if d.is_dynamic else dim(d.get_length()) for d in shape)


class OpenVinoModel(LoadedModel):
    model_type = OPENVINO
    platform = "openvino_ir"

    def __init__(self, compiled: Any) -> None:
        self._compiled = compiled
        ins = list(compiled.inputs)
        single = len(ins) == 1
        self.inputs = tuple(
            input_spec(n, _port_datatype(p, n), _port_shape(p), single=single,
                       any_rank=p.get_partial_shape().rank.is_dynamic)
            for i, p in enumerate(ins) for n in (_port_name(p, i, "input"),))
        self._outputs = list(compiled.outputs)
        self.outputs = tuple(TensorSpec(n, _port_datatype(p, n), _port_shape(p))
                             for i, p in enumerate(self._outputs) for n in (_port_name(p, i, "output"),))
        self._lock = threading.Lock()
        self._request = compiled.create_infer_request()

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {i: np.ascontiguousarray(inputs[spec.name]) for i, spec in enumerate(self.inputs)}
        with self._lock:  # one infer request per model: requests take turns, as one stream does
            try:
                results = self._request.infer(feed)
            except RuntimeError as exc:  # OpenVINO's way of refusing a shape or a dtype
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                raise ValueError(lines[-1] if lines else "the model refused the input") from exc
            return {spec.name: np.array(results[port]) for spec, port in zip(self.outputs, self._outputs, strict=True)}

    def close(self) -> None:
        self._request = None
        self._compiled = None


def load_openvino_ir(path: Path) -> LoadedModel:
    if path.suffix.lower() != ".xml":
        raise ModelLoadFailed(f"'{path.name}' is not an OpenVINO IR file (.xml)")
    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise ModelLoadFailed(f"'{path.name}' has no weights file '{weights.name}' beside it (OpenVINO IR is an .xml "
                              "and a .bin of the same name)")
    if weights.stat().st_size == 0:
        raise ModelLoadFailed(f"the weights file '{weights.name}' is empty")
    with path.open("rb") as f:
        head = f.read(4096)
    if b"<net" not in head:
        raise ModelLoadFailed(f"'{path.name}' is not an OpenVINO IR file (no <net> element)")
    _ov, core = _openvino_core()
    try:
        model = core.read_model(str(path), str(weights))
        compiled = core.compile_model(model, "CPU", _CPU_CONFIG)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("Exception from")]
        raise ModelLoadFailed(f"'{path.name}' is not a readable OpenVINO IR model: "
                              f"{(lines[0] if lines else type(exc).__name__)[:300]}") from exc
    return OpenVinoModel(compiled)
