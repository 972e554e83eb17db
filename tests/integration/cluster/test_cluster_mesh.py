"""A mesh of three instances over a real etcd, real processes, loopback only (issue 3)."""

from __future__ import annotations

import random
import re
import signal
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cluster_support import Mesh, string_models, string_request

pytestmark = pytest.mark.integration


def _register(mesh: Mesh, model_id: str, path: Path, **extra: object) -> None:
    status, body = mesh.instances[0].call("PUT", f"/mesh/v1/models/{urllib.parse.quote(model_id)}",
                                          {"modelInfo": {"type": "string", "path": str(path / model_id)}, **extra})
    assert status == 200, body


def _holders(mesh: Mesh, model_id: str, timeout_s: float = 10.0) -> list[str]:
    """Where the copies of ``model_id`` are, once instance 0's view (kept by a watch) shows one."""
    deadline = time.monotonic() + timeout_s
    while True:
        holders = mesh.placements().get(model_id, [])
        if holders or time.monotonic() > deadline:
            return holders
        time.sleep(0.05)


def _traffic(mesh: Mesh, entry: int, models: list[str], stop: threading.Event, errors: list[str],
             served: list[int]) -> None:
    while not stop.is_set():
        for model_id in models:
            t0 = time.monotonic()
            status, body = mesh.infer(entry, model_id)
            if status != 200:
                errors.append(f"{model_id} via {entry}: {status} {body} after {time.monotonic() - t0:.2f}s")
            else:
                served[0] += 1
        time.sleep(0.005)


def test_any_instance_serves_from_the_copy_holder(mesh_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mesh = mesh_factory(3)
    ids = [f"m{i}" for i in range(6)]
    string_models(tmp_path, ids)
    for model_id in ids:
        _register(mesh, model_id, tmp_path)
    stop = threading.Event()
    watcher = mesh.watch_capacity(stop)
    for rnd in range(3):
        for i in range(3):
            for model_id in ids:
                status, body = mesh.infer(i, model_id)
                assert status == 200, body
                assert body["outputs"][0]["data"] == [f"{model_id}:" + "z" * 1000 + "x"]
                assert body["model_name"] == model_id
    stop.set()
    watcher.join(5)
    assert mesh.samples > 0 and not mesh.capacity_violations, mesh.capacity_violations[:3]
    placements = mesh.placements()
    # Requests through every instance were served by the one copy each model has: forwarded, not
    # loaded again on each instance.
    assert sorted(placements) == ids
    assert all(len(holders) == 1 for holders in placements.values()), placements
    # New copies went to the emptier instances: the models are spread over more than one instance.
    assert len({h[0] for h in placements.values()}) >= 2, placements


def test_copies_follow_the_request_rate(mesh_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ids = ["hot"] + [f"filler{i}" for i in range(12)]
    string_models(tmp_path, ids)
    size = 2048 + len("hot:") + 1000  # the built-in runtime's size of these string models
    mesh = mesh_factory(3, "--scaleup-rpm-threshold", "60", "--rate-check-s", "1", "--capacity-bytes", str(4 * size))
    for model_id in ids:
        _register(mesh, model_id, tmp_path)
    stop = threading.Event()
    watcher = mesh.watch_capacity(stop)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(mesh.placements().get("hot", [])) < 2:
            for i in range(3):
                assert mesh.infer(i, "hot")[0] == 200
        assert len(mesh.placements().get("hot", [])) >= 2, mesh.placements()
        # Idle now, and space gets short: the fillers fill every cache and the idle copies go.
        for rnd in range(3):
            for model_id in ids[1:]:
                status, body = mesh.infer(rnd % 3, model_id)
                assert status == 200, body
        assert len(mesh.placements().get("hot", [])) < 2, mesh.placements()
    finally:
        stop.set()
        watcher.join(5)
    assert mesh.samples >= 3 and not mesh.capacity_violations, (mesh.samples, mesh.capacity_violations[:3])


def test_kill_9_loses_no_request_that_could_go_elsewhere(mesh_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mesh = mesh_factory(3, "--rate-check-s", "1")
    ids = instance_ids = mesh.instance_ids()
    string_models(tmp_path, ["twice", "once"])
    _register(mesh, "twice", tmp_path, minCopies=2)
    _register(mesh, "once", tmp_path)
    # "twice" gets its two copies (min copies); "once" one copy.
    assert mesh.infer(0, "twice")[0] == 200 and mesh.infer(0, "once")[0] == 200
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(mesh.placements().get("twice", [])) < 2:
        time.sleep(0.1)
    placements = mesh.placements()
    assert len(placements["twice"]) == 2, placements
    # Kill an instance that holds a copy of "twice" (and, if possible, the only copy of "once"),
    # while traffic enters through a survivor.
    victim_id = placements["once"][0] if placements["once"][0] in placements["twice"] else placements["twice"][0]
    victim = instance_ids.index(victim_id)
    entry = next(i for i in range(3) if i != victim)
    stop = threading.Event()
    errors_twice: list[str] = []
    served = [0]
    watcher = mesh.watch_capacity(stop)
    with ThreadPoolExecutor(2) as pool:
        f1 = pool.submit(_traffic, mesh, entry, ["twice"], stop, errors_twice, served)
        time.sleep(0.5)
        mesh.instances[victim].proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        time.sleep(0.2)
        # "once": if its only copy died with the victim, a request reloads it elsewhere in time.
        t0 = time.monotonic()
        status, body = mesh.infer(entry, "once")
        once_latency = time.monotonic() - t0
        assert status == 200, body
        assert once_latency < 2.0 + 1.0, once_latency  # load time (tiny) + 2 s
        time.sleep(3)
        stop.set()
        f1.result(30)
    watcher.join(5)
    assert served[0] > 50
    assert not errors_twice, errors_twice[:3]
    assert mesh.instances[victim].proc.wait(10) == -signal.SIGKILL
    assert time.monotonic() - killed_at < 30
    assert not mesh.capacity_violations, mesh.capacity_violations[:3]
    del ids


def test_sigterm_drains_without_losing_requests(mesh_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mesh = mesh_factory(3)
    instance_ids = mesh.instance_ids()
    ids = [f"d{i}" for i in range(4)]
    string_models(tmp_path, ids)
    for model_id in ids:
        _register(mesh, model_id, tmp_path)
        assert mesh.infer(0, model_id)[0] == 200
    placements = mesh.placements()
    victim_id = max({h[0] for h in placements.values()}, key=lambda i: sum(h[0] == i for h in placements.values()))
    victim = instance_ids.index(victim_id)
    on_victim = [m for m, h in placements.items() if h == [victim_id]]
    assert on_victim
    entry = next(i for i in range(3) if i != victim)
    stop = threading.Event()
    errors: list[str] = []
    served = [0]
    watcher = mesh.watch_capacity(stop)
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(_traffic, mesh, entry, ids, stop, errors, served)
        time.sleep(0.5)
        assert mesh.instances[victim].stop() == 0
        # Its recently used models were loaded elsewhere before it exited.
        after = mesh.placements(entry)
        for model_id in on_victim:
            assert after.get(model_id) and victim_id not in after[model_id], after
        time.sleep(1.0)
        stop.set()
        fut.result(30)
    watcher.join(5)
    assert not mesh.capacity_violations, mesh.capacity_violations[:3]
    assert served[0] > 20
    assert not errors, errors[:3]


@pytest.mark.parametrize("policy", ["lru", "adaptive"])
def test_a_full_mesh_drains_in_moments_and_keeps_last_use_times(mesh_factory, tmp_path: Path, policy: str) -> None:  # type: ignore[no-untyped-def]
    """Both instances full; one leaves. Its recently used models are asked for on the other, which
    has no room for all of them and keeps what its policy values most (the adaptive policy evicted
    the arrivals at once): the drain still ends as soon as each was loaded there, not after its
    grace period, and each keeps the time it was last used, not the time it was re-homed."""
    ids = [f"f{i:02d}" for i in range(40)]
    string_models(tmp_path, ids, pad=20_000)
    mesh = mesh_factory(2, "--eviction-policy", policy, "--capacity-bytes", str(12 * 21_000))
    for model_id in ids:
        _register(mesh, model_id, tmp_path)
    rng = random.Random(7)
    weights = [1 / (r + 1) for r in range(len(ids))]
    for k in range(300):
        status, body = mesh.infer(k % 2, rng.choices(ids, weights)[0])
        assert status == 200, body
    traffic_end_ms = time.time() * 1000
    time.sleep(0.05)
    assert mesh.instances[0].stop() == 0
    log = mesh.instances[0].log()
    assert "shutdown grace period over" not in log, log[-2000:]
    rehomed = re.search(r"draining: (\d+) recently used models re-homed", log)
    assert rehomed and int(rehomed.group(1)) > 0, log[-2000:]
    for model_id in ids:
        status, body = mesh.instances[1].call("GET", f"/mesh/v1/models/{model_id}")
        assert status == 200 and body["lastUsedTime"] <= traffic_end_ms, body
        assert mesh.infer(1, model_id)[0] == 200


def test_etcd_outage_keeps_serving_and_resyncs(mesh_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mesh = mesh_factory(3)
    string_models(tmp_path, ["a", "b", "late"])
    for model_id in ("a", "b"):
        _register(mesh, model_id, tmp_path)
        for i in range(3):
            assert mesh.infer(i, model_id)[0] == 200
    stop = threading.Event()
    errors: list[str] = []
    served = [0]
    with ThreadPoolExecutor(3) as pool:
        futs = [pool.submit(_traffic, mesh, i, ["a", "b"], stop, errors, served) for i in range(3)]
        time.sleep(0.5)
        mesh.etcd.stop()
        t_down = time.monotonic()
        status, body = mesh.instances[1].call("PUT", "/mesh/v1/models/late",
                                              {"modelInfo": {"type": "string", "path": str(tmp_path / "late")}})
        assert status == 503, body
        assert "unavailable" in body["error"].lower() or "etcd" in body["error"].lower(), body
        time.sleep(max(0.0, 10 - (time.monotonic() - t_down)))
        mesh.etcd.start()
        time.sleep(2)
        stop.set()
        for f in futs:
            f.result(60)
    assert served[0] > 50
    assert not errors, errors[:3]
    # After etcd returns, registrations work again and every instance sees them.
    deadline = time.monotonic() + 30
    while True:
        status, body = mesh.instances[1].call("PUT", "/mesh/v1/models/late",
                                              {"modelInfo": {"type": "string", "path": str(tmp_path / "late")}})
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == 200, body
    for i in range(3):
        status, body = mesh.infer(i, "late")
        assert status == 200, body
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        views = [len(p.call("GET", "/mesh/v1/status")[1]["instances"]) for p in mesh.instances]
        if views == [3, 3, 3]:
            break
        time.sleep(0.2)
    assert views == [3, 3, 3]


def test_forwarded_requests_keep_every_protocol_feature(mesh_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A request entering an instance without the model reaches the holder intact: V2 REST JSON and
    the binary tensor extension (forwarded as raw bytes over HTTP), V2 gRPC (forwarded as gRPC), and a
    bad request comes back as the holder's clear 400."""
    import grpc
    import numpy as np
    import tritonclient.http as th

    from kserve_mesh.protocol import v2

    mesh = mesh_factory(2)
    string_models(tmp_path, ["fw"])
    _register(mesh, "fw", tmp_path)
    status, body = mesh.infer(0, "fw")
    assert status == 200, body
    (holder,) = _holders(mesh, "fw")
    holder_index = mesh.instance_ids().index(holder)
    other = mesh.instances[1 - holder_index]
    expected = "fw:" + "z" * 1000 + "x"

    status, body = other.call("POST", "/v2/models/fw/infer", string_request())
    assert status == 200 and body["outputs"][0]["data"] == [expected] and body["model_name"] == "fw", body

    client = th.InferenceServerClient(other.rest.removeprefix("http://"))
    try:
        inp = th.InferInput("input-0", [1], "BYTES")
        inp.set_data_from_numpy(np.array([b"x"], dtype=np.object_), binary_data=True)
        result = client.infer("fw", [inp], outputs=[th.InferRequestedOutput("output-0", binary_data=True)])
        assert result.as_numpy("output-0").tolist() == [expected.encode()]
    finally:
        client.close()

    # V2 gRPC (kserve's generated messages; tritonclient.grpc's copy of the same protos cannot be
    # loaded next to them in one process).
    with grpc.insecure_channel(other.grpc) as channel:
        infer = channel.unary_unary(v2.method("ModelInfer"), request_serializer=v2.ModelInferRequest.SerializeToString,
                                    response_deserializer=v2.ModelInferResponse.FromString)
        req = v2.ModelInferRequest(model_name="fw")
        tensor = req.inputs.add(name="input-0", datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(b"x")
        resp = infer(req, timeout=30)
        assert resp.model_name == "fw" and list(resp.outputs[0].contents.bytes_contents) == [expected.encode()]

    status, body = other.call("POST", "/v2/models/fw/infer", b'{"inputs": [{"name": "input-0"')
    assert status == 400 and "JSON" in body["error"] and body["type"] == "InvalidArgument", body
    status, body = other.call("POST", "/v2/models/fw/infer", {"inputs": [{"name": "input-0", "shape": [1]}]})
    assert status == 400 and "input-0" in body["error"], body
    # Everything above was served by the one copy: forwarded, not loaded on the entering instance.
    assert mesh.placements()["fw"] == [holder]

    # A model id that cannot travel in an HTTP header is forwarded over gRPC instead.
    odd = "fw-é"
    string_models(tmp_path, [odd])
    _register(mesh, odd, tmp_path)
    quoted = urllib.parse.quote(odd)
    status, body = mesh.instances[0].call("POST", f"/v2/models/{quoted}/infer", string_request())
    assert status == 200, body
    (odd_holder,) = _holders(mesh, odd)
    odd_other = mesh.instances[1 - mesh.instance_ids().index(odd_holder)]
    status, body = odd_other.call("POST", f"/v2/models/{quoted}/infer", string_request())
    assert status == 200 and body["model_name"] == odd, body
    assert mesh.placements()[odd] == [odd_holder]

    # The internal forwarding route refuses what no instance would send.
    status, body = other.call("POST", "/mesh/v1/forward/infer", b"\x01\x02")
    assert status == 400 and "mm-forwarded" in body["error"], body
