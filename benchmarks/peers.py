"""Throughput and latency of the mesh against its peers, side by side in one run (issue 15).

    python benchmarks/peers.py [--seconds 15] [--quick] [--only mesh,kserve,...] [--c64]
                               [--estimator logistic|tree] [--json OUT]

Every server serves the same model (the example sklearn iris LogisticRegression, or with
``--estimator tree`` a DecisionTreeClassifier on the same data) on 127.0.0.1 and is started,
measured and stopped here, one at a time. The mesh predicts scikit-learn's linear models from their
coefficients (``runtime/builtin/sklearn_linear.py``); a tree goes through scikit-learn's ``predict``
in every server, so its ratios show the serving overhead alone:

    mlserver      MLServer 1.7.1 (its own venv, scripts/mlserver-venv.sh), parallel_workers 0
    mlserver-w    the same with one inference worker process (MLServer's default)
    kserve        KServe 0.21's ModelServer with a ``kserve.Model`` running the same joblib file
    mesh          ``kserve-mesh up`` (the built-in runtime in its process, the embedded default)
    mesh-grpcio   ``kserve-mesh up --grpc-server grpcio``: the same with grpcio's server on the gRPC
                  port instead of the mesh's own (``api/grpc_native.py``), for the side-by-side
    mesh-process  ``kserve-mesh up --runtime process`` (the runtime as a child process)
    mesh-workers  ``kserve-mesh up --workers 2``: etcd and two instances sharing the ports
                  (SO_REUSEPORT), each with the runtime in process and a copy of the model
    mesh-workers-nobatch  the same with adaptive batching off (``KSERVE_MESH_BATCH_MAX_SIZE=0``)

The mesh rows run with their defaults, adaptive batching included (concurrent requests of the
model stacked into one predict); ``--c64`` adds cells at 64 connections, for the batching target
(>= 3x the best peer's throughput at c=64, p99 <= 2x the unbatched p99).

Load comes from C load generators, never from Python: ``wrk`` for V2 REST (HTTP/1.1 keep-alive,
the JSON body) and ``h2load`` for V2 gRPC (HTTP/2, a pre-encoded ``ModelInferRequest`` in its
5-byte gRPC frame; every answer was checked once with a real client first, since h2load sees only
HTTP statuses). Each server gets four cells, closed loop: REST and gRPC at 1 and 16 connections,
``--seconds`` each. Server CPU is the user + system time of the server's whole process tree over a
cell, per request. Both tools are Debian packages (``wrk``, ``nghttp2-client``): installed with apt
when missing and this runs as root, else the script says what to install.

Printed: req/s, p50 and p99 per cell, CPU per request, and each mesh's ratio to the best peer, with
the targets of issue 15 (c=16: >= 2x the best peer on REST and gRPC; p50 at c=1 <= 0.5 ms; CPU per
request <= 0.35 ms; --runtime process: >= 1.5x and p50 <= 0.8 ms).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if importlib.util.find_spec("kserve_mesh") is None:  # run from a checkout without an install
    sys.path.insert(0, str(ROOT))

from latency import make_model
from procs import Processes, ServerProcess
from rich import box
from rich.console import Console
from rich.table import Table

MODEL = "sklearn-iris"
SERVERS = ("mlserver", "mlserver-w", "kserve", "mesh", "mesh-grpcio", "mesh-process", "mesh-workers", "mesh-workers-nobatch")
UNBATCHED = {"mesh-workers": "mesh-workers-nobatch"}  # a batched server -> its unbatched twin
PEERS = ("mlserver", "mlserver-w", "kserve")
CELLS = (("rest", 1), ("rest", 16), ("grpc", 1), ("grpc", 16))
CELLS_64 = (("rest", 64), ("grpc", 64))
TARGET_BATCH_X, TARGET_BATCH_P99_X = 3.0, 2.0  # c=64: x best peer's req/s; p99 / the unbatched p99
START_TIMEOUT_S = 180.0
TARGETS = {"mesh": (2.0, 0.5), "mesh-grpcio": (2.0, 0.5), "mesh-process": (1.5, 0.8), "mesh-workers": (2.0, 0.5),
           "mesh-workers-nobatch": (2.0, 0.5)}  # (x best peer at c=16, p50 ms at c=1)
TARGET_CPU_MS = 0.35

KSERVE_SERVER = '''
import sys
import uuid

import joblib
from kserve import Model, ModelServer
from kserve.protocol.infer_type import InferOutput, InferResponse


class Sklearn(Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.model = joblib.load(path)
        self.ready = True

    def predict(self, payload, headers=None):
        y = self.model.predict(payload.inputs[0].as_numpy())
        out = InferOutput(name="output-0", shape=list(y.shape), datatype="INT64")
        out.set_data_from_numpy(y, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or str(uuid.uuid4()))


if __name__ == "__main__":
    name, path, http_port, grpc_port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print("kserve starting", flush=True)
    ModelServer(http_port=http_port, grpc_port=grpc_port, workers=1, enable_latency_logging=False,
                access_log_format=None).start([Sklearn(name, path)])
'''


@dataclass
class Cell:
    server: str
    transport: str
    connections: int
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    cpu_s: float
    own_cpu_s: float = 0.0
    """The server's own process alone, without its children (a runtime child, workers)."""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_s / self.requests if self.requests else float("nan")

    @property
    def own_cpu_ms_per_request(self) -> float:
        return 1000 * self.own_cpu_s / self.requests if self.requests else float("nan")


# -- tools ---------------------------------------------------------------------------------------
def ensure_tools(console: Console) -> None:
    missing = [pkg for tool, pkg in (("wrk", "wrk"), ("h2load", "nghttp2-client")) if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit(f"the load generators are missing: install the Debian packages {' '.join(missing)}")
    console.print(f"installing {' '.join(missing)} with apt")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=False, env=env, capture_output=True)
    if any(shutil.which(t) is None for t in ("wrk", "h2load")):
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def own_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` alone, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (live ones), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        p = int(entry.name)
        children.setdefault(int(fields[1]), []).append(p)
        stats[p] = (int(fields[11]) + int(fields[12])) / ticks
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0.0)
        todo += children.get(p, [])
    return total


# -- servers ---------------------------------------------------------------------------------------
def _wait_http_ready(url: str, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer 200 within {timeout_s:g} s")


ESTIMATORS = ("logistic", "tree")


def as_tree(entry: dict[str, Any], path: Path) -> dict[str, Any]:
    """Replace the example LogisticRegression at ``path`` with a DecisionTreeClassifier on the same
    data, which no server can predict without scikit-learn's own ``predict``; the entry's expected
    outputs become the tree's."""
    import joblib
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_iris(return_X_y=True)
    tree = DecisionTreeClassifier(max_depth=4, random_state=0).fit(x, y)
    joblib.dump(tree, path)
    first = entry["request"]["inputs"][0]
    sample = np.asarray(first["data"], dtype=np.float64).reshape(first["shape"])
    out = entry["expected"]["outputs"][0]
    predicted = tree.predict(sample).astype(np.int64)
    return {**entry, "expected": {**entry["expected"],
                                  "outputs": [{**out, "shape": list(predicted.shape), "data": predicted.tolist()}]}}


def load_model(rest: str) -> None:
    """Load ``MODEL`` into the mesh instance at ``rest`` (V2 repository load: a copy there)."""
    req = urllib.request.Request(f"{rest}/v2/repository/models/{MODEL}/load", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=START_TIMEOUT_S) as resp:
        resp.read()


def start_server(name: str, procs: Processes, models: Path, work: Path) -> tuple[ServerProcess, str, str]:
    """Start ``name`` serving ``models/MODEL``; returns the process, its REST URL and gRPC address."""
    py = sys.executable
    quiet = {"KSERVE_MESH_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    if name.startswith("mesh-workers"):
        if name.endswith("-nobatch"):
            quiet["KSERVE_MESH_BATCH_MAX_SIZE"] = "0"
        rest_port, grpc_port = free_port(), free_port()
        cmd = [py, "-m", "kserve_mesh.cli", "up", "--models", str(models), "--workers", "2",
               "--rest-port", str(rest_port), "--grpc-port", str(grpc_port), "--metrics-port", "0"]
        proc = procs.server(name, cmd, r"kserve-mesh cluster ready: etcd=\S+ rest=(\S+) grpc=(\S+) (.*)",
                            work / f"{name}.log", quiet)
        m = proc.wait_ready(START_TIMEOUT_S)
        for peer in re.findall(r"peer=(\S+)", m.group(3)):  # a copy in each instance, as traffic would make
            load_model(peer)
        return proc, m.group(1), m.group(2)
    if name.startswith("mesh"):
        cmd = [py, "-m", "kserve_mesh.cli", "up", "--models", str(models), "--rest-port", "0", "--grpc-port", "0",
               "--metrics-port", "0", *(["--runtime", "process"] if name == "mesh-process" else []),
               *(["--grpc-server", "grpcio"] if name == "mesh-grpcio" else [])]
        proc = procs.server(name, cmd, r"kserve-mesh ready: rest=(\S+) grpc=(\S+) metrics", work / f"{name}.log",
                            quiet)
        m = proc.wait_ready(START_TIMEOUT_S)
        load_model(m.group(1))
        return proc, m.group(1), m.group(2)
    http_port, grpc_port = free_port(), free_port()
    if name == "kserve":
        script = work / "kserve_server.py"
        script.write_text(KSERVE_SERVER)
        proc = procs.server(name, [py, str(script), MODEL, str(models / MODEL / "model.joblib"), str(http_port),
                                   str(grpc_port)], r"kserve starting", work / f"{name}.log", quiet)
    else:
        from kserve_mesh.runtime.mlserver.config import find_venv
        from kserve_mesh.runtime.mlserver.model_settings import model_settings, server_settings, write_json

        venv = find_venv()
        folder = work / name
        repository = folder / "models"
        (repository / MODEL).mkdir(parents=True)
        write_json(folder / "settings.json", {**server_settings(
            http_port=http_port, grpc_port=grpc_port, parallel_workers=1 if name == "mlserver-w" else 0,
            max_message_bytes=16 << 20, repository=repository), "load_models_at_startup": True})
        write_json(repository / MODEL / "model-settings.json",
                   model_settings(MODEL, "sklearn", models / MODEL / "model.joblib"))
        proc = procs.server(name, [str(venv / "bin" / "mlserver"), "start", str(folder)], r"^$",
                            work / f"{name}.log", quiet)
    if name == "kserve":
        proc.wait_ready(START_TIMEOUT_S)
    rest = f"http://127.0.0.1:{http_port}"
    _wait_http_ready(f"{rest}/v2/models/{MODEL}/ready", START_TIMEOUT_S)
    return proc, rest, f"127.0.0.1:{grpc_port}"


def check_server(name: str, rest: str, grpc_address: str, bodies: dict[str, Path], expected: dict[str, Any]) -> None:
    """One request over each transport, its first output compared with the expected one (servers
    name their outputs differently), so no cell ever times a fast error."""
    import grpc
    import numpy as np

    from kserve_mesh.protocol import tensors, v2

    want = np.asarray(expected["outputs"][0]["data"], dtype=np.float64)
    with grpc.insecure_channel(grpc_address) as channel:
        raw = channel.unary_unary(v2.method("ModelInfer"))(bodies["raw"].read_bytes(), timeout=30)
    got_grpc = next(iter(tensors.decode_outputs(v2.ModelInferResponse.FromString(raw)).values()))
    req = urllib.request.Request(f"{rest}/v2/models/{MODEL}/infer", data=bodies["rest"].read_bytes(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        got_rest = json.loads(resp.read())["outputs"][0]["data"]
    for transport, got in (("gRPC", got_grpc), ("REST", got_rest)):
        if not np.allclose(np.asarray(got, dtype=np.float64).ravel(), want):
            raise SystemExit(f"{name} answered {transport} with {np.asarray(got).ravel().tolist()}, "
                             f"expected {want.tolist()}")


# -- load ------------------------------------------------------------------------------------------
def _ms(text: str) -> float:
    value, unit = float(re.match(r"[\d.]+", text).group()), re.sub(r"[\d.]+", "", text)  # type: ignore[union-attr]
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, body: Path, connections: int, seconds: float, work: Path) -> tuple[int, int, float, float]:
    script = work / "post.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*a")\nf:close()\n')
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    return requests, errors, p50, p99


def run_h2load(url: str, body: Path, connections: int, seconds: float, work: Path) -> tuple[int, int, float, float]:
    log = work / "h2load.log"
    log.unlink(missing_ok=True)
    out = subprocess.run(["h2load", "-t1", f"-c{connections}", "-m1", f"-D{seconds:g}", "-d", str(body),
                          "-H", "content-type: application/grpc", "-H", "te: trailers", f"--log-file={log}", url],
                         capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    times = sorted(int(line.split("\t")[2]) / 1000 for line in log.read_text().splitlines() if line.count("\t") >= 2)
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if m is None or not times:
        raise SystemExit(f"h2load said nothing usable:\n{out[-2000:]}")
    done, failed, errored = int(m.group(1)), int(m.group(3)), int(m.group(4))
    return done, failed + errored, times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))]


def measure(name: str, proc: ServerProcess, rest: str, grpc_address: str, bodies: dict[str, Path], seconds: float,
            work: Path, grid: tuple[tuple[str, int], ...] = CELLS) -> list[Cell]:
    cells = []
    urls = {"rest": f"{rest}/v2/models/{MODEL}/infer",
            "grpc": f"http://{grpc_address}/inference.GRPCInferenceService/ModelInfer"}
    runners = {"rest": run_wrk, "grpc": run_h2load}
    for transport, connections in ((t, 1) for t in ("rest", "grpc")):  # warm-up
        runners[transport](urls[transport], bodies[transport], connections, 1, work)
    for transport, connections in grid:
        cpu0, own0, t0 = tree_cpu_seconds(proc.pid()), own_cpu_seconds(proc.pid()), time.monotonic()
        requests, errors, p50, p99 = runners[transport](urls[transport], bodies[transport], connections, seconds,
                                                        work)
        took, cpu = time.monotonic() - t0, tree_cpu_seconds(proc.pid()) - cpu0
        own = own_cpu_seconds(proc.pid()) - own0
        cells.append(Cell(name, transport, connections, requests, min(took, seconds), errors, p50, p99, cpu, own))
    return cells


def encode_bodies(entry: dict[str, Any], work: Path) -> dict[str, Path]:
    from kserve_mesh.protocol import tensors

    arrays = {t["name"]: __import__("numpy").asarray(t["data"], dtype="float64").reshape(t["shape"])
              for t in entry["request"]["inputs"]}
    message = tensors.encode_request(MODEL, arrays).SerializeToString()
    (work / "body.grpc").write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
    (work / "body.json").write_text(json.dumps(entry["request"]))
    (work / "body.raw").write_bytes(message)
    return {"rest": work / "body.json", "grpc": work / "body.grpc", "raw": work / "body.raw"}


# -- report ----------------------------------------------------------------------------------------
def summarize(cells: list[Cell]) -> dict[str, Any]:
    by = {(c.server, c.transport, c.connections): c for c in cells}
    servers = sorted({c.server for c in cells}, key=SERVERS.index)
    peers = [s for s in servers if s in PEERS]
    out: dict[str, Any] = {}
    for server in servers:
        if server not in TARGETS or not peers:
            continue
        x_best, p50_max = TARGETS[server]
        row: dict[str, Any] = {}
        for transport in ("rest", "grpc"):
            best = max(by[(p, transport, 16)].rps for p in peers)
            ratio = by[(server, transport, 16)].rps / best if best else float("nan")
            row[f"{transport}_x_best_peer"] = round(ratio, 2)
            row[f"{transport}_x_ok"] = ratio >= x_best
            row[f"{transport}_p50_c1_ms"] = round(by[(server, transport, 1)].p50_ms, 3)
            row[f"{transport}_p50_ok"] = by[(server, transport, 1)].p50_ms <= p50_max
        cpu = statistics.mean(by[(server, t, 16)].cpu_ms_per_request for t in ("rest", "grpc"))
        row["cpu_ms_per_request_c16"] = round(cpu, 3)
        if server == "mesh":
            row["cpu_ok"] = cpu <= TARGET_CPU_MS
        if all((p, "rest", 64) in by for p in peers) and (server, "rest", 64) in by:
            twin = UNBATCHED.get(server)
            for transport in ("rest", "grpc"):
                best = max(by[(p, transport, 64)].rps for p in peers)
                ratio = by[(server, transport, 64)].rps / best if best else float("nan")
                row[f"{transport}_c64_x_best_peer"] = round(ratio, 2)
                row[f"{transport}_c64_x_ok"] = ratio >= TARGET_BATCH_X
                if twin is not None and (twin, transport, 64) in by:
                    p99_x = by[(server, transport, 64)].p99_ms / by[(twin, transport, 64)].p99_ms
                    row[f"{transport}_c64_p99_x_unbatched"] = round(p99_x, 2)
                    row[f"{transport}_c64_p99_ok"] = p99_x <= TARGET_BATCH_P99_X
        out[server] = row
    return out


def render(console: Console, cells: list[Cell], verdict: dict[str, Any]) -> None:
    table = Table(title=f"{MODEL}: req/s (p50 / p99 ms) per cell, server CPU ms per request", box=box.SIMPLE_HEAVY)
    table.add_column("server")
    grid = [cell for cell in CELLS + CELLS_64 if any((c.transport, c.connections) == cell for c in cells)]
    for transport, connections in grid:
        table.add_column(f"{transport.upper()} c={connections}", justify="right")
    table.add_column("CPU ms/req c=16", justify="right")
    by = {(c.server, c.transport, c.connections): c for c in cells}
    for server in sorted({c.server for c in cells}, key=SERVERS.index):
        row = [server]
        for transport, connections in grid:
            c = by[(server, transport, connections)]
            err = f" [red]{c.errors} err[/red]" if c.errors else ""
            row.append(f"{c.rps:,.0f} ({c.p50_ms:.2f} / {c.p99_ms:.2f}){err}")
        row.append(" / ".join(f"{by[(server, t, 16)].cpu_ms_per_request:.3f}" for t in ("rest", "grpc")))
        table.add_row(*row)
    console.print(table)
    for server, row in verdict.items():
        x_best, p50_max = TARGETS[server]
        marks = {k: "[green]ok[/green]" if v else "[red]missed[/red]" for k, v in row.items() if k.endswith("_ok")}
        console.print(f"{server}: REST {row['rest_x_best_peer']}x the best peer at c=16 {marks['rest_x_ok']} "
                      f"(target {x_best}x), gRPC {row['grpc_x_best_peer']}x {marks['grpc_x_ok']}; p50 at c=1 REST "
                      f"{row['rest_p50_c1_ms']} ms {marks['rest_p50_ok']}, gRPC {row['grpc_p50_c1_ms']} ms "
                      f"{marks['grpc_p50_ok']} (target {p50_max} ms); CPU {row['cpu_ms_per_request_c16']} ms/request"
                      + (f" {marks['cpu_ok']} (target {TARGET_CPU_MS} ms)" if "cpu_ok" in marks else ""))
        if "rest_c64_x_ok" in marks:
            p99 = "".join(f", {t} p99 {row[f'{t}_c64_p99_x_unbatched']}x unbatched {marks[f'{t}_c64_p99_ok']}"
                          for t in ("rest", "grpc") if f"{t}_c64_p99_ok" in marks)
            console.print(f"  c=64 (batching): REST {row['rest_c64_x_best_peer']}x the best peer {marks['rest_c64_x_ok']}, "
                          f"gRPC {row['grpc_c64_x_best_peer']}x {marks['grpc_c64_x_ok']} (target {TARGET_BATCH_X}x)"
                          + (f"{p99} (target {TARGET_BATCH_P99_X}x)" if p99 else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each cell (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="2-second cells (a smoke run)")
    parser.add_argument("--only", default=",".join(SERVERS), help="servers to run, comma separated")
    parser.add_argument("--json", type=Path, default=None, help="write the cells and the verdict here")
    parser.add_argument("--c64", action="store_true", help="also cells at 64 connections (the batching target)")
    parser.add_argument("--estimator", choices=ESTIMATORS, default="logistic",
                        help="the iris model every server runs: the example LogisticRegression (default; the "
                             "mesh predicts it from its coefficients) or a DecisionTreeClassifier (scikit-learn's "
                             "own predict everywhere, so the ratios show serving overhead alone)")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s) {', '.join(unknown)}; choose from {', '.join(SERVERS)}")
    seconds = 2.0 if args.quick else args.seconds
    console = Console() if sys.stdout.isatty() else Console(width=170)  # a log keeps the table whole
    ensure_tools(console)
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="kserve-mesh-peers-") as tmp, Processes() as procs:
        work = Path(tmp)
        models = work / "models"
        entry = make_model(MODEL, models)
        if args.estimator == "tree":
            entry = as_tree(entry, models / MODEL / "model.joblib")
        bodies = encode_bodies(entry, work)
        for name in sorted(only, key=SERVERS.index):
            console.print(f"[bold]{name}[/bold]: starting")
            proc, rest, grpc_address = start_server(name, procs, models, work)
            check_server(name, rest, grpc_address, bodies, entry["expected"])
            grid = CELLS + CELLS_64 if args.c64 else CELLS
            console.print(f"[bold]{name}[/bold]: answers checked; {len(grid)} cells of {seconds:g} s")
            cells += measure(name, proc, rest, grpc_address, bodies, seconds, work, grid)
            procs.stop_all()
    verdict = summarize(cells)
    render(console, cells, verdict)
    if args.json is not None:
        args.json.write_text(json.dumps({"model": MODEL, "estimator": args.estimator, "seconds": seconds, "cpus": os.cpu_count(),
                                         "cells": [{**asdict(c), "rps": c.rps} for c in cells],
                                         "verdict": verdict}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
