"""V2 REST JSON and binary extension <-> protobuf: parsing, rendering, every validation error."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kserve_mesh.core.errors import InternalError, InvalidArgument
from kserve_mesh.protocol import rest, tensors, v2

JSON_DATA = {
    "BOOL": ([True, False, True, True], [True, False, True, True]),
    "UINT8": ([0, 255, 3, 4], [0, 255, 3, 4]),
    "UINT16": ([0, 65535, 3, 4], [0, 65535, 3, 4]),
    "UINT32": ([0, 2**32 - 1, 3, 4], [0, 2**32 - 1, 3, 4]),
    "UINT64": ([0, 2**64 - 1, 3, 4], [0, 2**64 - 1, 3, 4]),
    "INT8": ([-128, 127, 3, 4], [-128, 127, 3, 4]),
    "INT16": ([-(2**15), 2**15 - 1, 3, 4], [-(2**15), 2**15 - 1, 3, 4]),
    "INT32": ([-(2**31), 2**31 - 1, 3, 4], [-(2**31), 2**31 - 1, 3, 4]),
    "INT64": ([-(2**63), 2**63 - 1, 3, 4], [-(2**63), 2**63 - 1, 3, 4]),
    "FP16": ([0.5, -2, 3.25, 1e4], [0.5, -2.0, 3.25, 1e4]),
    "FP32": ([0.5, -2, 3.25, 1e30], [0.5, -2.0, 3.25, 1e30]),
    "FP64": ([0.1, -2, 3.25, 1e300], [0.1, -2.0, 3.25, 1e300]),
    "BYTES": (["a", "", "h\u00e9", "x y"], [b"a", b"", "h\u00e9".encode(), b"x y"]),
}


def _body(*inputs: dict, **extra: object) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def _nest(flat: list) -> list:
    return [flat[:2], flat[2:]]


def _expected(datatype: str, values: list) -> np.ndarray:
    return np.array(values, dtype=tensors.DATATYPES[datatype]).reshape(2, 2)


def _check(arr: np.ndarray, datatype: str, values: list) -> None:
    assert arr.shape == (2, 2)
    if datatype == "BYTES":
        assert arr.ravel().tolist() == values
    else:
        assert arr.dtype == tensors.DATATYPES[datatype]
        np.testing.assert_array_equal(arr, _expected(datatype, values))


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
@pytest.mark.parametrize("datatype", list(JSON_DATA))
def test_parse_every_datatype_flat_and_nested(datatype: str, nested: bool) -> None:
    data, values = JSON_DATA[datatype]
    body = _body(
        {"name": "x", "shape": [2, 2], "datatype": datatype, "data": _nest(data) if nested else data}
    )
    for raw in (False, True):
        request, options = rest.parse_infer_request(body, "m", raw=raw)
        assert request.model_name == "m"
        assert bool(request.raw_input_contents) == (raw or datatype == "FP16")
        wire = v2.ModelInferRequest.FromString(request.SerializeToString())
        _check(tensors.decode_inputs(wire)["x"], datatype, values)
        assert options == rest.ResponseOptions()


@pytest.mark.parametrize("datatype", list(JSON_DATA))
def test_binary_request_for_every_datatype(datatype: str) -> None:
    _, values = JSON_DATA[datatype]
    arr = _expected(datatype, values) if datatype != "BYTES" else np.array(values, dtype=object)
    blob = tensors.raw_bytes(arr, datatype)
    header = json.dumps(
        {
            "id": "r-1",
            "inputs": [
                {"name": "j", "shape": [1], "datatype": "INT32", "data": [7]},
                {
                    "name": "x",
                    "shape": [2, 2],
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(blob), "extra": "kept"},
                },
            ],
        }
    ).encode()
    request, _ = rest.parse_infer_request(header + blob, "m", header_length=len(header))
    assert request.id == "r-1"
    assert len(request.raw_input_contents) == 2  # one binary input puts every input in raw form
    assert tensors.parameters_to_dict(request.inputs[1].parameters) == {"extra": "kept"}
    out = tensors.decode_inputs(request)
    assert out["j"].tolist() == [7]
    _check(out["x"], datatype, values)


def test_request_fields_parameters_and_output_options() -> None:
    body = _body(
        {"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "parameters": {"a": 1}},
        id="abc",
        parameters={"binary_data_output": True, "s": "v", "flag": False},
        outputs=[
            {"name": "p", "parameters": {"binary_data": False, "k": "v"}},
            {"name": "q"},
        ],
    )
    request, options = rest.parse_infer_request(body, "m", model_version="2")
    assert (request.id, request.model_version) == ("abc", "2")
    assert tensors.parameters_to_dict(request.parameters) == {"s": "v", "flag": False}
    assert tensors.parameters_to_dict(request.inputs[0].parameters) == {"a": 1}
    assert tensors.requested_outputs(request) == ["p", "q"]
    assert tensors.parameters_to_dict(request.outputs[0].parameters) == {"k": "v"}
    assert options.binary_default is True
    assert not options.is_binary("p")
    assert options.is_binary("q")
    assert options.is_binary("other")


def _binary_body(size: int, payload: bytes, datatype: str = "FP32", shape: list | None = None):
    header = _body(
        {
            "name": "b",
            "shape": shape or [2],
            "datatype": datatype,
            "parameters": {"binary_data_size": size},
        }
    )
    return header + payload, len(header)


INVALID = [
    (b"{not json", None, "body is not valid JSON"),
    (b"[1, 2]", None, "body must be a JSON object, got list"),
    (b"{}", None, "'inputs' is missing or not a non-empty list"),
    (_body(), None, "'inputs' is missing or not a non-empty list"),
    (_body(5), None, "input 0 must be a JSON object"),
    (_body({"shape": [1], "datatype": "FP32", "data": [1]}), None, "input 0: 'name' is missing"),
    (_body({"name": "a", "datatype": "FP32", "data": [1]}), None, "input 'a': 'shape' is missing"),
    (
        _body({"name": "a", "shape": [1.5], "datatype": "FP32", "data": [1]}),
        None,
        "input 'a': 'shape' must be a list of integers, got 1.5",
    ),
    (
        _body({"name": "a", "shape": 4, "datatype": "FP32", "data": [1]}),
        None,
        "input 'a': 'shape' must be a list of integers, got int",
    ),
    (
        b'{"inputs": [{"name": "a", "shape": [18446744073709551616, 4], "datatype": "FP32", "data": [1]}]}',
        None,
        "input 'a': 'shape' must be a list of integers, got 1.8446744073709552e+19",
    ),
    (
        _body({"name": "a", "shape": [2**64 - 1, 4], "datatype": "FP32", "data": [1]}),
        None,
        f"input 'a': shape dimension {2**64 - 1} is out of range (0..{2**63 - 1})",
    ),
    (_body({"name": "a", "shape": [True], "datatype": "FP32", "data": [1]}), None, "got True"),
    (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1e999]}]}', None,
     "body is not valid JSON: number is infinity"),
    (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [NaN]}]}', None,
     "body is not valid JSON"),
    (_body({"name": "a", "shape": [1], "data": [1]}), None, "input 'a': 'datatype' is missing"),
    (
        _body({"name": "a", "shape": [1], "datatype": "FLOAT", "data": [1]}),
        None,
        "input 'a': unknown datatype 'FLOAT'",
    ),
    (_body({"name": "a", "shape": [1], "datatype": "FP32"}), None, "input 'a': 'data' is missing"),
    (
        _body({"name": "a", "shape": [1], "datatype": "FP32", "data": 1}),
        None,
        "input 'a': 'data' must be a list",
    ),
    (
        _body({"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": [1] * 6}),
        None,
        "input 'input-0': shape [2, 4] needs 8 elements, got 6",
    ),
    (
        _body({"name": "a", "shape": [-1], "datatype": "FP32", "data": [1]}),
        None,
        "input 'a': shape [-1] has a negative dimension",
    ),
    (
        _body({"name": "a", "shape": [2], "datatype": "FP32", "data": [1, "x"]}),
        None,
        "input 'a': datatype FP32 needs numbers in 'data', got strings",
    ),
    (
        _body({"name": "a", "shape": [2], "datatype": "FP32", "data": [True, False]}),
        None,
        "input 'a': datatype FP32 needs numbers in 'data', got booleans",
    ),
    (
        _body({"name": "a", "shape": [2], "datatype": "INT32", "data": [1, 2.5]}),
        None,
        "input 'a': datatype INT32 needs integers in 'data', got non-integer numbers",
    ),
    (
        _body({"name": "a", "shape": [2], "datatype": "BOOL", "data": [1, 0]}),
        None,
        "input 'a': datatype BOOL needs booleans in 'data', got integers",
    ),
    (
        _body({"name": "a", "shape": [2], "datatype": "INT64", "data": [1, None]}),
        None,
        "input 'a': datatype INT64 needs integers in 'data', got mixed or unsupported values",
    ),
    (
        _body({"name": "a", "shape": [2], "datatype": "UINT8", "data": [1, 256]}),
        None,
        "input 'a': values out of range for UINT8 (0..255)",
    ),
    (
        _body({"name": "a", "shape": [1], "datatype": "UINT64", "data": [-1]}),
        None,
        "input 'a': values out of range for UINT64",
    ),
    (
        _body({"name": "a", "shape": [3], "datatype": "FP32", "data": [[1, 2], [3]]}),
        None,
        "input 'a': 'data' is not a regular (non-ragged) list",
    ),
    (
        _body({"name": "a", "shape": [2], "datatype": "BYTES", "data": ["x", 1]}),
        None,
        "input 'a': datatype BYTES needs strings in 'data', got int",
    ),
    (
        _body({"name": "a", "shape": [3], "datatype": "BYTES", "data": [["x"], ["y"]]}),
        None,
        "input 'a': shape [3] needs 3 elements, got 2",
    ),
    (
        _body(
            {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]},
            {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]},
        ),
        None,
        "input 'a' is given more than once",
    ),
    (
        _body({"name": "a", "shape": [1], "datatype": "FP32", "data": [1], "parameters": []}),
        None,
        "input 'a': 'parameters' must be an object",
    ),
    (
        _body({"name": "a", "shape": [1], "datatype": "FP32", "data": [1], "parameters": {"p": 0.5}}),
        None,
        "'a': parameter 'p' must be a string, boolean or integer, got float",
    ),
    (
        _body({"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}, id=5),
        None,
        "'id' must be a string",
    ),
    (
        _body({"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}, parameters=[1]),
        None,
        "request: 'parameters' must be an object",
    ),
    (
        _body(
            {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]},
            parameters={"binary_data_output": "yes"},
        ),
        None,
        "request: 'binary_data_output' must be a boolean",
    ),
    (
        _body({"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}, outputs={"a": 1}),
        None,
        "'outputs' must be a list",
    ),
    (
        _body({"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}, outputs=[{}]),
        None,
        "output 0: 'name' is missing or not a string",
    ),
    (
        _body(
            {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]},
            outputs=[{"name": "o", "parameters": {"binary_data": 1}}],
        ),
        None,
        "output 'o': 'binary_data' must be a boolean",
    ),
    (*_binary_body(8, b"\0" * 8), "NO_HEADER"),
    (*_binary_body(4, b"\0" * 4), "input 'b': 'binary_data_size' is 4 but FP32 shape [2] needs 8 bytes"),
    (*_binary_body(12, b"\0" * 8), "input 'b': 'binary_data_size' is 12 but only 8 bytes of binary"),
    (*_binary_body(8, b"\0" * 10), "the body has 10 bytes of binary data after the JSON header but the inputs' 'binary_data_size' add up to 8"),
    (*_binary_body(-1, b""), "input 'b': 'binary_data_size' must be a non-negative integer"),
    (
        *_binary_body(5, b"\x05\0\0\0a", datatype="BYTES", shape=[1]),
        "input 'b': raw BYTES element 0 declares 5 bytes but only 1 remain",
    ),
    (b"{}", 10, "Inference-Header-Content-Length is 10 but the body has 2 bytes"),
    (b"{}", 0, "Inference-Header-Content-Length is 0 but the body has 2 bytes"),
    (
        _body(
            {
                "name": "a",
                "shape": [1],
                "datatype": "FP32",
                "data": [1],
                "parameters": {"binary_data_size": 4},
            }
        ),
        None,
        "input 'a': has both 'data' and 'binary_data_size'",
    ),
]


@pytest.mark.parametrize(("body", "header_length", "message"), INVALID, ids=[m for *_, m in INVALID])
def test_invalid_requests_are_rejected_with_a_message(
    body: bytes, header_length: int | None, message: str
) -> None:
    if message == "NO_HEADER":  # binary inputs but no Inference-Header-Content-Length
        body, header_length = body[:header_length], None
        message = "input 'b': 'binary_data_size' is 8 but only 0 bytes of binary data remain"
    with pytest.raises(InvalidArgument) as caught:
        rest.parse_infer_request(body, "m", header_length=header_length)
    assert message in str(caught.value)


def _response(raw: bool) -> v2.ModelInferResponse:
    return tensors.encode_response(
        "m",
        {
            "f": np.array([[0.1, 0.5], [1.0, -2.0]], dtype=np.float32),
            "s": np.array(["a\u00e9", "b"]),
            "h": np.array([1.5], dtype=np.float16),
            "u": np.array([2**64 - 1], dtype=np.uint64),
        },
        model_version="1",
        request_id="r",
        raw=raw,
        parameters={"p": "v"},
    )


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_render_json_response(raw: bool) -> None:
    body, headers = rest.render_infer_response(_response(raw), rest.ResponseOptions())
    assert headers == {"Content-Type": "application/json"}
    doc = json.loads(body)
    assert doc["model_name"] == "m" and doc["model_version"] == "1" and doc["id"] == "r"
    assert doc["parameters"] == {"p": "v"}
    f, s, h, u = doc["outputs"]
    assert f == {"name": "f", "datatype": "FP32", "shape": [2, 2], "data": [0.1, 0.5, 1.0, -2.0]}
    assert s["data"] == ["a\u00e9", "b"] and s["datatype"] == "BYTES"
    assert h["data"] == [1.5] and h["datatype"] == "FP16"
    assert u["data"] == [2**64 - 1]


def test_typed_fp32_response_renders_shortest_float32_text() -> None:
    response = tensors.encode_response("m", {"f": np.array([0.1], dtype=np.float32)})
    assert response.outputs[0].contents.fp32_contents  # typed form
    body, _ = rest.render_infer_response(response)
    assert b'"data":[0.1]' in body


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_render_binary_response(raw: bool) -> None:
    options = rest.ResponseOptions(binary={"f": True, "s": True})
    body, headers = rest.render_infer_response(_response(raw), options)
    assert headers["Content-Type"] == "application/octet-stream"
    length = int(headers["Inference-Header-Content-Length"])
    doc = json.loads(body[:length])
    f, s, h, u = doc["outputs"]
    assert "data" not in f and f["parameters"] == {"binary_data_size": 16}
    assert "data" not in s and s["parameters"] == {"binary_data_size": 4 + 3 + 4 + 1}
    assert h["data"] == [1.5] and u["data"] == [2**64 - 1]
    blobs = body[length:]
    np.testing.assert_array_equal(
        np.frombuffer(blobs[:16], dtype="<f4"), np.float32([0.1, 0.5, 1.0, -2.0])
    )
    assert tensors.deserialize_bytes(blobs[16:], 2, "s") == ["a\u00e9".encode(), b"b"]

    # the client-side parser reads it back into the same tensors
    parsed = rest.parse_infer_response(body, header_length=length)
    assert (parsed.model_name, parsed.model_version, parsed.id) == ("m", "1", "r")
    out = tensors.decode_outputs(parsed)
    np.testing.assert_array_equal(out["f"], np.float32([[0.1, 0.5], [1.0, -2.0]]))
    assert out["s"].tolist() == ["a\u00e9".encode(), b"b"]
    assert out["h"].dtype == np.float16 and out["u"].tolist() == [2**64 - 1]


def test_binary_data_output_makes_every_output_binary() -> None:
    body, headers = rest.render_infer_response(
        _response(False), rest.ResponseOptions(binary_default=True, binary={"u": False})
    )
    length = int(headers["Inference-Header-Content-Length"])
    doc = json.loads(body[:length])
    assert ["data" in o for o in doc["outputs"]] == [False, False, False, True]
    assert len(body) - length == 16 + 12 + 2


def test_non_utf8_bytes_output_needs_binary() -> None:
    response = tensors.encode_response("m", {"s": np.array([b"\xff"], dtype=object)})
    with pytest.raises(InvalidArgument, match="output 's': BYTES values are not UTF-8 text"):
        rest.render_infer_response(response)
    body, _headers = rest.render_infer_response(response, rest.ResponseOptions(binary_default=True))
    assert body.endswith(b"\x01\0\0\0\xff")


def test_malformed_runtime_response_is_an_internal_error() -> None:
    response = v2.ModelInferResponse(model_name="m")
    response.outputs.add(name="y", datatype="FP32", shape=[2])
    response.raw_output_contents.append(b"\0" * 4)
    with pytest.raises(InternalError, match="model 'm' sent a malformed response: output 'y': raw contents hold 4 bytes"):
        rest.render_infer_response(response)


@pytest.mark.parametrize("binary_inputs", [False, True])
@pytest.mark.parametrize("raw", [False, True])
def test_client_request_rendering_round_trips(binary_inputs: bool, raw: bool) -> None:
    inputs = {datatype: _expected(datatype, values) for datatype, (_, values) in JSON_DATA.items()}
    inputs["BYTES"] = np.array(JSON_DATA["BYTES"][1], dtype=object).reshape(2, 2)
    request = tensors.encode_request(
        "m", inputs, raw=raw, request_id="q", outputs=["o"], parameters={"k": 3}
    )
    body, headers = rest.render_infer_request(
        request, binary_inputs=binary_inputs, binary_outputs=True
    )
    length = headers.get("Inference-Header-Content-Length")
    assert (length is not None) == binary_inputs
    parsed, options = rest.parse_infer_request(
        body, "m", header_length=int(length) if length else None
    )
    assert parsed.id == "q" and options.is_binary("o") and not options.binary_default
    assert tensors.parameters_to_dict(parsed.parameters) == {"k": 3}
    out = tensors.decode_inputs(parsed)
    for datatype, (_, values) in JSON_DATA.items():
        _check(out[datatype], datatype, values)


def test_binary_outputs_without_named_outputs_sets_binary_data_output() -> None:
    request = tensors.encode_request("m", {"x": np.ones(2)})
    body, _ = rest.render_infer_request(request, binary_inputs=False, binary_outputs=True)
    _, options = rest.parse_infer_request(body, "m")
    assert options.binary_default is True


def test_bytes_binary_input_payload_is_kept_verbatim() -> None:
    blob = struct.pack("<I", 2) + b"\xff\xfe"
    header = _body({"name": "b", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}})
    request, _ = rest.parse_infer_request(header + blob, "m", header_length=len(header))
    assert request.raw_input_contents[0] == blob


def test_metadata_and_small_renderers() -> None:
    metadata = v2.ModelMetadataResponse(name="m", versions=["1"], platform="sklearn")
    metadata.inputs.add(name="x", datatype="FP32", shape=[-1, 4])
    metadata.outputs.add(name="y", datatype="INT64", shape=[-1])
    assert rest.render_model_metadata(metadata) == {
        "name": "m",
        "versions": ["1"],
        "platform": "sklearn",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1]}],
    }
    server = v2.ServerMetadataResponse(name="kserve-mesh", version="0.1.0", extensions=["model_repository"])
    assert rest.render_server_metadata(server) == {
        "name": "kserve-mesh",
        "version": "0.1.0",
        "extensions": ["model_repository"],
    }
    assert rest.render_model_ready("m", True) == {"name": "m", "ready": True}
    assert rest.render_error(InvalidArgument("bad")) == {"error": "bad"}
    assert rest.loads(rest.dumps({"a": np.arange(3), "b": np.float32(0.5)})) == {"a": [0, 1, 2], "b": 0.5}


# -- fuzzing: whatever a client sends, the parser answers with a request or InvalidArgument --------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)
_inputs = st.fixed_dictionaries(
    {"name": st.text(max_size=6) | _json_values, "shape": st.lists(st.integers(-2, 2**64), max_size=3) | _json_values,
     "datatype": st.sampled_from([*tensors.DATATYPES, "FP99", ""]) | _json_values,
     "data": st.lists(_json_values, max_size=6) | _json_values},
    optional={"parameters": st.dictionaries(st.sampled_from(["binary_data_size", "x"]), _json_values, max_size=2)},
)
_bodies = st.fixed_dictionaries({"inputs": st.lists(_inputs, max_size=3) | _json_values},
                                optional={"outputs": _json_values, "parameters": _json_values, "id": _json_values})


def _parse_or_invalid(body: bytes, header_length: int | None = None) -> None:
    try:
        rest.parse_infer_request(body, "m", header_length=header_length)
    except InvalidArgument:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies)
def test_any_json_body_parses_or_is_an_invalid_argument(doc: dict) -> None:
    _parse_or_invalid(json.dumps(doc).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.none() | st.integers(-5, 250))
def test_any_bytes_parse_or_are_an_invalid_argument(body: bytes, header_length: int | None) -> None:
    _parse_or_invalid(body, header_length)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_valid_bodies_parse_or_are_an_invalid_argument(data: st.DataObject) -> None:
    body, header_length = _binary_body(8, b"\x00" * 8, shape=[2])
    mutated = bytearray(body)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(mutated) - 1))
        mutated[at] = data.draw(st.integers(0, 255))
    _parse_or_invalid(bytes(mutated), header_length)
