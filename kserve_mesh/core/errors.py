"""One transport-neutral error tree for the whole mesh.

Errors name what went wrong, not how it travels. Each front door maps them with one table
(``api/errors.py``): gRPC status codes and HTTP statuses. Foreign exceptions are wrapped with
``raise SomeMeshError(...) from exc`` at the adapter edge, so no library exception (and no stack
trace) reaches a client.

    MeshError
    ├── InvalidArgument            bad input: malformed request, wrong datatype/shape, bad field
    ├── NotFound
    │   ├── ModelNotFound
    │   └── VModelNotFound
    ├── AlreadyExists              same id registered with different info, vmodel owner mismatch
    ├── FailedPrecondition         wrong state (e.g. unregistering a model a vmodel still uses)
    ├── ModelLoadFailed            a load failed (storage, runtime); carries the cause's message
    │   └── StorageError           the model files could not be fetched
    │       ├── StorageNotFound          object/path missing
    │       ├── StorageAccessDenied      bad or missing credentials
    │       ├── StorageUnreachable       endpoint cannot be reached
    │       ├── UnsafeArchive            traversal, links out, or size limits in an archive
    │       ├── StorageNotAllowed        a path outside the allowed folders, PVC claims or hosts
    │       └── DigestMismatch           the fetched files are not the ones the sha256 pins
    ├── CapacityExceeded           a model larger than the whole capacity of an instance
    ├── PayloadTooLarge            a request body larger than the configured limit
    ├── Overloaded                 too much in flight; carries ``retry_after`` seconds
    ├── Unavailable                a dependency (runtime, store) cannot be reached right now
    ├── DeadlineExceeded
    ├── Cancelled
    ├── Unauthenticated            no credentials, or credentials nobody is known by
    ├── PermissionDenied           a known caller without the role the call needs
    └── InternalError              a bug: the message is safe to show, details are logged
"""

from __future__ import annotations


class MeshError(Exception):
    """Base of every error the mesh reports to a caller. ``str(err)`` is the client message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(MeshError):
    pass


class NotFound(MeshError):
    pass


class ModelNotFound(NotFound):
    def __init__(self, model_id: str, message: str | None = None) -> None:
        super().__init__(message or f"model '{model_id}' not found")
        self.model_id = model_id


class VModelNotFound(NotFound):
    def __init__(self, vmodel_id: str, message: str | None = None) -> None:
        super().__init__(message or f"vmodel '{vmodel_id}' not found")
        self.vmodel_id = vmodel_id


class AlreadyExists(MeshError):
    pass


class FailedPrecondition(MeshError):
    pass


class ModelLoadFailed(MeshError):
    pass


class StorageError(ModelLoadFailed):
    pass


class StorageNotFound(StorageError):
    pass


class StorageAccessDenied(StorageError):
    pass


class StorageUnreachable(StorageError):
    pass


class UnsafeArchive(StorageError):
    pass


class StorageNotAllowed(StorageError):
    pass


class DigestMismatch(StorageError):
    pass


class CapacityExceeded(MeshError):
    pass


class PayloadTooLarge(MeshError):
    pass


class Overloaded(MeshError):
    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(MeshError):
    pass


class DeadlineExceeded(MeshError):
    pass


class Cancelled(MeshError):
    pass


class Unauthenticated(MeshError):
    pass


class PermissionDenied(MeshError):
    pass


class InternalError(MeshError):
    pass
