"""The client's error tree: every failure of a mesh call is one typed exception with the server's
message, so a notebook or a pipeline step can catch what it means rather than an HTTP status.

    MeshClientError                 .message (the server's words), .status (HTTP status; 0 = no answer)
    ├── MeshUnavailableError        the mesh cannot be reached, or answered 503 for itself
    ├── InvalidInputError           400: malformed request, wrong shape/datatype, bad YAML or field
    ├── NotFoundError               404
    │   └── ModelNotFoundError      404 for a model or vmodel (.model_id)
    ├── ConflictError               409: already exists with other info, or wrong state
    ├── LoadFailedError             the model did not load (.model_id, .errors, .last_status)
    ├── LoadTimeoutError            wait_until_loaded ran out of time (.model_id, .last_status)
    ├── CapacityError               507: larger than the whole capacity
    ├── OverloadedError             429: too much in flight (.retry_after seconds)
    ├── AuthenticationError         401: no token, or one the mesh does not know
    ├── PermissionDeniedError       403: the token's role may not do this (infer vs admin)
    └── ServerError                 500 and anything else unexpected

The mesh's error body is ``{"error": "<message>"}``; when it also carries ``"type"`` (the name of
the server's error class, e.g. ``ModelLoadFailed``) that decides the exception, else the status does.
"""

from __future__ import annotations

from typing import Any


class MeshClientError(Exception):
    """An error answered by the mesh (``status`` is the HTTP status) or a connection failure (0)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


class MeshUnavailableError(MeshClientError):
    pass


class InvalidInputError(MeshClientError):
    pass


class NotFoundError(MeshClientError):
    pass


class ModelNotFoundError(NotFoundError):
    def __init__(self, message: str, status: int = 404, model_id: str = "") -> None:
        super().__init__(message, status)
        self.model_id = model_id


class ConflictError(MeshClientError):
    pass


class LoadFailedError(MeshClientError):
    def __init__(self, message: str, status: int = 0, model_id: str = "", errors: list[str] | None = None,
                 last_status: dict[str, Any] | None = None) -> None:
        super().__init__(message, status)
        self.model_id = model_id
        self.errors = list(errors or [])
        self.last_status = last_status


class LoadTimeoutError(MeshClientError):
    def __init__(self, message: str, model_id: str = "", last_status: dict[str, Any] | None = None) -> None:
        super().__init__(message, 0)
        self.model_id = model_id
        self.last_status = last_status


class CapacityError(MeshClientError):
    pass


class OverloadedError(MeshClientError):
    def __init__(self, message: str, status: int = 429, retry_after: float = 1.0) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class AuthenticationError(MeshClientError):
    pass


class PermissionDeniedError(MeshClientError):
    pass


class ServerError(MeshClientError):
    pass


# The server's error class name (body "type") -> client exception; subclasses of the server's
# tree (StorageNotFound, VModelNotFound, ...) are listed so no name is left to guess.
_BY_TYPE: dict[str, type[MeshClientError]] = {
    "InvalidArgument": InvalidInputError,
    "NotFound": NotFoundError,
    "ModelNotFound": ModelNotFoundError,
    "VModelNotFound": ModelNotFoundError,
    "AlreadyExists": ConflictError,
    "FailedPrecondition": ConflictError,
    "ModelLoadFailed": LoadFailedError,
    "StorageError": LoadFailedError,
    "StorageNotFound": LoadFailedError,
    "StorageAccessDenied": LoadFailedError,
    "StorageUnreachable": LoadFailedError,
    "UnsafeArchive": LoadFailedError,
    "CapacityExceeded": CapacityError,
    "Overloaded": OverloadedError,
    "Unavailable": MeshUnavailableError,
    "DeadlineExceeded": MeshUnavailableError,
    "InternalError": ServerError,
    "Unauthenticated": AuthenticationError,
    "PermissionDenied": PermissionDeniedError,
}

_BY_STATUS: dict[int, type[MeshClientError]] = {
    400: InvalidInputError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: InvalidInputError,
    429: OverloadedError,
    503: MeshUnavailableError,
    504: MeshUnavailableError,
    507: CapacityError,
}


def error_from_response(status: int, body: Any, *, model_id: str = "",
                        retry_after: str | None = None) -> MeshClientError:
    """The typed exception for an HTTP error answer of the mesh."""
    message = ""
    kind = ""
    if isinstance(body, dict):
        message = str(body.get("error") or "")
        kind = str(body.get("type") or "")
    elif isinstance(body, str):
        message = body.strip()[:500]
    message = message or f"the mesh answered HTTP {status}"
    cls = _BY_TYPE.get(kind) or _BY_STATUS.get(status) or ServerError
    if cls is NotFoundError and model_id:
        cls = ModelNotFoundError
    if cls is ModelNotFoundError:
        return ModelNotFoundError(message, status, model_id=model_id)
    if cls is LoadFailedError:
        return LoadFailedError(message, status, model_id=model_id, errors=[message])
    if cls is OverloadedError:
        try:
            delay = float(retry_after) if retry_after else 1.0
        except ValueError:
            delay = 1.0
        return OverloadedError(message, status, retry_after=delay)
    return cls(message, status)
