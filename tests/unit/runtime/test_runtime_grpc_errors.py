"""The core error <-> gRPC status table shared by the runtime server and its client."""

from __future__ import annotations

import grpc
import pytest

from kserve_mesh.core import errors as e
from kserve_mesh.runtime.grpc_errors import code_of, error_of
from kserve_mesh.runtime.server import parse_bytes

S = grpc.StatusCode


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (e.InvalidArgument("x"), S.INVALID_ARGUMENT),
        (e.ModelNotFound("m"), S.NOT_FOUND),
        (e.ModelLoadFailed("x"), S.FAILED_PRECONDITION),
        (e.StorageNotFound("x"), S.FAILED_PRECONDITION),
        (e.CapacityExceeded("x"), S.RESOURCE_EXHAUSTED),
        (e.Overloaded("x"), S.RESOURCE_EXHAUSTED),
        (e.Unavailable("x"), S.UNAVAILABLE),
        (e.DeadlineExceeded("x"), S.DEADLINE_EXCEEDED),
        (e.Cancelled("x"), S.CANCELLED),
        (e.InternalError("x"), S.INTERNAL),
    ],
)
def test_each_error_round_trips_through_code_and_kind(error: e.MeshError, code: grpc.StatusCode) -> None:
    assert code_of(error) == code
    back = error_of(code, str(error), kind=type(error).__name__, model_id="m")
    assert type(back) is type(error) and str(back) == str(error)


@pytest.mark.parametrize(
    ("code", "method", "expected"),
    [
        (S.UNAVAILABLE, "ModelInfer", e.Unavailable),
        (S.NOT_FOUND, "ModelInfer", e.ModelNotFound),
        (S.INVALID_ARGUMENT, "ModelInfer", e.InvalidArgument),
        (S.FAILED_PRECONDITION, "loadModel", e.ModelLoadFailed),
        (S.FAILED_PRECONDITION, "unloadModel", e.FailedPrecondition),
        (S.RESOURCE_EXHAUSTED, "loadModel", e.CapacityExceeded),
        (S.RESOURCE_EXHAUSTED, "ModelInfer", e.Overloaded),
        (S.INTERNAL, "loadModel", e.ModelLoadFailed),
        (S.INTERNAL, "ModelInfer", e.InternalError),
        (S.DEADLINE_EXCEEDED, "ModelInfer", e.DeadlineExceeded),
        (None, "ModelInfer", e.Unavailable),
    ],
)
def test_codes_alone_map_sensibly_for_foreign_runtimes(
    code: grpc.StatusCode | None, method: str, expected: type[e.MeshError]
) -> None:
    err = error_of(code, "details", method=method, model_id="m")
    assert type(err) is expected and str(err) == "details"


def test_not_found_keeps_the_model_id_and_empty_details_get_a_message() -> None:
    err = error_of(S.NOT_FOUND, "", method="ModelInfer", model_id="m1")
    assert isinstance(err, e.ModelNotFound) and err.model_id == "m1"
    assert str(err) == "ModelInfer failed with NOT_FOUND"


def test_parse_bytes_reads_kubernetes_quantities() -> None:
    assert parse_bytes("1048576") == 1 << 20
    assert parse_bytes("512Mi") == 512 << 20
    assert parse_bytes("2G") == 2 * 10**9
    with pytest.raises(Exception, match="not a byte size"):
        parse_bytes("lots")
