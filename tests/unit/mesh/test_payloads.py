"""Payload logging without a network: the sink URLs, the CloudEvents an event becomes, the request path.

The sinks' real HTTP side is in tests/integration/mesh/test_payloads_sink.py.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json

import pytest
from cloudevents.http import from_http

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.mesh import payload_events as pe
from kserve_mesh.core.payload_config import parse_payload_processors, parse_sink, redact
from kserve_mesh.mesh.payloads import PayloadLogger
from kserve_mesh.protocol import rest, v2

IRIS = b'{"id":"r-1","inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP64","data":[5.1,3.5,1.4,0.2]}]}'


def _response(model: str = "m", rid: str = "r-1") -> object:
    response = v2.ModelInferResponse(model_name=model, id=rid)
    out = response.outputs.add(name="predict", datatype="INT64", shape=[1])
    out.contents.int64_contents.append(2)
    return response


# -- payload_processors ----------------------------------------------------------------------------
def test_sinks_parse_with_their_model_filters() -> None:
    sinks = parse_payload_processors(" http://a.example/e  https://b.example:8443/in?x=1&modelId=iris&y=2 "
                                     "http://c.example?sk-1 http://d.example/?*  http://[::1]:9000/v6 ")
    assert [(s.scheme, s.host, s.port, s.target, s.model_id) for s in sinks] == [
        ("http", "a.example", 80, "/e", None),
        ("https", "b.example", 8443, "/in?x=1&y=2", "iris"),  # other query parameters stay in the URL
        ("http", "c.example", 80, "/", "sk-1"),  # ModelMesh's form: the whole query is the model id
        ("http", "d.example", 80, "/", None),  # ModelMesh's wildcard
        ("http", "::1", 9000, "/v6", None),
    ]
    assert sinks[1].secure and not sinks[0].secure
    assert [s.host_header for s in sinks] == ["a.example", "b.example:8443", "c.example", "d.example", "[::1]:9000"]
    assert parse_payload_processors("") == () == parse_payload_processors("   ")


def test_percent_encoded_model_ids_are_decoded() -> None:
    assert parse_sink("http://h/?modelId=caf%C3%A9%20m").model_id == "café m"


@pytest.mark.parametrize(("url", "says"), [
    ("ftp://h/x", "scheme must be http:// or https://"),
    ("h.example/x", "scheme must be http:// or https://"),
    ("http:///x", "names no host"),
    ("http://h:0/", "port must be a number"),
    ("http://h:70000/", "port must be a number"),
    ("http://h:abc/", "port must be a number"),
    ("http://[::1/", "not a valid URL"),
    ("http://h/#predict", "#fragment"),
    ("http://h/?modelId=", "'modelId' is empty"),
    ("http://h/?modelId=a&modelId=b", "given 2 times"),
    ("http://h/?a=1&&", "not name=value pairs"),
    ("http://h/?modelId=" + "x" * 300, "at most 256 bytes"),
    ("http://h/?modelId=a%0Ab", "control character"),
    ("http://h/\u00e9", "printable ASCII"),
])
def test_bad_sink_urls_are_refused_by_name(url: str, says: str) -> None:
    with pytest.raises(InvalidArgument, match="payload processor") as info:
        parse_payload_processors(f"http://ok.example/ {url}")
    assert says in str(info.value)
    assert url[:40] in str(info.value) or "***" in str(info.value) or "\\" in str(info.value)


def test_a_sink_given_twice_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="given twice"):
        parse_payload_processors("http://h/e?modelId=a http://h:80/e?modelId=a")
    assert len(parse_payload_processors("http://h/e?modelId=a http://h/e?modelId=b")) == 2


def test_credentials_become_basic_auth_and_are_never_shown() -> None:
    spec = parse_sink("https://alice:s%3Acr%40t@sink.example/events")
    assert spec.authorization == "Basic " + base64.b64encode(b"alice:s:cr@t").decode()
    assert spec.name == "https://***@sink.example/events"
    assert "cr" not in repr(spec) and "alice" not in repr(spec)
    for url in ("ftp://alice:s3cret@h/", "http://alice:s3cret@h:99999/", "http://alice:pa/ss@h/x",
                "http://alice:s3cret@h/#x"):
        with pytest.raises(InvalidArgument) as info:
            parse_sink(url)
        assert "s3cret" not in str(info.value) and "pa/ss" not in str(info.value) and "alice" not in str(info.value)
    assert redact("http://u:p@h/p?q=a@b") == "http://***@h/p?q=a@b"


# -- the CloudEvent of one payload -----------------------------------------------------------------
def _wire(kind: str, body: object, headers: dict[str, str] | None = None, *, model: str = "m",
          vmodel: str = "", cid: str = "r-1") -> tuple[dict[str, str], bytes]:
    event = pe.PayloadEvent(kind, model, vmodel, cid, body, headers, 1_767_225_600.25)
    data, content_type, length = pe.render(event.kind, event.body, event.headers)
    static = pe.static_headers("kserve-mesh/inst-1", "modelmesh-serving")
    return pe.ce_headers(event, static, content_type, length), data


def test_a_rest_request_is_a_binary_mode_cloudevent_with_kserves_attributes() -> None:
    headers, data = _wire(pe.REQUEST, IRIS, vmodel="iris-isvc", model="iris-isvc__isvc-1234")
    assert data is IRIS  # REST bytes go as they came
    event = from_http(headers, data)
    assert event["specversion"] == "1.0"
    assert event["id"] == "r-1"
    assert event["type"] == "org.kubeflow.serving.inference.request"
    assert event["source"] == "kserve-mesh/inst-1"
    assert event["time"] == "2026-01-01T00:00:00.250000Z"
    assert event["inferenceservicename"] == "iris-isvc"
    assert event["modelid"] == "iris-isvc__isvc-1234"
    assert event["namespace"] == "modelmesh-serving"
    assert (event["component"], event["endpoint"], event["metadata"]) == ("predictor", "default", "{}")
    assert event["datacontenttype"] == "application/json"
    assert event.data == json.loads(IRIS)


def test_a_grpc_response_is_rendered_to_v2_json_by_the_worker() -> None:
    headers, data = _wire(pe.RESPONSE, _response())
    event = from_http(headers, data)
    assert event["type"] == "org.kubeflow.serving.inference.response"
    assert event["inferenceservicename"] == "m"  # no vmodel: the model id
    assert event.data == {"model_name": "m", "model_version": "", "id": "r-1",
                          "outputs": [{"name": "predict", "datatype": "INT64", "shape": [1], "data": [2]}]}


def test_a_grpc_request_with_raw_contents_is_rendered_as_json() -> None:
    request, _ = rest.parse_infer_request(IRIS, "m")
    raw = v2.ModelInferRequest(model_name="m", id="r-2")
    raw.inputs.add(name="input-0", datatype="FP32", shape=[2])
    raw.raw_input_contents.append(b"\x00\x00\x80?\x00\x00\x00@")
    for message, expected in ((request, json.loads(IRIS)["inputs"][0]["data"]), (raw, [1.0, 2.0])):
        headers, data = _wire(pe.REQUEST, message)
        assert headers["content-type"] == "application/json"
        assert json.loads(data)["inputs"][0]["data"] == expected


def test_bytes_that_are_not_text_go_in_the_binary_extension() -> None:
    response = v2.ModelInferResponse(model_name="m", id="r-3")
    response.outputs.add(name="blob", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"\xff\xfe")
    headers, data = _wire(pe.RESPONSE, response)
    assert headers["content-type"] == "application/octet-stream"
    length = int(headers["inference-header-content-length"])
    assert json.loads(data[:length])["outputs"][0]["parameters"]["binary_data_size"] == 6
    assert data[length:] == b"\x02\x00\x00\x00\xff\xfe"


def test_a_binary_rest_body_keeps_its_content_headers_and_a_callable_renders_late() -> None:
    headers, data = _wire(pe.REQUEST, b'{"inputs":[]}raw', {"Content-Type": "application/octet-stream",
                                                           "Inference-Header-Content-Length": "13",
                                                           "authorization": "Bearer x"})
    assert headers["content-type"] == "application/octet-stream"
    assert headers["inference-header-content-length"] == "13"
    assert "authorization" not in headers  # only the content headers travel
    calls = []
    headers, data = _wire(pe.RESPONSE, lambda: calls.append(1) or rest.render_infer_response(_response()))
    assert calls == [1] and from_http(headers, data).data["outputs"][0]["data"] == [2]


def test_header_values_outside_printable_ascii_are_percent_encoded() -> None:
    headers, _ = _wire(pe.REQUEST, IRIS, model="café 100%", cid='a"b')
    assert headers["ce-modelid"] == "caf%C3%A9%20100%25"
    assert headers["ce-id"] == "a%22b"
    assert all(value.isascii() and value.isprintable() for value in headers.values())


def test_ce_time_is_rfc3339_utc_with_microseconds() -> None:
    from datetime import UTC, datetime

    for stamp in (0.0, 1.5, 1_767_225_599.999_998, 1_767_225_600.000_001, 1_767_225_600.25, 4_102_444_800.5):
        expected = datetime.fromtimestamp(stamp, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        assert pe.ce_time(stamp) == expected


def test_queue_cost_of_a_message_comes_from_its_shapes() -> None:
    request = v2.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[1000, 1000])
    assert pe.body_size(pe.REQUEST, request) >= 4_000_000  # never serialized to find out
    assert pe.body_size(pe.REQUEST, IRIS) == len(IRIS)


# -- the request path ------------------------------------------------------------------------------
def test_the_request_path_never_awaits() -> None:
    for name in ("request", "response", "start", "counters"):  # plain functions: nothing to await
        assert not inspect.iscoroutinefunction(getattr(PayloadLogger, name)), name


def test_no_sink_for_a_model_means_no_event() -> None:
    off = PayloadLogger([], source="s")
    assert not off.enabled and off.request("m", "r", IRIS) is None
    only_iris = PayloadLogger(parse_payload_processors("http://h/?modelId=iris"), source="s")
    assert only_iris.request("other", "r", IRIS) is None
    assert only_iris.request("iris__isvc-1", "r", IRIS, vmodel_id="iris") == "r"  # a vmodel id matches too
    assert only_iris.request("iris", "", IRIS) not in (None, "")  # no client id: a uuid
    assert only_iris.counters()[0].queued == 2


def test_correlation_ids_are_the_clients_or_fresh_uuids() -> None:
    logger = PayloadLogger(parse_payload_processors("http://h/"), source="s")
    assert logger.request("m", "client-id", IRIS) == "client-id"
    generated = {logger.request("m", "", IRIS) for _ in range(100)}
    assert len(generated) == 100 and all(len(cid) == 36 for cid in generated)
    assert len(logger.request("m", "x" * 300, IRIS) or "") == 36  # too long for a header: a uuid instead


def test_full_queues_drop_and_count_per_sink() -> None:
    logger = PayloadLogger(parse_payload_processors("http://a/ http://b/?modelId=m"), source="s", queue_size=3)
    for n in range(5):
        logger.request("m", f"r{n}", IRIS)
    for n in range(5):
        logger.request("other", f"o{n}", IRIS)
    a, b = logger.counters()
    assert (a.sink, a.queued, a.dropped) == ("http://a/", 3, 7)
    assert (b.sink, b.queued, b.dropped) == ("http://b/?modelId=m", 3, 2)
    assert a.queued_bytes == 3 * len(IRIS)


def test_the_byte_bound_drops_big_payloads() -> None:
    logger = PayloadLogger(parse_payload_processors("http://a/"), source="s", max_queued_bytes=1000)
    logger.request("m", "big", b"x" * 1001)
    logger.request("m", "small", IRIS)
    (a,) = logger.counters()
    assert (a.queued, a.dropped, a.queued_bytes) == (1, 1, len(IRIS))


def test_a_body_the_logger_cannot_use_is_counted_not_raised() -> None:
    logger = PayloadLogger(parse_payload_processors("http://a/"), source="s")
    assert logger.request("m", "r", object()) == "r"  # a caller's bug never fails the inference
    assert logger.counters()[0].failed == 1


async def test_events_after_stop_are_dropped() -> None:
    logger = PayloadLogger(parse_payload_processors("http://127.0.0.1:9/"), source="s", drain_s=0.1)
    logger.request("m", "queued", IRIS)  # never started: nothing sends it
    await logger.stop()
    logger.response("m", "late", _response())
    assert logger.counters()[0].dropped == 2
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("payloads ")]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        PayloadLogger([], source="s", queue_size=0)
    with pytest.raises(InvalidArgument, match="payload processor 'ftp://x/'"):
        PayloadLogger.from_setting("ftp://x/", source="s")
