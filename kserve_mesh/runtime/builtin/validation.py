"""Checking an inference request against a loaded model's V2 metadata, and that metadata itself.

The runtime runs this before every predict, so loaders can assume well-formed inputs and every bad
request gets an ``InvalidArgument`` naming the input and what was expected: an unknown or missing
input, a datatype the input does not take (``models.accepted_datatypes``), a shape the model does
not take, or an empty tensor (a dimension of 0: nothing to predict).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.protocol import v2
from kserve_mesh.runtime.builtin.models import LoadedModel


def declared_datatypes(request: v2.ModelInferRequest) -> dict[str, str]:
    """The V2 datatype of each input of ``request``, as the client declared it."""
    return {t.name: t.datatype for t in request.inputs}


def validate_inputs(
    model_id: str, model: LoadedModel, declared: Mapping[str, str], arrays: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Match request tensors to the model's inputs, check datatypes (``declared``: each input's V2
    datatype, ``declared_datatypes``) and shapes, cast numerics.

    Names must match the model's input names; an input whose name is ours rather than the model
    file's also answers to its ``aliases`` (``predict``, as ModelMesh's examples send, etc.).
    """
    if model.free_inputs:
        for name, arr in arrays.items():
            if 0 in arr.shape:
                raise InvalidArgument(f"input '{name}' of model '{model_id}' has shape {list(arr.shape)}: a "
                                      "dimension of 0 leaves nothing to predict")
        return dict(arrays)
    specs = model.inputs
    if len(specs) == 1 and len(arrays) == 1:
        spec, name = specs[0], next(iter(arrays))
        if name != spec.name and name not in spec.aliases:
            others = sorted(spec.aliases - {spec.name})
            also = f" (or {', '.join(others)})" if others else ""
            raise InvalidArgument(f"model '{model_id}' has no input '{name}': its input is '{spec.name}'{also}")
        pairs = [(spec, name)]
    else:
        names = {s.name for s in specs}
        for name in arrays:
            if name not in names:
                raise InvalidArgument(
                    f"model '{model_id}' has no input '{name}' (inputs: {', '.join(sorted(names))})"
                )
        for s in specs:
            if s.name not in arrays:
                raise InvalidArgument(
                    f"model '{model_id}': missing input '{s.name}' ({s.datatype} {list(s.shape)})"
                )
        pairs = [(s, s.name) for s in specs]
    feed: dict[str, np.ndarray] = {}
    for spec, name in pairs:
        arr = arrays[name]
        datatype = declared.get(name, "")
        if spec.accepts and datatype not in spec.accepts:
            others = sorted(spec.accepts - {spec.datatype})
            also = f" (or {', '.join(others)})" if others else ""
            raise InvalidArgument(
                f"input '{name}' of model '{model_id}' has datatype {datatype}; the model expects {spec.datatype}{also}"
            )
        if not spec.any_rank:
            check_shape(model_id, name, spec.shape, arr.shape)
        if 0 in arr.shape:
            raise InvalidArgument(
                f"input '{name}' of model '{model_id}' has shape {list(arr.shape)}: a dimension of 0 leaves "
                "nothing to predict"
            )
        if spec.dtype is not None and arr.dtype != spec.dtype:
            arr = arr.astype(spec.dtype)
        feed[spec.name] = arr
    return feed


def check_shape(model_id: str, name: str, expected: tuple[int, ...], got: tuple[int, ...]) -> None:
    if len(expected) != len(got):
        raise InvalidArgument(
            f"input '{name}' of model '{model_id}' has shape {list(got)}; the model expects {list(expected)}"
        )
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        if want >= 0 and want != have:
            if index == 1 and len(expected) == 2:
                raise InvalidArgument(
                    f"input '{name}' of model '{model_id}' has {have} features; the model expects {want}"
                )
            raise InvalidArgument(
                f"input '{name}' of model '{model_id}' has shape {list(got)}; the model expects {list(expected)}"
            )


def metadata_of(model_id: str, model: LoadedModel) -> v2.ModelMetadataResponse:
    tm = v2.ModelMetadataResponse.TensorMetadata
    return v2.ModelMetadataResponse(
        name=model_id,
        platform=model.platform,
        inputs=[tm(name=s.name, datatype=s.datatype, shape=list(s.shape)) for s in model.inputs],
        outputs=[tm(name=s.name, datatype=s.datatype, shape=list(s.shape)) for s in model.outputs],
    )
