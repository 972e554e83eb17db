"""The one table from mesh errors to gRPC status codes and HTTP statuses.

Each transport applies it in one place: gRPC in ``grpc_calls.unary`` (every method's wrapper),
REST in ``rest.error_response`` (the app's exception handler and the inference fast path). The
request metrics name outcomes by the gRPC code on every transport (``status_name``).

Anything that is not a ``MeshError`` is a bug: it is logged with its traceback here and the client
gets INTERNAL / 500 with a short message, never the traceback.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from kserve_mesh.core import errors as e
from kserve_mesh.mesh.relay import RelayedStatus
from kserve_mesh.mesh.wire import error_body

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
    if isinstance(err, RelayedStatus):  # a relayed call's far end answered this: passed through as it came
        return err.code
    for kind, code, _ in _TABLE:
        if isinstance(err, kind):
            return code
    return grpc.StatusCode.INTERNAL


def http_status(err: e.MeshError) -> int:
    for kind, _, status in _TABLE:
        if isinstance(err, kind):
            return status
    return 500


def error_response(exc: BaseException) -> JSONResponse:
    """Any error as the REST answer: ``{"error": message, "type": kind}`` with the table's status
    (peers read ``type`` back, ``wire.error_from_answer``)."""
    if isinstance(exc, ClientDisconnect):  # nobody to answer (the client left, or a body limit closed it)
        return JSONResponse({"error": "the client disconnected"}, status_code=499)
    err = to_mesh_error(exc)
    return JSONResponse(error_body(err), status_code=http_status(err))


def status_name(error: BaseException | None) -> str:
    """A request's outcome as the metrics name it: ``OK`` or the gRPC code's name."""
    if error is None:
        return "OK"
    if isinstance(error, e.MeshError):
        return grpc_code(error).name
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    return "INTERNAL"
