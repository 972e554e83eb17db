"""numpy <-> V2 protobuf tensors: round trips for every datatype, and every validation error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.protocol import tensors, v2

SAMPLES = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "UINT8": np.array([[0, 1, 255], [7, 8, 9]], dtype=np.uint8),
    "UINT16": np.array([[0, 1, 65535], [7, 8, 9]], dtype=np.uint16),
    "UINT32": np.array([[0, 1, 2**32 - 1], [7, 8, 9]], dtype=np.uint32),
    "UINT64": np.array([[0, 1, 2**64 - 1], [7, 8, 9]], dtype=np.uint64),
    "INT8": np.array([[-128, 0, 127], [7, -8, 9]], dtype=np.int8),
    "INT16": np.array([[-(2**15), 0, 2**15 - 1], [7, -8, 9]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1], [7, -8, 9]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1], [7, -8, 9]], dtype=np.int64),
    "FP16": np.array([[0.5, -1.25, 65504.0], [np.inf, 0.0, 3.0]], dtype=np.float16),
    "FP32": np.array([[0.1, -1e-30, 3.4e38], [np.inf, 0.0, 3.0]], dtype=np.float32),
    "FP64": np.array([[0.1, -1e-300, 1.7e308], [-np.inf, 0.0, 3.0]], dtype=np.float64),
    "BYTES": np.array([[b"a", b"", b"\xff\x00raw"], ["h\u00e9", "x" * 300, b"z"]], dtype=object),
}


def _same(actual: np.ndarray, expected: np.ndarray, datatype: str) -> None:
    assert actual.shape == expected.shape
    if datatype == "BYTES":
        assert actual.dtype == np.object_
        want = [v.encode() if isinstance(v, str) else v for v in expected.ravel().tolist()]
        assert actual.ravel().tolist() == want
    else:
        assert actual.dtype == tensors.DATATYPES[datatype]
        np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_request_and_response_round_trip_every_datatype(datatype: str, raw: bool) -> None:
    arr = SAMPLES[datatype]
    request = tensors.encode_request("m", {"x": arr}, raw=raw)
    assert request.inputs[0].datatype == datatype
    assert list(request.inputs[0].shape) == [2, 3]
    # FP16 has no typed field: it always travels raw
    assert bool(request.raw_input_contents) == (raw or datatype == "FP16")
    wire = v2.ModelInferRequest.FromString(request.SerializeToString())
    _same(tensors.decode_inputs(wire)["x"], arr, datatype)

    response = tensors.encode_response("m", {"y": arr}, raw=raw, request_id="r")
    wire = v2.ModelInferResponse.FromString(response.SerializeToString())
    assert wire.id == "r"
    _same(tensors.decode_outputs(wire)["y"], arr, datatype)


def test_datatype_names_and_dtypes() -> None:
    for name, dtype in tensors.DATATYPES.items():
        assert tensors.dtype_of(name) == dtype
        if name != "BYTES":
            assert tensors.datatype_of(dtype) == name
    assert tensors.datatype_of(np.dtype(">f4")) == "FP32"
    assert tensors.datatype_of(np.str_) == "BYTES"
    assert tensors.datatype_of("S3") == "BYTES"
    assert tensors.datatype_of(object) == "BYTES"
    with pytest.raises(InvalidArgument, match="unknown datatype 'FP8'"):
        tensors.dtype_of("FP8")
    with pytest.raises(InvalidArgument, match="numpy dtype complex128 has no V2 datatype"):
        tensors.datatype_of(np.complex128)


def test_string_arrays_scalars_and_empty_tensors() -> None:
    inputs = {
        "s": np.array(["ab", "c\u00e9"]),
        "scalar": np.float64(2.5),
        "empty": np.zeros((0, 3), dtype=np.int32),
        "empty16": np.zeros((2, 0), dtype=np.float16),
    }
    for raw in (False, True):
        out = tensors.decode_inputs(tensors.encode_request("m", inputs, raw=raw))
        assert out["s"].tolist() == [b"ab", "c\u00e9".encode()]
        assert out["scalar"].shape == () and out["scalar"] == 2.5
        assert out["empty"].shape == (0, 3) and out["empty"].dtype == np.int32
        assert out["empty16"].shape == (2, 0) and out["empty16"].dtype == np.float16


def test_big_endian_input_is_written_little_endian() -> None:
    arr = np.array([1.5, -2.0], dtype=">f8")
    request = tensors.encode_request("m", {"x": arr}, raw=True)
    assert request.raw_input_contents[0] == np.array([1.5, -2.0], dtype="<f8").tobytes()


def test_raw_decode_is_zero_copy_and_read_only() -> None:
    request = tensors.encode_request("m", {"x": np.arange(4, dtype=np.float32)}, raw=True)
    arr = tensors.decode_inputs(request)["x"]
    assert not arr.flags.writeable
    assert not arr.flags.owndata


def test_request_fields_outputs_and_parameters() -> None:
    request = tensors.encode_request(
        "m",
        {"x": np.ones(1)},
        model_version="3",
        request_id="id-1",
        outputs=["a", "b"],
        parameters={"s": "v", "flag": True, "n": -5},
    )
    assert (request.model_name, request.model_version, request.id) == ("m", "3", "id-1")
    assert tensors.requested_outputs(request) == ["a", "b"]
    assert tensors.parameters_to_dict(request.parameters) == {"s": "v", "flag": True, "n": -5}
    with pytest.raises(InvalidArgument, match="request: parameter 'f' must be a string, boolean or integer, got float"):
        tensors.encode_request("m", {"x": np.ones(1)}, parameters={"f": 0.5})
    with pytest.raises(InvalidArgument, match="parameter 'n' is out of the int64 range"):
        tensors.encode_request("m", {"x": np.ones(1)}, parameters={"n": 2**64})


def test_encode_response_selects_and_orders_requested_outputs() -> None:
    outputs = {"a": np.ones(1), "b": np.zeros(2), "c": np.array([b"x"], dtype=object)}
    response = tensors.encode_response("m", outputs, requested=["c", "a"], parameters={"k": 1})
    assert [o.name for o in response.outputs] == ["c", "a"]
    assert tensors.parameters_to_dict(response.parameters) == {"k": 1}
    assert list(tensors.decode_outputs(response)) == ["c", "a"]
    assert [o.name for o in tensors.encode_response("m", outputs, requested=[]).outputs] == [
        "a",
        "b",
        "c",
    ]
    with pytest.raises(
        InvalidArgument,
        match=r"requested output 'z' is not an output of model 'm' \(outputs: a, b, c\)",
    ):
        tensors.encode_response("m", outputs, requested=["a", "z"])


def _typed_request(datatype: str, shape: list[int], **contents: list) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="m")
    request.inputs.add(
        name="input-0", datatype=datatype, shape=shape, contents=v2.InferTensorContents(**contents)
    )
    return request


def _raw_request(datatype: str, shape: list[int], raw: bytes) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="m")
    request.inputs.add(name="input-0", datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    return request


INVALID = [
    (
        _typed_request("FP32", [2, 4], fp32_contents=[1.0] * 6),
        "input 'input-0': shape [2, 4] needs 8 elements, got 6",
    ),
    (
        _typed_request("FP32", [2, -1], fp32_contents=[1.0] * 2),
        "input 'input-0': shape [2, -1] has a negative dimension",
    ),
    (
        _typed_request("FP32", [2], int_contents=[1, 2]),
        "input 'input-0': datatype FP32 takes fp32_contents, got int_contents",
    ),
    (
        _typed_request("INT64", [2], int64_contents=[1, 2], fp64_contents=[1.0]),
        "input 'input-0': datatype INT64 takes int64_contents, got fp64_contents",
    ),
    (
        _typed_request("FP16", [1], fp32_contents=[1.0]),
        "input 'input-0': FP16 has no typed contents field, send it as raw contents",
    ),
    (
        _typed_request("FP16", [1]),
        "input 'input-0': FP16 has no typed contents field, send it as raw contents",
    ),
    (
        _typed_request("INT8", [2], int_contents=[1, 128]),
        "input 'input-0': values out of range for INT8 (-128..127)",
    ),
    (
        _typed_request("UINT16", [1], uint_contents=[70000]),
        "input 'input-0': values out of range for UINT16 (0..65535)",
    ),
    (_typed_request("FP99", [1]), "unknown datatype 'FP99'"),
    (
        _raw_request("FP32", [2, 2], b"\0" * 12),
        "input 'input-0': raw contents hold 12 bytes, FP32 shape [2, 2] needs 16",
    ),
    (
        _raw_request("BYTES", [2], b"\x01\x00\x00\x00a\x01\x00"),
        "input 'input-0': raw BYTES contents end inside an element's 4-byte length prefix",
    ),
    (
        _raw_request("BYTES", [1], b"\x05\x00\x00\x00ab"),
        "input 'input-0': raw BYTES element 0 declares 5 bytes but only 2 remain",
    ),
    (
        _raw_request("BYTES", [3], b"\x01\x00\x00\x00a"),
        "input 'input-0': raw BYTES contents hold 1 elements, the shape needs 3",
    ),
]


@pytest.mark.parametrize(("request_", "message"), INVALID, ids=[m for _, m in INVALID])
def test_invalid_tensors_are_rejected_with_a_message_naming_the_input(
    request_: v2.ModelInferRequest, message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        tensors.decode_inputs(request_)
    assert message in str(caught.value)


def test_invalid_request_structure() -> None:
    request = _raw_request("FP32", [1], b"\0" * 4)
    request.inputs.add(name="input-1", datatype="FP32", shape=[1])
    with pytest.raises(
        InvalidArgument,
        match="2 inputs but 1 raw_input_contents; raw contents must be given for every input or for none",
    ):
        tensors.decode_inputs(request)

    request = _raw_request("FP32", [1], b"\0" * 4)
    request.inputs[0].contents.fp32_contents.append(1.0)
    with pytest.raises(
        InvalidArgument, match="input 'input-0': has typed contents although raw_input_contents"
    ):
        tensors.decode_inputs(request)

    request = _typed_request("FP32", [1], fp32_contents=[1.0])
    request.inputs.add(name="input-0", datatype="FP32", shape=[1]).contents.fp32_contents.append(2)
    with pytest.raises(InvalidArgument, match="input 'input-0' is given more than once"):
        tensors.decode_inputs(request)

    request = v2.ModelInferRequest()
    request.inputs.add(datatype="FP32", shape=[0])
    with pytest.raises(InvalidArgument, match="input 0 has no name"):
        tensors.decode_inputs(request)

    response = v2.ModelInferResponse()
    response.outputs.add(name="y", datatype="FP32", shape=[1])
    response.outputs.add(name="z", datatype="FP32", shape=[1])
    response.raw_output_contents.append(b"\0" * 4)
    with pytest.raises(InvalidArgument, match="2 outputs but 1 raw_output_contents"):
        tensors.decode_outputs(response)


def test_bytes_helpers() -> None:
    values = [b"", b"abc", "\u00e9", 12]
    raw = tensors.serialize_bytes(values)
    assert raw == b"\0\0\0\0\x03\0\0\0abc\x02\0\0\0\xc3\xa9\x02\0\0\x0012"
    assert tensors.deserialize_bytes(raw, 4, "t") == [b"", b"abc", b"\xc3\xa9", b"12"]
    assert tensors.deserialize_bytes(b"", 0, "t") == []


# -- fuzzing: any tensors a client sends decode or raise InvalidArgument, nothing else -------------

_DIMS = st.integers(min_value=-3, max_value=2**63 - 1) | st.integers(0, 4)


@st.composite
def _requests(draw: st.DrawFn) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="m")
    raw = draw(st.booleans())
    for index in range(draw(st.integers(0, 3))):
        tensor = request.inputs.add(name=draw(st.sampled_from(["a", "b", ""])) or f"t{index}",
                                    datatype=draw(st.sampled_from([*tensors.DATATYPES, "FP99", ""])),
                                    shape=draw(st.lists(_DIMS, max_size=3)))
        if raw:
            request.raw_input_contents.append(draw(st.binary(max_size=40)))
        else:
            field = draw(st.sampled_from([None, *tensors.CONTENTS_FIELDS.values()]))
            if field == "bytes_contents":
                tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=4), max_size=6)))
            elif field in ("fp32_contents", "fp64_contents"):
                getattr(tensor.contents, field).extend(draw(st.lists(st.floats(width=32), max_size=6)))
            elif field == "bool_contents":
                tensor.contents.bool_contents.extend(draw(st.lists(st.booleans(), max_size=6)))
            elif field is not None:
                low, high = {"int_contents": (-(2**31), 2**31 - 1), "int64_contents": (-(2**63), 2**63 - 1),
                             "uint_contents": (0, 2**32 - 1), "uint64_contents": (0, 2**64 - 1)}[field]
                getattr(tensor.contents, field).extend(draw(st.lists(st.integers(low, high), max_size=6)))
    if raw and draw(st.booleans()):
        request.raw_input_contents.append(b"extra")
    return request


@settings(max_examples=400, deadline=None)
@given(_requests())
def test_any_request_tensors_decode_or_are_an_invalid_argument(request: v2.ModelInferRequest) -> None:
    try:
        arrays = tensors.decode_inputs(request)
    except InvalidArgument:
        return
    assert list(arrays) == [t.name for t in request.inputs]
