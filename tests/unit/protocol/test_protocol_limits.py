"""Tensors of more than ``MAX_DIMS`` dimensions are refused as ``InvalidArgument`` on every decode
path (REST JSON, REST binary, typed and raw protobuf contents), never numpy's ValueError; and no
error message carries more than a short prefix of a shape, a name or a datatype (gRPC refuses error
details over 16 KiB: a 60 KB message became RESOURCE_EXHAUSTED instead of INVALID_ARGUMENT)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.protocol import rest, tensors, v2
from kserve_mesh.protocol.tensors import MAX_DIMS, shape_text

SMALL = 1024  # no message about one tensor may be longer than this


def _body(*inputs: dict) -> bytes:
    return json.dumps({"inputs": list(inputs)}).encode()


def _request(shape: list[int], datatype: str = "FP64", name: str = "input-0", raw: bytes | None = None,
             values: list[float] | None = None) -> v2.ModelInferRequest:
    req = v2.ModelInferRequest(model_name="m")
    tensor = req.inputs.add(name=name, datatype=datatype, shape=shape)
    if raw is not None:
        req.raw_input_contents.append(raw)
    elif values is not None:
        tensor.contents.fp64_contents.extend(values)
    return req


def test_max_dims_is_numpy_s_limit() -> None:
    assert MAX_DIMS in (32, 64)
    assert np.empty((1,) * MAX_DIMS).ndim == MAX_DIMS


@pytest.mark.parametrize(("shape", "text"), [
    ([], "[]"), ([1, 4], "[1, 4]"), ([2] * 8, str([2] * 8)),
    ([1] * 9, "[1, 1, 1, 1, 1, 1, 1, 1, ... (9 dimensions)]"),
    ([3] * 20_000, "[3, 3, 3, 3, 3, 3, 3, 3, ... (20000 dimensions)]"),
])
def test_shape_text_shows_a_short_prefix(shape: list[int], text: str) -> None:
    assert shape_text(shape) == text


def test_a_tensor_of_max_dims_decodes() -> None:
    shape = [1] * MAX_DIMS
    arr = tensors.decode_inputs(_request(shape, values=[1.0]))["input-0"]
    assert arr.shape == tuple(shape)
    req, _ = rest.parse_infer_request(_body({"name": "a", "shape": shape, "datatype": "FP64", "data": [1.0]}), "m")
    assert list(req.inputs[0].shape) == shape


@pytest.mark.parametrize("dims", [MAX_DIMS + 1, 20_000])
def test_more_than_max_dims_is_invalid_argument_on_every_decode_path(dims: int) -> None:
    shape = [1] * dims
    expected = re.escape(f"({dims} dimensions)] has too many dimensions; a tensor has at most {MAX_DIMS}")
    cases = [
        lambda: tensors.decode_inputs(_request(shape, values=[1.0])),
        lambda: tensors.decode_inputs(_request(shape)),
        lambda: tensors.decode_inputs(_request(shape, raw=b"\0" * 8)),
        lambda: tensors.decode_inputs(_request(shape, datatype="BYTES", raw=b"\1\0\0\0x")),
        lambda: tensors.decode_inputs(_request(shape, datatype="FP16")),
        lambda: tensors.tensor_from_contents("FP64", shape, v2.InferTensorContents(fp64_contents=[1.0]), "t"),
        lambda: tensors.element_count(shape, "t"),
        lambda: rest.parse_infer_request(_body({"name": "a", "shape": shape, "datatype": "FP64", "data": [1.0]}), "m"),
        lambda: rest.parse_infer_request(_body({"name": "a", "shape": shape, "datatype": "FP64", "data": []}), "m"),
        lambda: rest.parse_infer_request(_body({"name": "a", "shape": shape, "datatype": "BYTES", "data": ["x"]}), "m"),
        lambda: rest.parse_infer_request(_body({"name": "a", "shape": shape[:-1] + [-1], "datatype": "FP64", "data": []}),
                                         "m"),
        lambda: rest.parse_infer_request(_body({"name": "a", "shape": shape, "datatype": "FP64",
                                                "parameters": {"binary_data_size": 8}}) + b"\0" * 8, "m",
                                         header_length=len(_body({"name": "a", "shape": shape, "datatype": "FP64",
                                                                  "parameters": {"binary_data_size": 8}}))),
    ]
    for case in cases:
        with pytest.raises(InvalidArgument, match=expected) as err:
            case()
        assert len(str(err.value)) < SMALL, str(err.value)[:200]


@pytest.mark.parametrize("message", [
    lambda: tensors.decode_inputs(_request([2] * 30, values=[1.0])),  # needs 2**30 elements
    lambda: tensors.decode_inputs(_request([2] * 30, raw=b"\0" * 8)),
    lambda: tensors.element_count([2**62] * 30, "t"),
    lambda: rest.parse_infer_request(_body({"name": "a", "shape": [2] * 30, "datatype": "FP64", "data": [1.0]}), "m"),
    lambda: rest.parse_infer_request(_body({"name": "a", "shape": [2] * 30, "datatype": "BYTES", "data": ["x"]}), "m"),
    lambda: rest.parse_infer_request(_body({"name": "a", "shape": [1] * 30 + [-1], "datatype": "FP64", "data": []}),
                                     "m"),
])
def test_errors_about_a_shape_show_a_prefix_of_it(message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument, match=re.escape("... (3") + r"\d dimensions\)\]") as err:
        message()
    assert len(str(err.value)) < 300, str(err.value)


def test_huge_names_and_datatypes_are_cut_short_in_errors() -> None:
    name = "n" * (1 << 20)
    for req in (_request([1], name=name, values=[1.0, 2.0]), _request([1], name=name, datatype="X" * (1 << 20))):
        with pytest.raises(InvalidArgument) as err:
            tensors.decode_inputs(req)
        assert len(str(err.value)) < SMALL
    with pytest.raises(InvalidArgument) as err:
        tensors.dtype_of("X" * (1 << 20))
    assert len(str(err.value)) < SMALL
    with pytest.raises(InvalidArgument, match="requested output") as err:
        tensors.encode_response("m", {"y": np.zeros(1)}, requested=["o" * (1 << 20)])
    assert len(str(err.value)) < SMALL


@pytest.mark.parametrize("datatype", ["BYTES", "UINT64", "FP64"])
@pytest.mark.parametrize("depth", [MAX_DIMS + 1, 1000])
def test_data_nested_deeper_than_a_tensor_is_invalid_argument(datatype: str, depth: int) -> None:
    leaf = b'"x"' if datatype == "BYTES" else b"1"
    body = (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "' + datatype.encode() + b'", "data": '
            + b"[" * depth + leaf + b"]" * depth + b"}]}")
    with pytest.raises(InvalidArgument, match="'data'"):
        rest.parse_infer_request(body, "m")


def test_nested_bytes_data_still_flattens_in_order() -> None:
    data = [[["a", "b"], ["c", "d"]], [["e", "f"], ["g", "h"]]]
    req, _ = rest.parse_infer_request(_body({"name": "a", "shape": [2, 2, 2], "datatype": "BYTES", "data": data}), "m")
    assert list(req.inputs[0].contents.bytes_contents) == [c.encode() for c in "abcdefgh"]
    req, _ = rest.parse_infer_request(_body({"name": "a", "shape": [2, 2], "datatype": "UINT64",
                                             "data": [[0, 2**64 - 1], [], [3, 4]][::2]}), "m")
    assert list(req.inputs[0].contents.uint64_contents) == [0, 2**64 - 1, 3, 4]
