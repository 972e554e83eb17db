"""Models that stream, through the mesh (issue 11, item 5): REST ``generate_stream`` (server-sent
events, answers as they come, forwarded to the instance holding the model), ``generate``, Triton's
``ModelStreamInfer`` with several answers per request (tritonclient), and cancellation: a client that
goes away closes the model's generator. Two real instances over a real etcd, the built-in runtime in
each, a custom Python model that streams (``kserve_mesh.model.Model.predict_stream``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc_clients
import httpx
import pytest
from cluster_support import string_models, string_request
from etcd_fixture import start_etcd
from mesh_process import MeshProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

HERE = Path(__file__).resolve().parent

STREAMER = '''
import time
from pathlib import Path

import numpy as np

from kserve_mesh.model import Model


class Streamer(Model):
    """Answers "token-0", "token-1", ... one at a time, `delay` seconds apart."""

    def predict(self, inputs):
        return {"text_output": np.array(["all at once"])}

    def predict_stream(self, inputs):
        count = int(inputs["count"].ravel()[0])
        delay = float(inputs["delay"].ravel()[0])
        marks = Path(inputs["marks"].ravel()[0].decode()) if "marks" in inputs else None
        sent = 0
        try:
            for i in range(count):
                if i == 2 and count == 3 and delay < 0:
                    raise RuntimeError("broke after two tokens")
                yield {"text_output": np.array([f"token-{i}"])}
                sent += 1
                time.sleep(abs(delay))
        finally:
            if marks is not None:
                marks.write_text(f"closed after {sent}")
'''


@dataclass
class Meshes:
    i0: MeshProcess
    i1: MeshProcess
    models: Path


@pytest.fixture(scope="module")
def meshes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Meshes]:
    root = tmp_path_factory.mktemp("generate")
    models = string_models(root / "models", ["s1"])
    (models / "streamer").mkdir()
    (models / "streamer" / "model.py").write_text(STREAMER)
    etcd = start_etcd()
    common = ("--etcd-endpoints", etcd.client_url, "--allow-local-path", str(models), "--allow-local-path",
              str(root), "--shutdown-grace-s", "1")
    started: list[MeshProcess] = []
    try:
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(MeshProcess.start, *common, "--instance-id", f"i{n}", command="instance", timeout=60)
                       for n in range(2)]
        errors = [f.exception() for f in futures if f.exception() is not None]
        started += [f.result() for f in futures if f.exception() is None]
        if errors:
            raise errors[0]  # type: ignore[misc]
        i0, i1 = started
        for model_id, kind in (("streamer", "python"), ("s1", "string")):
            status, body = i0.call("PUT", f"/mesh/v1/models/{model_id}",
                                   {"modelInfo": {"type": kind, "path": str(models / model_id)}})
            assert status == 200, body
        deadline = time.monotonic() + 20
        while not all(len(p.call("GET", "/mesh/v1/status")[1]["instances"]) == 2 for p in (i0, i1)) \
                or len(i1.call("GET", "/mesh/v1/models")[1]["models"]) < 2:
            assert time.monotonic() < deadline, "the instances did not see each other and the models"
            time.sleep(0.05)
        status, body = i1.call("POST", "/v2/repository/models/streamer/load", {}, timeout=60)  # held by i1
        assert status == 200, body
        while "i1" not in i0.call("GET", "/mesh/v1/status")[1]["placements"].get("streamer", []):
            assert time.monotonic() < deadline + 30, "i0 never saw the copy on i1"
            time.sleep(0.05)
        yield Meshes(i0, i1, models)
    finally:
        for proc in started:
            proc.stop()
        etcd.close()


def _events(url: str, doc: dict, *, first_only: bool = False) -> tuple[list[dict], list[float]]:
    """The SSE events of a generate_stream call and when each arrived (seconds after sending)."""
    events, times = [], []
    start = time.monotonic()
    with httpx.stream("POST", url, json=doc, timeout=60) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: "):]))
                times.append(time.monotonic() - start)
                if first_only:
                    break
    return events, times


def test_generate_stream_sends_each_answer_as_it_comes_from_the_holder(meshes: Meshes) -> None:
    url = f"{meshes.i0.rest}/v2/models/streamer/generate_stream"  # i0 holds no copy: forwarded to i1
    events, times = _events(url, {"count": 3, "delay": 0.4})
    assert [e["text_output"] for e in events] == ["token-0", "token-1", "token-2"]
    assert {e["model_name"] for e in events} == {"streamer"}
    assert times[0] < times[-1] - 0.5, times  # the first answer came while the model still worked
    assert meshes.i0.call("GET", "/mesh/v1/status")[1]["placements"]["streamer"] == ["i1"]
    # generate: one inference (predict)
    status, body = meshes.i0.call("POST", "/v2/models/streamer/generate", {"count": 3, "delay": 0})
    assert status == 200 and body["text_output"] == "all at once", body
    # a model that does not stream: one event, and generate as usual
    events, _ = _events(f"{meshes.i0.rest}/v2/models/s1/generate_stream", {"input-0": "x"})
    assert len(events) == 1 and events[0]["output-0"] == "s1:" + "z" * 1000 + "x"


def test_errors_before_and_during_a_stream(meshes: Meshes) -> None:
    with httpx.Client(timeout=30) as client:
        missing = client.post(f"{meshes.i0.rest}/v2/models/ghost/generate_stream", json={"x": 1})
        assert missing.status_code == 404 and "ghost" in missing.json()["error"]
        bad = client.post(f"{meshes.i0.rest}/v2/models/streamer/generate_stream", content=b"{not json")
        assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]
        ragged = client.post(f"{meshes.i0.rest}/v2/models/streamer/generate_stream", json={"x": [[1], [1, 2]]})
        assert ragged.status_code == 400 and "'x'" in ragged.json()["error"]
        empty = client.post(f"{meshes.i0.rest}/v2/models/streamer/generate_stream", json={"parameters": {}})
        assert empty.status_code == 400 and "names no input" in empty.json()["error"]
    # the model fails after two answers: they arrive, then an error event ends the stream
    events, _ = _events(f"{meshes.i0.rest}/v2/models/streamer/generate_stream", {"count": 3, "delay": -0.01})
    assert [e.get("text_output") for e in events[:2]] == ["token-0", "token-1"]
    assert len(events) == 3 and "failed" in events[2]["error"] and "streamer" in events[2]["error"]


def test_a_client_that_goes_away_closes_the_models_generator(meshes: Meshes, tmp_path: Path) -> None:
    marks = tmp_path / "closed.txt"
    url = f"{meshes.i0.rest}/v2/models/streamer/generate_stream"
    events, _ = _events(url, {"count": 200, "delay": 0.1, "marks": str(marks)}, first_only=True)
    assert events[0]["text_output"] == "token-0"
    deadline = time.monotonic() + 15
    while not marks.exists():
        assert time.monotonic() < deadline, "the model's generator was never closed"
        time.sleep(0.05)
    sent = int(marks.read_text().split()[-1])
    assert sent < 200, marks.read_text()  # stopped early, not run to its end


def test_tritonclient_stream_gets_every_answer(meshes: Meshes, tmp_path: Path) -> None:
    inputs = [{"name": "count", "shape": [1], "datatype": "INT64", "data": [3]},
              {"name": "delay", "shape": [1], "datatype": "FP64", "data": [0.05]}]
    spec = {"requests": [{"model": "streamer", "id": "t1", "request": {"inputs": inputs}},
                         {"model": "s1", "id": "t2", "request": string_request()}], "answers": 4}
    result = grpc_clients.run("triton-stream", meshes.i0.grpc, spec, tmp_path)
    assert "error" not in result, result
    answers = result["answers"]
    assert [a["text_output"] for a in answers[:3]] == [["token-0"], ["token-1"], ["token-2"]]
    assert {a["id"] for a in answers[:3]} == {"t1"}
    assert answers[3]["id"] == "t2" and answers[3]["output-0"] == ["s1:" + "z" * 1000 + "x"]


def test_a_runtime_process_streams_over_its_grpc_port(meshes: Meshes, tmp_path: Path) -> None:
    """--runtime process: the mesh reads the runtime child's ModelStreamInfer; closing the SSE
    stream cancels that call and closes the model's generator in the child."""
    proc = MeshProcess.start("--runtime", "process", "--models", str(meshes.models), timeout=90)
    try:
        url = f"{proc.rest}/v2/models/streamer/generate_stream"
        events, times = _events(url, {"count": 3, "delay": 0.4})
        assert [e["text_output"] for e in events] == ["token-0", "token-1", "token-2"]
        assert times[0] < times[-1] - 0.5, times
        marks = tmp_path / "closed.txt"
        _events(url, {"count": 200, "delay": 0.1, "marks": str(marks)}, first_only=True)
        deadline = time.monotonic() + 15
        while not marks.exists():
            assert time.monotonic() < deadline, "the model's generator in the runtime child was never closed"
            time.sleep(0.05)
        assert int(marks.read_text().split()[-1]) < 200
    finally:
        proc.stop()
