"""What the deep-learning loaders share: V2 datatypes of numpy dtypes, input specs from declared or
file-given metadata, and outputs turned into named numpy arrays."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from kserve_mesh.runtime.builtin.formats.declared import DeclaredTensor
from kserve_mesh.runtime.builtin.models import INPUT_ALIASES, TensorSpec, accepted_datatypes

V2_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
    "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}


def datatype_of(dtype: Any) -> str:
    """The V2 datatype of a numpy dtype (BYTES for strings and objects)."""
    dt = np.dtype(dtype)
    if dt.kind in "USO":
        return "BYTES"
    for name, candidate in V2_DTYPES.items():
        if candidate is not np.object_ and np.dtype(candidate) == dt:
            return name
    raise ValueError(f"no V2 datatype for numpy dtype {dt}")


def input_spec(name: str, datatype: str, shape: Iterable[int], *, single: bool, extra_aliases: Iterable[str] = (),
               any_rank: bool = False, accepts: frozenset[str] | None = None) -> TensorSpec:
    """An input that takes its own datatype (numerics cast to it); a model's only input also
    answers to the usual aliases (``input-0``, ``predict``...). Given ``accepts``, the input takes
    those datatypes as they come (no cast: the model's own code decides)."""
    dtype = V2_DTYPES.get(datatype)
    aliases = (INPUT_ALIASES | frozenset(extra_aliases)) - {name} if single else frozenset()
    if accepts is not None:
        return TensorSpec(name, datatype, tuple(shape), accepts, None, aliases, any_rank)
    return TensorSpec(name, datatype, tuple(shape), accepted_datatypes(datatype),
                      None if dtype is None or datatype == "BYTES" else np.dtype(dtype), aliases, any_rank)


def declared_input(tensor: DeclaredTensor, *, single: bool, extra_aliases: Iterable[str] = ()) -> TensorSpec:
    return input_spec(tensor.name, tensor.datatype, tensor.shape, single=single, extra_aliases=extra_aliases)


def declared_output(tensor: DeclaredTensor) -> TensorSpec:
    return TensorSpec(tensor.name, tensor.datatype, tensor.shape)


def dim(value: Any) -> int:
    """A dimension as V2 metadata shows it: -1 where unknown (None, '?', a symbol)."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        return -1
    return n if n >= 0 else -1
