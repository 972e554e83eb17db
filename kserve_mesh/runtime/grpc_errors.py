"""The one table between core errors and gRPC status codes, for the runtime server and its client.

The server answers a ``MeshError`` with its code and message, and names the exact error class in
the trailing metadata key ``kserve-mesh-error``, so our own client rebuilds the same class (a
``StorageNotFound`` stays a ``StorageNotFound``); any other runtime speaking ``mmesh.ModelRuntime``
is understood from the code alone.
"""

from __future__ import annotations

import grpc

from kserve_mesh.core import errors as e

ERROR_KIND_KEY = "kserve-mesh-error"

# Most specific classes first: the first isinstance match wins.
_TO_CODE: tuple[tuple[type[e.MeshError], grpc.StatusCode], ...] = (
    (e.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (e.NotFound, grpc.StatusCode.NOT_FOUND),
    (e.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (e.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (e.ModelLoadFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (e.CapacityExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (e.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (e.Cancelled, grpc.StatusCode.CANCELLED),
    (e.InternalError, grpc.StatusCode.INTERNAL),
)

_KINDS: dict[str, type[e.MeshError]] = {
    cls.__name__: cls
    for cls in (
        e.InvalidArgument, e.NotFound, e.ModelNotFound, e.VModelNotFound, e.AlreadyExists,
        e.FailedPrecondition, e.ModelLoadFailed, e.StorageError, e.StorageNotFound,
        e.StorageAccessDenied, e.StorageUnreachable, e.UnsafeArchive, e.StorageNotAllowed, e.DigestMismatch,
        e.PayloadTooLarge, e.CapacityExceeded,
        e.Overloaded, e.Unavailable, e.DeadlineExceeded, e.Cancelled, e.InternalError,
    )
}


def code_of(error: e.MeshError) -> grpc.StatusCode:
    """The gRPC status code of a core error."""
    for cls, code in _TO_CODE:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def error_of(
    code: grpc.StatusCode | None,
    message: str,
    *,
    kind: str = "",
    method: str = "",
    model_id: str = "",
) -> e.MeshError:
    """The core error for a gRPC failure of ``method`` (e.g. ``loadModel``, ``ModelInfer``).

    ``kind`` (from ``kserve-mesh-error``) wins when it names a known class; otherwise the code
    decides, with the method as context: FAILED_PRECONDITION of a load is a load failure, and
    RESOURCE_EXHAUSTED of a load means the model does not fit, elsewhere that the runtime is busy.
    """
    message = message or f"{method or 'runtime call'} failed with {code.name if code else 'no status'}"
    cls = _KINDS.get(kind)
    if cls is not None:
        return _build(cls, message, model_id)
    is_load = method == "loadModel"
    S = grpc.StatusCode
    if code in (S.UNAVAILABLE, S.ABORTED) or code is None:
        return e.Unavailable(message)
    if code == S.NOT_FOUND:
        return e.ModelNotFound(model_id, message)
    if code in (S.INVALID_ARGUMENT, S.OUT_OF_RANGE):
        return e.InvalidArgument(message)
    if code == S.ALREADY_EXISTS:
        return e.AlreadyExists(message)
    if code == S.FAILED_PRECONDITION:
        return e.ModelLoadFailed(message) if is_load else e.FailedPrecondition(message)
    if code == S.RESOURCE_EXHAUSTED:
        return e.CapacityExceeded(message) if is_load else e.Overloaded(message)
    if code == S.DEADLINE_EXCEEDED:
        return e.DeadlineExceeded(message)
    if code == S.CANCELLED:
        return e.Cancelled(message)
    if is_load:
        return e.ModelLoadFailed(message)
    return e.InternalError(message)


def _build(cls: type[e.MeshError], message: str, model_id: str) -> e.MeshError:
    if cls is e.ModelNotFound:
        return e.ModelNotFound(model_id, message)
    if cls is e.VModelNotFound:
        return e.VModelNotFound(model_id, message)
    return cls(message)
