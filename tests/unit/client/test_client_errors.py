"""The error table: the server's ``type`` (when given) or the HTTP status picks the exception, and
the server's message is kept word for word."""

from __future__ import annotations

import numpy as np
import pytest

from kserve_mesh.client import errors as e
from kserve_mesh.client.tensors import decode_outputs, encode_request, example_request, split_response


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (400, {"error": "bad shape"}, e.InvalidInputError),
        (404, {"error": "no such route"}, e.NotFoundError),
        (409, {"error": "in use"}, e.ConflictError),
        (429, {"error": "busy"}, e.OverloadedError),
        (503, {"error": "runtime down"}, e.MeshUnavailableError),
        (507, {"error": "too big"}, e.CapacityError),
        (500, {"error": "bug"}, e.ServerError),
        (418, "teapot", e.ServerError),
        (503, {"error": "path missing", "type": "StorageNotFound"}, e.LoadFailedError),
        (409, {"error": "owner", "type": "AlreadyExists"}, e.ConflictError),
        (404, {"error": "vmodel 'v' not found", "type": "VModelNotFound"}, e.ModelNotFoundError),
    ],
)
def test_error_from_response(status: int, body: object, cls: type[e.MeshClientError]) -> None:
    err = e.error_from_response(status, body)
    assert type(err) is cls and err.status == status
    assert err.message == (body["error"] if isinstance(body, dict) else "teapot")
    assert str(err) == err.message


def test_not_found_for_a_model_names_it_and_overloaded_carries_retry_after() -> None:
    err = e.error_from_response(404, {"error": "model 'm' not found"}, model_id="m")
    assert isinstance(err, e.ModelNotFoundError) and err.model_id == "m"
    busy = e.error_from_response(429, {"error": "busy"}, retry_after="2.5")
    assert isinstance(busy, e.OverloadedError) and busy.retry_after == 2.5
    assert e.error_from_response(500, {}).message == "the mesh answered HTTP 500"


def test_binary_request_and_response_round_trip() -> None:
    body, headers = encode_request({"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                                    "s": np.array([b"\xff\x00", "x"], dtype=object)}, binary=True)
    header, blob = split_response(body, {"Inference-Header-Content-Length": headers["Inference-Header-Content-Length"]})
    assert header["parameters"] == {"binary_data_output": True}
    header["outputs"] = header.pop("inputs")
    out = decode_outputs(header, blob)
    np.testing.assert_array_equal(out["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert out["a"].dtype == np.float32
    assert out["s"].tolist() == [b"\xff\x00", "x"]


def test_unsupported_dtype_and_ragged_inputs_are_refused() -> None:
    with pytest.raises(e.InvalidInputError, match="complex128"):
        encode_request({"c": np.array([1j])})
    from kserve_mesh.client.tensors import named_inputs

    with pytest.raises(e.InvalidInputError, match="ragged"):
        named_inputs([[1, 2], [3]], None)
    with pytest.raises(e.InvalidInputError, match="has 2 inputs"):
        named_inputs([1], {"inputs": [{"name": "a"}, {"name": "b"}]})


def test_example_request_fills_dynamic_dimensions() -> None:
    meta = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]},
                       {"name": "t", "datatype": "BYTES", "shape": [-1]},
                       {"name": "k", "datatype": "INT64", "shape": [2]}]}
    req = example_request(meta)
    assert req["inputs"] == [
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.0] * 4},
        {"name": "t", "shape": [1], "datatype": "BYTES", "data": ["text"]},
        {"name": "k", "shape": [2], "datatype": "INT64", "data": [0, 0]},
    ]
