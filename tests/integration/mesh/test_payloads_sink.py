"""Payload logging into a real HTTP sink process (tests/support/payload_sink.py): what arrives, and
what a stalled, failing or dead sink costs the request path (nothing but counted drops)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from cloudevents.http import from_http
from payload_sink import SinkProcess
from pki import make_pki

from kserve_mesh.mesh.payloads import PayloadLogger, SinkCounters
from kserve_mesh.protocol import v2

pytestmark = pytest.mark.integration

REQUIRED = ("specversion", "id", "source", "type", "time", "inferenceservicename", "namespace", "component",
            "endpoint", "modelid")
FAST = {"send_timeout_s": 0.3, "retry_backoff_s": 0.01, "failure_pause_s": 0.05, "drain_s": 0.5}


def _rest_body(n: int) -> bytes:
    return json.dumps({"id": f"rest-{n}", "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                                                      "data": [5.1, 3.5, 1.4, n]}]}).encode()


def _grpc_pair(n: int) -> tuple[object, object]:
    request = v2.ModelInferRequest(model_name="iris", id="" if n % 2 else f"grpc-{n}")
    request.inputs.add(name="input-0", datatype="FP32", shape=[2]).contents.fp32_contents.extend([1.0, float(n)])
    response = v2.ModelInferResponse(model_name="iris", id=request.id)
    response.outputs.add(name="predict", datatype="INT64", shape=[1]).contents.int64_contents.append(n)
    return request, response


def _events(records: list[dict]) -> list:
    return [from_http(r["headers"], base64.b64decode(r["body_b64"])) for r in records]


def _counters(logger: PayloadLogger) -> SinkCounters:
    (counters,) = logger.counters()
    return counters


async def _until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SinkProcess]:
    proc = SinkProcess(tmp_path / "sink.jsonl")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def started() -> AsyncIterator[list[PayloadLogger]]:
    """Loggers a test starts; stopped (bounded) whatever happens."""
    loggers: list[PayloadLogger] = []
    try:
        yield loggers
    finally:
        for logger in loggers:
            await asyncio.wait_for(logger.stop(), 5)


def _start(started: list[PayloadLogger], processors: str, **options: object) -> PayloadLogger:
    logger = PayloadLogger.from_setting(processors, source="kserve-mesh/test-1", namespace="ns", **options)
    logger.start()
    started.append(logger)
    return logger


async def test_every_request_and_response_arrives_once_as_a_valid_cloudevent(
        sink: SinkProcess, started: list[PayloadLogger]) -> None:
    logger = _start(started, sink.url())
    pairs = 150
    ids = []
    for n in range(pairs):
        if n % 3:
            request, response = _grpc_pair(n)
            cid = logger.request("iris__isvc-1", request.id, request, vmodel_id="iris")
            logger.response("iris__isvc-1", cid, response, vmodel_id="iris")
        else:
            cid = logger.request("iris__isvc-1", f"rest-{n}", _rest_body(n), vmodel_id="iris")
            logger.response("iris__isvc-1", cid, b'{"model_name":"iris","id":"rest-%d","outputs":[]}' % n,
                            vmodel_id="iris")
        ids.append(cid)
        if n % 10 == 0:
            await asyncio.sleep(0)  # requests arrive over time
    await _until(lambda: _counters(logger).sent == 2 * pairs)
    await asyncio.sleep(0.2)  # anything extra would show up now
    records = sink.records()
    assert len(records) == 2 * pairs
    events = _events(records)
    for event in events:
        for attribute in REQUIRED:
            assert event.get(attribute), (attribute, event)
        assert event["specversion"] == "1.0" and event["source"] == "kserve-mesh/test-1"
        assert (event["inferenceservicename"], event["modelid"], event["namespace"]) == ("iris", "iris__isvc-1", "ns")
        assert event["datacontenttype"] == "application/json"
    kinds = Counter((event["id"], event["type"].rpartition(".")[2]) for event in events)
    assert set(kinds.values()) == {1}  # each once
    assert {cid for cid, _ in kinds} == set(ids) and len(set(ids)) == pairs
    assert Counter(kind for _, kind in kinds) == {"request": pairs, "response": pairs}
    by_id = {(e["id"], e["type"].rpartition(".")[2]): e.data for e in events}
    assert by_id[("rest-3", "request")]["inputs"][0]["data"] == [5.1, 3.5, 1.4, 3]  # REST bytes as they came
    assert by_id[("grpc-2", "request")]["inputs"][0]["data"] == [1.0, 2.0]  # gRPC rendered to V2 JSON
    assert by_id[("grpc-2", "response")]["outputs"][0]["data"] == [2]
    assert _counters(logger) == SinkCounters(sink.url(), 2 * pairs, 0, 0, 0, 0, 0)
    headers = records[0]["headers"]
    assert headers["host"] == f"127.0.0.1:{sink.port}" and records[0]["path"] == "/events"
    assert {name for name in headers if not name.startswith("ce-")} == {"host", "content-length", "content-type"}


async def test_a_large_grpc_message_is_rendered_off_the_loop_and_arrives_whole(
        sink: SinkProcess, started: list[PayloadLogger]) -> None:
    logger = _start(started, sink.url())
    request = v2.ModelInferRequest(model_name="big", id="big-1")
    request.inputs.add(name="x", datatype="FP32", shape=[200_000]).contents.fp32_contents.extend(range(200_000))
    lags: list[float] = []

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(100):
            before = loop.time()
            await asyncio.sleep(0.002)
            lags.append(loop.time() - before - 0.002)

    tick = asyncio.create_task(ticker())
    logger.request("big", request.id, request)
    await _until(lambda: _counters(logger).sent == 1)
    await tick
    assert max(lags) < 0.25, max(lags)  # the loop went on ticking meanwhile
    (event,) = _events(sink.records())
    assert event.data["inputs"][0]["data"][-1] == 199_999.0 and len(event.data["inputs"][0]["data"]) == 200_000


async def test_a_model_filter_sends_only_that_models_payloads(
        tmp_path: Path, sink: SinkProcess, started: list[PayloadLogger]) -> None:
    every = SinkProcess(tmp_path / "every.jsonl")
    try:
        logger = _start(started, f"{every.url()} {sink.url('/iris')}?modelId=iris")
        for model, vmodel in (("iris", ""), ("other", ""), ("iris__isvc-9", "iris"), ("other", "not-iris")):
            cid = logger.request(model, "", b"{}", vmodel_id=vmodel)
            logger.response(model, cid, b"{}", vmodel_id=vmodel)
        await _until(lambda: sum(c.sent for c in logger.counters()) == 8 + 4)
        await asyncio.sleep(0.1)
        assert len(every.records()) == 8
        iris = _events(sink.records())
        assert sorted(e["modelid"] for e in iris) == ["iris", "iris", "iris__isvc-9", "iris__isvc-9"]
        assert {r["path"] for r in sink.records()} == {"/iris"}  # the filter is not part of the URL posted to
    finally:
        every.stop()


async def test_a_stalled_sink_costs_the_request_path_nothing_and_drops_are_counted(
        tmp_path: Path, started: list[PayloadLogger]) -> None:
    stalled = SinkProcess(tmp_path / "stalled.jsonl", mode="stall")
    try:
        logger = _start(started, stalled.url(), queue_size=100, **FAST)
        lags: list[float] = []

        async def ticker() -> None:  # what the inferences sharing the loop would feel
            loop = asyncio.get_running_loop()
            while True:
                before = loop.time()
                await asyncio.sleep(0.005)
                lags.append(loop.time() - before - 0.005)

        tick = asyncio.create_task(ticker())
        try:
            calls = 10_000
            spent = 0.0
            for n in range(calls):
                began = time.perf_counter()
                cid = logger.request("m", "", b'{"inputs":[]}')
                logger.response("m", cid, b'{"outputs":[]}')
                spent += time.perf_counter() - began
                if n % 50 == 0:
                    await asyncio.sleep(0.001)  # requests arrive over time: the workers get the loop
        finally:
            tick.cancel()
            await asyncio.gather(tick, return_exceptions=True)
        counters = _counters(logger)
        assert spent / calls < 200e-6, f"{spent / calls * 1e6:.1f} us per request+response"  # ~10 us measured
        assert counters.sent == 0
        # all but a full queue: dropped, or failed when a pipelined send to the stalled sink timed out
        assert counters.dropped + counters.failed >= 2 * calls - 100
        assert counters.dropped + counters.failed + counters.queued + counters.in_flight == 2 * calls
        assert max(lags) < 0.25, max(lags)
        began = time.perf_counter()
        await logger.stop()  # bounded although every worker is stuck in a send
        assert time.perf_counter() - began < FAST["drain_s"] + 1.0
        after = _counters(logger)
        assert after.queued == after.in_flight == 0 and after.dropped + after.failed == 2 * calls
    finally:
        stalled.stop()


async def test_a_send_that_times_out_is_never_sent_again(tmp_path: Path, started: list[PayloadLogger]) -> None:
    stalled = SinkProcess(tmp_path / "stalled.jsonl", mode="stall")
    try:
        logger = _start(started, stalled.url(), concurrency=1, **FAST)
        logger.request("m", "only-once", b"{}")
        await _until(lambda: _counters(logger).failed == 1)
        await asyncio.sleep(0.3)
        assert [r["headers"]["ce-id"] for r in stalled.records()] == ["only-once"]
    finally:
        stalled.stop()


async def test_errors_are_retried_a_bounded_number_of_times_and_the_sink_recovers(
        tmp_path: Path, started: list[PayloadLogger]) -> None:
    failing = SinkProcess(tmp_path / "failing.jsonl", mode="500")
    try:
        logger = _start(started, failing.url(), concurrency=1, attempts=3, **FAST)
        logger.request("m", "e-1", b"{}")
        await _until(lambda: _counters(logger).failed == 1)
        assert [r["headers"]["ce-id"] for r in failing.records()] == ["e-1"] * 3
        failing.set_mode("ok")
        logger.request("m", "e-2", b"{}")
        await _until(lambda: _counters(logger).sent == 1)
        assert [r["headers"]["ce-id"] for r in failing.records()] == ["e-1"] * 3 + ["e-2"]
    finally:
        failing.stop()


async def test_a_failed_burst_keeps_its_other_events_for_later(tmp_path: Path, started: list[PayloadLogger]) -> None:
    failing = SinkProcess(tmp_path / "failing.jsonl", mode="500")
    try:
        logger = _start(started, failing.url(), concurrency=1, attempts=1,
                        **{**FAST, "failure_pause_s": 1.0})
        for n in range(10):
            logger.request("m", f"b-{n}", b"{}")
        await _until(lambda: _counters(logger).failed == 1)
        assert _counters(logger).queued == 9  # the rest of the burst, queued again during the pause
        failing.set_mode("ok")
        await _until(lambda: _counters(logger).sent == 9)
        taken = [r["headers"]["ce-id"] for r in failing.records() if r["mode"] == "ok"]
        assert taken == [f"b-{n}" for n in range(1, 10)]  # in order, each once
    finally:
        failing.stop()


async def test_a_dead_sink_is_counted_and_never_shows_its_credentials(
        tmp_path: Path, started: list[PayloadLogger], caplog: pytest.LogCaptureFixture) -> None:
    gone = SinkProcess(tmp_path / "gone.jsonl")
    url = gone.url(userinfo="bob:hunter2-s3cret")
    gone.stop()  # nothing listens on its port any more
    caplog.set_level(logging.INFO, logger="kserve_mesh")
    logger = _start(started, url, queue_size=10, **FAST)
    began = time.perf_counter()
    for _ in range(1000):
        logger.request("m", "", b"{}")
    assert time.perf_counter() - began < 0.5
    await _until(lambda: _counters(logger).failed >= 2)
    counters = _counters(logger)
    assert counters.sent == 0 and counters.dropped >= 1000 - 10 - 4
    await logger.stop()
    assert "hunter2" not in caplog.text and "bob" not in caplog.text
    assert "***@127.0.0.1" in caplog.text  # the sink is named, without its credentials
    assert "bob" not in counters.sink


async def test_https_sinks_are_verified_with_the_system_cas_and_get_basic_auth(
        tmp_path: Path, started: list[PayloadLogger], monkeypatch: pytest.MonkeyPatch) -> None:
    pki = make_pki(tmp_path / "pki")
    secure = SinkProcess(tmp_path / "secure.jsonl", cert=pki.cert, key=pki.key)
    try:
        untrusted = _start(started, secure.url(), attempts=1, **FAST)
        untrusted.request("m", "not-trusted", b"{}")
        await _until(lambda: _counters(untrusted).failed == 1)  # the test CA is no system CA
        monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_pem))  # ... until the system bundle says so
        logger = _start(started, secure.url(userinfo="alice:pa%3Ass"), **FAST)
        cid = logger.request("m", "", b'{"inputs":[]}')
        logger.response("m", cid, b'{"outputs":[]}')
        await _until(lambda: _counters(logger).sent == 2)
        records = secure.records()
        assert [r["headers"]["ce-id"] for r in records] == [cid, cid]
        assert {r["headers"]["authorization"] for r in records} == {
            "Basic " + base64.b64encode(b"alice:pa:ss").decode()}
        assert _counters(logger).sink == secure.url(userinfo="***")
    finally:
        secure.stop()
