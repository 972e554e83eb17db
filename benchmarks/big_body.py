"""Does one big REST inference stall the other requests of an instance? Measured in one run.

    python benchmarks/big_body.py [--mib 16] [--big 3] [--json OUT]

Starts ``kserve-mesh up`` with the example models on 127.0.0.1 ephemeral ports, and a prober
process that sends small requests back to back (one ``sklearn-iris`` row, alternating V2 REST JSON
over a keep-alive connection and V2 gRPC ``ModelInfer``) and records each one's start and latency.
After a quiet baseline, this process sends ``--big`` JSON inference bodies of about ``--mib`` MiB
(``sklearn-iris``, FP64 ``[N, 4]``) one after the other. The report compares the small requests
that overlapped a big one with the baseline: count, p50, p99 and the worst latency, per transport.
A stall shows as a worst latency close to the big request's own duration.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"kserve-mesh ready: rest=(\S+) grpc=(\S+) metrics=(\S+)")
SMALL = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}


def big_body(mib: float) -> bytes:
    """An iris inference body of about ``mib`` MiB: rows of 4 numbers with 3 decimals."""
    rnd = random.Random(7)
    target = int(mib * (1 << 20))
    row = 4 * 6  # 6 bytes per number ("5.123,")
    rows = max(1, target // row)
    data = ",".join(f"{rnd.uniform(0, 8):.3f}" for _ in range(rows * 4))
    head = '{"inputs":[{"name":"input-0","shape":[' + str(rows) + ',4],"datatype":"FP64","data":['
    return (head + data + "]}]}").encode()


def _probe(rest: str, grpc_addr: str, stop: Any, out: Any) -> None:
    import grpc

    sys.path.insert(0, str(ROOT))
    from kserve_mesh.protocol import tensors, v2

    url = urlsplit(rest)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    body = json.dumps(SMALL).encode()
    import numpy as np

    req = tensors.encode_request("sklearn-iris", {"input-0": np.array([[5.1, 3.5, 1.4, 0.2]])})
    channel = grpc.insecure_channel(grpc_addr)
    call = channel.unary_unary(v2.method("ModelInfer"), request_serializer=v2.ModelInferRequest.SerializeToString,
                               response_deserializer=v2.ModelInferResponse.FromString)
    samples: list[tuple[str, float, float]] = []
    kind = 0
    while not stop.is_set():
        start = time.monotonic()
        if kind == 0:
            conn.request("POST", "/v2/models/sklearn-iris/infer", body, {"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            ok = resp.status == 200
            name = "rest"
        else:
            ok = call(req, timeout=120) is not None
            name = "grpc"
        if ok:
            samples.append((name, start, time.monotonic() - start))
        kind ^= 1
        time.sleep(0.002)
    channel.close()
    out.put(samples)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _stats(samples: list[tuple[str, float, float]], windows: list[tuple[float, float]]) -> dict[str, Any]:
    def inside(start: float, lat: float) -> bool:
        return any(start < b and start + lat > a for a, b in windows)

    out: dict[str, Any] = {}
    for kind in ("rest", "grpc"):
        base = [lat * 1000 for k, s, lat in samples if k == kind and s < windows[0][0] - 0.2]
        during = [lat * 1000 for k, s, lat in samples if k == kind and inside(s, lat)]
        out[kind] = {
            "baseline": {"n": len(base), "p50_ms": _pct(base, 0.5), "p99_ms": _pct(base, 0.99),
                         "max_ms": max(base, default=float("nan"))},
            "during_big": {"n": len(during), "p50_ms": _pct(during, 0.5), "p99_ms": _pct(during, 0.99),
                           "max_ms": max(during, default=float("nan"))},
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=float, default=16.0, help="size of each big body in MiB (default 16)")
    parser.add_argument("--big", type=int, default=3, help="how many big bodies to send (default 3)")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "examples"))
    import make_models

    with tempfile.TemporaryDirectory(prefix="big-body-") as tmp:
        models = Path(tmp) / "models"
        make_models.make_all(models, string_models=0)
        limit = str(int(args.mib * (1 << 20)) + (1 << 20))
        cmd = [sys.executable, "-m", "kserve_mesh.cli", "up", "--rest-port", "0", "--grpc-port", "0",
               "--metrics-port", "0", "--models", str(models), "--load"]
        env = {**os.environ, "KSERVE_MESH_REST_MAX_BODY_BYTES": limit}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=ROOT, start_new_session=True)
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 120
            match = None
            while match is None and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    raise SystemExit("the mesh exited before it was ready")
                match = READY.search(line)
            if match is None:
                raise SystemExit("the mesh was not ready in 120 s")
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
            rest, grpc_addr = match.group(1), match.group(2)
            body = big_body(args.mib)
            ctx = mp.get_context("spawn")
            stop, out = ctx.Event(), ctx.Queue()
            prober = ctx.Process(target=_probe, args=(rest, grpc_addr, stop, out), daemon=True)
            prober.start()
            time.sleep(4.0)  # warm-up and baseline
            url = urlsplit(rest)
            windows: list[tuple[float, float]] = []
            big_ms: list[float] = []
            for _ in range(args.big):
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
                start = time.monotonic()
                conn.request("POST", "/v2/models/sklearn-iris/infer", body, {"content-type": "application/json"})
                resp = conn.getresponse()
                answer = resp.read()
                end = time.monotonic()
                conn.close()
                if resp.status != 200:
                    raise SystemExit(f"the big request got {resp.status}: {answer[:300]!r}")
                windows.append((start, end))
                big_ms.append((end - start) * 1000)
                time.sleep(1.0)
            stop.set()
            samples = out.get(timeout=60)
            prober.join(10)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    result = {"body_bytes": len(body), "big_request_ms": big_ms, "small": _stats(samples, windows),
              "load_average": os.getloadavg()}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
