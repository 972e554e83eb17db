"""The runtime port: what a mesh instance needs from the model server beside it.

It mirrors ModelMesh's ``mmesh.ModelRuntime`` service (load, unload, size, status) plus the
inference calls the mesh routes to a loaded model. Two adapters implement it: the built-in runtime
called in-process (the embedded default, no extra hop) and a gRPC client of a runtime running as its
own process. Inference uses the KServe V2 protobuf messages as the one in-memory representation:
the gRPC front door passes them through, the REST front door converts JSON to them once. A runtime
in the instance's own process may also take a REST request as arrays (``ArrayRuntime``), which
spares that conversion and its reverse.

Errors are ``kserve_mesh.core.errors`` types: ``ModelNotFound`` when the model is not loaded in
this runtime, ``InvalidArgument`` for bad inference input, ``ModelLoadFailed`` (and its
``StorageError`` kinds) for failed loads, ``CapacityExceeded`` for a model that cannot fit,
``Unavailable`` when the runtime cannot be reached, ``DeadlineExceeded`` for timeouts.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kserve_mesh.core.records import ModelInfo
from kserve_mesh.protocol import v2
from kserve_mesh.protocol.rest_arrays import ArrayRequest


class RuntimeState(enum.Enum):
    STARTING = 0
    READY = 1
    FAILING = 2


@dataclass(frozen=True, slots=True)
class RuntimeStatus:
    """What runtimeStatus reports: the numbers the instance sizes its cache and load queue by."""

    state: RuntimeState
    capacity_bytes: int
    max_loading_concurrency: int
    model_loading_timeout_ms: int
    default_model_size_bytes: int
    runtime_version: str = ""
    limit_model_concurrency: bool = False
    # Memory truth (kserve-mesh extensions; 0 = the runtime cannot say): the runtime process'
    # resident set size now, and what of it is not models (its size holding none, plus libraries).
    resident_bytes: int = 0
    baseline_bytes: int = 0
    # GPU memory accounting (extension; runtime/gpu.py): the GPU memory models may use, 0 without a
    # GPU, and what the runtime found (a device, or why there is none).
    gpu_capacity_bytes: int = 0
    gpu_status: str = ""
    # Adaptive batching (extension): model calls per batch size bucket (core/batching.py
    # ``BATCH_SIZE_BUCKETS``, then one more for larger), not cumulative, and the requests of all
    # those calls; () / 0: none.
    batch_size_counts: tuple[int, ...] = ()
    batch_size_total: int = 0


@dataclass(frozen=True, slots=True)
class LoadResult:
    """loadModel's answer: the measured size (0 = ask ``model_size`` later), max concurrency, and
    (where the runtime measures it) the growth of its resident memory across the load."""

    size_bytes: int
    max_concurrency: int = 0
    resident_delta_bytes: int = 0  # the measured RSS growth across the load; 0 = not measured
    gpu_bytes: int = 0  # GPU memory the model took; 0 = none or not measured


class ModelRuntime(Protocol):
    """The SPI every runtime adapter implements. All methods are coroutines."""

    async def runtime_status(self) -> RuntimeStatus: ...

    async def load_model(self, model_id: str, info: ModelInfo) -> LoadResult: ...

    async def unload_model(self, model_id: str) -> None: ...

    async def predict_model_size(self, model_id: str, info: ModelInfo) -> int: ...

    async def model_size(self, model_id: str) -> int: ...

    async def infer(self, request: v2.ModelInferRequest, *, timeout: float | None = None) -> v2.ModelInferResponse:
        """Run inference; ``request.model_name`` is the concrete id of a loaded model. ``timeout``
        is the caller's remaining time: past it the call raises ``DeadlineExceeded``."""
        ...

    async def model_metadata(self, model_id: str) -> v2.ModelMetadataResponse: ...

    async def close(self) -> None: ...


class StreamingRuntime(Protocol):
    """A runtime whose models may answer one request with several responses (a model that streams,
    e.g. tokens; Triton's decoupled models). Optional: the mesh uses ``infer_stream`` where a
    runtime has it (``ModelStreamInfer``, ``generate_stream``), else the one answer of ``infer``."""

    def infer_stream(self, request: v2.ModelInferRequest, *,
                     timeout: float | None = None) -> AsyncIterator[v2.ModelInferResponse]: ...


class ArrayRuntime(Protocol):
    """A runtime in the instance's own process that takes a request as arrays (the built-in one).
    Optional: the mesh decodes a V2 REST body for such a runtime straight to arrays and renders its
    answer from the arrays it returns (``protocol/rest_arrays.py``), with no protobuf message in
    between; the gRPC door still sends it messages."""

    async def infer_arrays(self, model_id: str, request: ArrayRequest, *,
                           timeout: float | None = None) -> Mapping[str, Any]:
        """``infer`` for a request already decoded: the outputs asked for (all when it named none),
        in its order, as arrays by name; the same errors as ``infer``."""
        ...


class RestRuntime(Protocol):
    """A runtime that decodes a V2 REST body itself and renders its answer (the built-in one in
    its own process, over the local link). Optional: the mesh hands such a runtime the body as it
    came, so the instance's process only moves bytes."""

    async def infer_rest(self, model_id: str, body: bytes, header_length: int | None, *,
                         timeout: float | None = None) -> tuple[bytes, dict[str, str]]:
        """The answer to a V2 REST request body (``header_length``: the binary extension's JSON
        length, None without it) as (body, headers: its content-type, and the binary extension's
        header length where it answers in binary); a bad body is ``InvalidArgument`` as the REST
        front door would have refused it; otherwise the same errors as ``infer``."""
        ...
