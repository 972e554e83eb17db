"""The REST and protobuf codecs against the real clients' own encoders and decoders.

tritonclient.http (never tritonclient.grpc: it would load a second ``inference`` proto package) and
kserve's InferRequest / InferResponse (kserve_mesh.protocol.v2 made kserve reuse our pb module).
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from kserve import InferInput, InferOutput, InferRequest, InferResponse
from kserve.protocol.infer_type import RequestedOutput

from kserve_mesh.protocol import rest, tensors

ARRAYS = {
    "BOOL": np.array([[True, False], [False, True]]),
    "UINT8": np.array([[0, 255], [3, 4]], dtype=np.uint8),
    "UINT16": np.array([[0, 65535], [3, 4]], dtype=np.uint16),
    "UINT32": np.array([[0, 2**32 - 1], [3, 4]], dtype=np.uint32),
    "UINT64": np.array([[0, 2**64 - 1], [3, 4]], dtype=np.uint64),
    "INT8": np.array([[-128, 127], [3, 4]], dtype=np.int8),
    "INT16": np.array([[-(2**15), 2**15 - 1], [3, 4]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 2**31 - 1], [3, 4]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 2**63 - 1], [3, 4]], dtype=np.int64),
    "FP16": np.array([[0.5, -2.0], [65504.0, 1e-3]], dtype=np.float16),
    "FP32": np.array([[0.1, -2.5], [3.4e38, 1e-30]], dtype=np.float32),
    "FP64": np.array([[0.1, -2.5], [1.7e308, 1e-300]], dtype=np.float64),
    "BYTES": np.array([[b"a", b""], ["h\u00e9".encode(), b"x y z"]], dtype=object),
}
JSON_SAFE = [d for d in ARRAYS if d != "FP16"]  # kserve refuses FP16 in JSON


def _assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    if expected.dtype == np.object_:
        got = [v.encode() if isinstance(v, str) else bytes(v) for v in actual.ravel().tolist()]
        assert got == expected.ravel().tolist()
    else:
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_request_parses(binary: bool) -> None:
    inputs = []
    for datatype, arr in ARRAYS.items():
        infer_input = triton.InferInput(datatype, list(arr.shape), datatype)
        infer_input.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(infer_input)
    outputs = [triton.InferRequestedOutput("y", binary_data=True)]
    body, json_size = triton.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, request_id="t-1"
    )
    assert (json_size is not None) == binary
    request, options = rest.parse_infer_request(body, "m", header_length=json_size)
    assert request.id == "t-1"
    assert options.is_binary("y")
    decoded = tensors.decode_inputs(request)
    for datatype, arr in ARRAYS.items():
        _assert_same(decoded[datatype], arr)


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_rendered_response_parses_in_tritonclient(binary: bool, raw: bool) -> None:
    response = tensors.encode_response("m", ARRAYS, raw=raw, request_id="r-9")
    body, headers = rest.render_infer_response(
        response, rest.ResponseOptions(binary_default=binary)
    )
    length = headers.get(rest.HEADER_LENGTH)
    result = triton.InferenceServerClient.parse_response_body(
        body, header_length=int(length) if length else None
    )
    assert result.get_response()["id"] == "r-9"
    for datatype, arr in ARRAYS.items():
        _assert_same(result.as_numpy(datatype), arr)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_kserve_rest_request_parses(binary: bool) -> None:
    names = ARRAYS if binary else JSON_SAFE
    infer_inputs = []
    for datatype in names:
        arr = ARRAYS[datatype]
        infer_input = InferInput(name=datatype, shape=list(arr.shape), datatype=datatype)
        infer_input.set_data_from_numpy(arr, binary_data=binary)
        infer_inputs.append(infer_input)
    request = InferRequest(
        model_name="m",
        infer_inputs=infer_inputs,
        request_id="k-1",
        parameters={"p": "v"},
        request_outputs=[RequestedOutput(name="y", parameters={"binary_data": True})],
    )
    body, json_length = request.to_rest()
    if isinstance(body, dict):
        body = orjson.dumps(body)
    assert (json_length is not None) == binary
    parsed, options = rest.parse_infer_request(body, "m", header_length=json_length)
    assert parsed.id == "k-1"
    assert tensors.parameters_to_dict(parsed.parameters) == {"p": "v"}
    assert options.is_binary("y")
    decoded = tensors.decode_inputs(parsed)
    for datatype in names:
        _assert_same(decoded[datatype], ARRAYS[datatype])


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_rendered_response_parses_in_kserve(binary: bool) -> None:
    names = ARRAYS if binary else {d: ARRAYS[d] for d in JSON_SAFE}
    response = tensors.encode_response("m", names, model_version="1", request_id="r")
    body, headers = rest.render_infer_response(
        response, rest.ResponseOptions(binary_default=binary)
    )
    if binary:
        parsed = InferResponse.from_bytes(body, int(headers[rest.HEADER_LENGTH]))
    else:
        parsed = InferResponse.from_rest(orjson.loads(body))
    assert parsed.model_name == "m" and parsed.id == "r"
    outputs = {output.name: output.as_numpy() for output in parsed.outputs}
    for datatype, arr in names.items():
        _assert_same(outputs[datatype], arr)


def test_kserve_grpc_messages_interoperate() -> None:
    infer_inputs = []
    for datatype, arr in ARRAYS.items():
        infer_input = InferInput(name=datatype, shape=list(arr.shape), datatype=datatype)
        infer_input.set_data_from_numpy(arr, binary_data=True)
        infer_inputs.append(infer_input)
    grpc_request = InferRequest(model_name="m", infer_inputs=infer_inputs).to_grpc()
    decoded = tensors.decode_inputs(grpc_request)
    for datatype, arr in ARRAYS.items():
        _assert_same(decoded[datatype], arr)

    for raw in (False, True):
        response = tensors.encode_response("m", ARRAYS, raw=raw)
        parsed = InferResponse.from_grpc(response)
        outputs = {output.name: output.as_numpy() for output in parsed.outputs}
        for datatype, arr in ARRAYS.items():
            _assert_same(outputs[datatype], arr)

    # and kserve's own REST response for the same tensors parses with our client-side parser
    kserve_response = InferResponse(
        response_id="z",
        model_name="m",
        infer_outputs=[
            InferOutput(name=d, shape=list(a.shape), datatype=d, data=a) for d, a in ARRAYS.items()
        ],
        use_binary_outputs=True,
    )
    body, json_length = kserve_response.to_rest()
    parsed_response = rest.parse_infer_response(body, header_length=json_length)
    outputs = tensors.decode_outputs(parsed_response)
    for datatype, arr in ARRAYS.items():
        _assert_same(outputs[datatype], arr)
