"""``pytorch`` models: TorchScript (``torch.jit.save``) files, run on the CPU by ``torch.jit.load``.

Metadata: a TorchScript file names ``forward``'s arguments and how many values it returns, but not
their datatypes or shapes. A ``schema.json`` (ModelMesh's model schema) or Triton ``config.pbtxt``
beside the file (or one folder up) declares them; otherwise each input is named after its argument,
shown as FP32 of any shape (``[-1]`` in the metadata), and the outputs ``output-0``, ``output-1``...
A model's only input also answers to ``input-0`` / ``INPUT__0`` / ``predict``.

Inference runs under ``torch.inference_mode``; float inputs without declared metadata are cast to
float32 (clients send FP64 from JSON), integers pass unchanged. Torch runs one intra-op thread
(``torch.set_num_threads(1)``, set at the first load): many models share a process, as the ONNX
sessions do. A torch ``RuntimeError`` from ``forward`` (wrong shape, wrong dtype) is the model
refusing its input: the client gets it as an invalid argument in the model's words.

A pickled eager model (``torch.save(model)``) is not TorchScript and is refused with that said.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from kserve_mesh.core.errors import ModelLoadFailed
from kserve_mesh.runtime.builtin.formats.common import declared_input, declared_output, input_spec
from kserve_mesh.runtime.builtin.formats.declared import declared_tensors
from kserve_mesh.runtime.builtin.formats.deps import import_framework
from kserve_mesh.runtime.builtin.models import NUMERIC_DATATYPES, PYTORCH, LoadedModel, TensorSpec

logger = logging.getLogger(__name__)

_threads_set = threading.Lock()
_configured = False


def _torch() -> Any:
    global _configured
    torch = import_framework(PYTORCH, "torch")
    with _threads_set:
        if not _configured:
            torch.set_num_threads(1)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:  # only settable before the first parallel work in the process
                pass
            _configured = True
    return torch


class TorchScriptModel(LoadedModel):
    model_type = PYTORCH
    platform = "pytorch_torchscript"

    def __init__(self, module: Any, torch: Any, model_file: Path) -> None:
        self._module = module
        self._torch = torch
        arg_names, n_outputs, self._named_outputs = _signature(module)
        declared = declared_tensors(model_file)
        self._declared = declared is not None
        if declared is not None:
            ins, outs = declared
            if len(ins) != len(arg_names):
                raise ModelLoadFailed(
                    f"the model's forward takes {len(arg_names)} input(s) ({', '.join(arg_names)}), its schema "
                    f"declares {len(ins)}")
            single = len(ins) == 1
            self.inputs = tuple(declared_input(t, single=single, extra_aliases=("INPUT__0",)) for t in ins)
            self.outputs = tuple(declared_output(t) for t in outs) or _default_outputs(n_outputs, self._named_outputs)
        else:
            single = len(arg_names) == 1
            self.inputs = tuple(input_spec(n, "FP32", (-1,), single=single, extra_aliases=("INPUT__0",),
                                           any_rank=True, accepts=NUMERIC_DATATYPES) for n in arg_names)
            self.outputs = _default_outputs(n_outputs, self._named_outputs)
        self._output_names = [o.name for o in self.outputs]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        args = []
        for spec in self.inputs:
            arr = inputs[spec.name]
            if not self._declared and arr.dtype.kind == "f" and arr.dtype != np.float32:
                arr = arr.astype(np.float32)
            args.append(torch.from_numpy(np.ascontiguousarray(arr)))
        try:
            with torch.inference_mode():
                result = self._module(*args)
        except RuntimeError as exc:  # torch's way of refusing a shape or a dtype
            raise ValueError(_last_line(exc)) from exc
        if isinstance(result, dict) and (self._named_outputs and not self._declared):
            return {str(k): _to_numpy(v, torch) for k, v in result.items()}
        return _name_outputs(result, self._output_names, torch)


def _last_line(exc: BaseException) -> str:
    """What a TorchScript error says in its last line ("RuntimeError: mat1 and mat2 shapes cannot be
    multiplied..."); the lines before are the interpreter's traceback."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _signature(module: Any) -> tuple[list[str], int, bool]:
    """``forward``'s argument names (without ``self``), how many values it returns, and whether it
    returns a ``Dict[str, Tensor]`` (outputs named by its keys, known only when it answers)."""
    try:
        schema = module.forward.schema
    except AttributeError as exc:
        raise ModelLoadFailed("the TorchScript module has no forward method") from exc
    names = [a.name for a in schema.arguments if a.name != "self"]
    returns = schema.returns
    n_outputs = 1
    named = False
    if len(returns) == 1:
        kind = str(returns[0].type)
        if kind.startswith(("Tuple[", "(")):
            n_outputs = len(returns[0].type.elements())
        named = kind.startswith("Dict[")
    else:
        n_outputs = max(1, len(returns))
    return names, n_outputs, named


def _default_outputs(n: int, named: bool = False) -> tuple[TensorSpec, ...]:
    if named:  # a Dict[str, Tensor]: its keys are the outputs, shown only in answers
        return ()
    return tuple(TensorSpec(f"output-{i}", "FP32", (-1,)) for i in range(n))


def _to_numpy(value: Any, torch: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _name_outputs(result: Any, names: list[str], torch: Any) -> dict[str, np.ndarray]:
    if isinstance(result, dict):
        values = list(result.values())
    elif isinstance(result, (tuple, list)):
        values = list(result)
    else:
        values = [result]
    if len(values) != len(names):
        raise RuntimeError(f"the model returned {len(values)} value(s); its metadata declares {len(names)} "
                            f"output(s) ({', '.join(names)})")
    return {name: _to_numpy(value, torch) for name, value in zip(names, values, strict=True)}


def load_torchscript(path: Path) -> LoadedModel:
    torch = _torch()
    if not path.is_file():
        raise ModelLoadFailed(f"'{path.name}' is not a TorchScript file")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        text = str(exc)
        if "constants.pkl" in text or "data.pkl" in text:
            raise ModelLoadFailed(f"'{path.name}' is not TorchScript (a pickled eager model or a state dict?): save "
                                  "the model with torch.jit.script(model).save() or torch.jit.trace") from exc
        first = text.strip().splitlines()[0].split(". ")[0] if text.strip() else type(exc).__name__
        raise ModelLoadFailed(f"'{path.name}' is not a readable TorchScript file: {first}") from exc
    module.eval()
    return TorchScriptModel(module, torch, path)
