"""The one table from mesh errors to gRPC status codes and HTTP statuses.

Anything that is not a ``MeshError`` is a bug: it is logged with its traceback here and the client
gets INTERNAL / 500 with a short message, never the traceback.
"""

from __future__ import annotations

import logging

import grpc

from kserve_mesh.core import errors as e

log = logging.getLogger(__name__)

_TABLE: list[tuple[type[e.MeshError], grpc.StatusCode, int]] = [
    (e.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, 400),
    (e.NotFound, grpc.StatusCode.NOT_FOUND, 404),
    (e.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, 409),
    (e.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, 409),
    (e.CapacityExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED, 507),
    (e.PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
    (e.ModelLoadFailed, grpc.StatusCode.FAILED_PRECONDITION, 503),
    (e.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (e.Unavailable, grpc.StatusCode.UNAVAILABLE, 503),
    (e.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    (e.Cancelled, grpc.StatusCode.CANCELLED, 499),
    (e.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401),
    (e.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, 403),
    (e.InternalError, grpc.StatusCode.INTERNAL, 500),
]


def to_mesh_error(exc: BaseException) -> e.MeshError:
    if isinstance(exc, e.MeshError):
        return exc
    log.error("unexpected error", exc_info=exc)
    return e.InternalError(f"internal error ({type(exc).__name__}); see the server log")


def grpc_code(err: e.MeshError) -> grpc.StatusCode:
    for kind, code, _ in _TABLE:
        if isinstance(err, kind):
            return code
    return grpc.StatusCode.INTERNAL


def http_status(err: e.MeshError) -> int:
    for kind, _, status in _TABLE:
        if isinstance(err, kind):
            return status
    return 500
