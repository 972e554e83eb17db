"""The KServe V2 protobuf messages, taken from the ``kserve`` package without importing it.

DESIGN.md: reuse the generated V2 messages that kserve ships and never define a second copy of
package ``inference`` in a process. ``import kserve`` costs over a second and ~126 MB and parses
``sys.argv``, so we load only its generated ``grpc_predict_v2_pb2`` module from its file, under its
canonical module name. If something imports ``kserve`` later in the same process (its clients, in
tests), Python finds the module already in ``sys.modules`` and reuses it: one descriptor, one set of
message classes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from google.protobuf.message import DecodeError

from kserve_mesh.core.errors import InvalidArgument

_MODULE = "kserve.protocol.grpc.grpc_predict_v2_pb2"

SERVICE = "inference.GRPCInferenceService"


def _load() -> ModuleType:
    loaded = sys.modules.get(_MODULE)
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("kserve")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the 'kserve' package (which ships the V2 protobuf messages) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "protocol" / "grpc" / "grpc_predict_v2_pb2.py"
    file_spec = importlib.util.spec_from_file_location(_MODULE, path)
    if file_spec is None or file_spec.loader is None:
        raise ImportError(f"cannot load the V2 messages from {path}")
    module = importlib.util.module_from_spec(file_spec)
    sys.modules[_MODULE] = module
    try:
        file_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_MODULE]
        raise
    return module


pb = _load()

ModelInferRequest = pb.ModelInferRequest
ModelInferResponse = pb.ModelInferResponse
InferTensorContents = pb.InferTensorContents
ModelMetadataRequest = pb.ModelMetadataRequest
ModelMetadataResponse = pb.ModelMetadataResponse
ModelReadyRequest = pb.ModelReadyRequest
ModelReadyResponse = pb.ModelReadyResponse
ServerLiveRequest = pb.ServerLiveRequest
ServerLiveResponse = pb.ServerLiveResponse
ServerReadyRequest = pb.ServerReadyRequest
ServerReadyResponse = pb.ServerReadyResponse
ServerMetadataRequest = pb.ServerMetadataRequest
ServerMetadataResponse = pb.ServerMetadataResponse
RepositoryModelLoadRequest = pb.RepositoryModelLoadRequest
RepositoryModelLoadResponse = pb.RepositoryModelLoadResponse
RepositoryModelUnloadRequest = pb.RepositoryModelUnloadRequest
RepositoryModelUnloadResponse = pb.RepositoryModelUnloadResponse


def method(name: str) -> str:
    """The full gRPC method path of a V2 method, e.g. ``/inference.GRPCInferenceService/ModelInfer``."""
    return f"/{SERVICE}/{name}"


def parse(message_type: Any, data: bytes) -> Any:
    """``data`` as a ``message_type`` (any protobuf message class), or ``InvalidArgument`` naming
    the type: a body that is not the message is the caller's error, never an internal one."""
    try:
        return message_type.FromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InvalidArgument(f"the request is not a valid {message_type.DESCRIPTOR.full_name} message: "
                              f"{exc or type(exc).__name__}") from None
