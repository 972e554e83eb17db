#!/usr/bin/env python3
"""LRU and the adaptive eviction policy side by side on live meshes, replaying the same traces.

For each topology (``single``: one instance; ``etcd``: two instances over a real etcd) and each
trace (``zipf``: Zipf 1.0; ``shift``: Zipf 1.0 whose hot set is replaced by cold models every
fifth of the trace), two meshes run at once, one per policy (``kserve-mesh instance
--eviction-policy lru|adaptive``, each instance with its own runtime process, each mesh its own
etcd), and the benchmark sends both the same requests, in alternating chunks so that both see the
same machine. Models: ``--models`` (2,000) ``string`` models of lognormal sizes (median 16 kB)
whose loads take a lognormal time (median 40 ms, 5-400 ms: ``cache_runtime.py`` delays each load);
each instance has room for ``--room`` (5 %) of their bytes. Requests go round robin to a mesh's
instances over keep-alive HTTP/1.1 (V2 REST infer), ``--clients`` (4) at a time; every answer must be
a 200 naming its model.

Reported per topology, trace and policy: hit ratio (1 - loads / requests), loads, the time spent
loading, bytes loaded (the instances' ``modelmesh_loadmodel_milliseconds_count`` and ``_sum``, and
``modelmesh_loaded_model_size_bytes_sum``: the adaptive policy weighs load time, so it may load more
often and wait less), p50/p99 latency, failed requests, and the largest ``used / capacity`` seen: every
``--observe-every`` requests (and at the end) each instance's metrics are read and
``modelmesh_instance_used_bytes <= modelmesh_instance_capacity_bytes`` is checked. Then each
instance in turn gets SIGTERM, and the seconds to its exit are reported: in a mesh of two the first
drains (re-homes its recently used models into the other). ``--quick``: one instance, 150 models,
300 requests per trace, delays x 0.25 (a smoke test). ``--json FILE`` writes everything;
``--workdir DIR`` keeps the models and every process's log there. Exit status 1 when a request
failed, capacity was exceeded or an instance had to be killed, 2 on bad options.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import random
import re
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from procs import Processes, ProcessFailed, ServerProcess

from kserve_mesh.store.etcd_server import EtcdServer

READY = r"kserve-mesh ready: rest=(\S+) grpc=(\S+) metrics=(\S+)"
RUNTIME_READY = r"runtime listening on (\S+)"
START_TIMEOUT_S = 120.0
CALL_TIMEOUT_S = 60.0
POLICIES = ("lru", "adaptive")
OVERHEAD = 2048  # a string model's size beyond its text (StringModel.OVERHEAD_BYTES)


# -- workload --------------------------------------------------------------------------------------

def model_id(i: int) -> str:
    return f"c{i:05d}"


def make_models(folder: Path, m: int, seed: int, delay_scale: float = 1.0) -> tuple[list[int], dict[str, float]]:
    """``m`` string models of lognormal sizes; returns their sizes (bytes, as the runtime reports
    them) and load delays (ms, lognormal, independent of size, times ``delay_scale``)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sizes, delays = [], {}
    for i in range(m):
        text = max(64, round(16_000 * math.exp(rng.gauss(0, 1.0))))
        body = (model_id(i) + ":").encode()
        (folder / f"{model_id(i)}.string").write_bytes(body + b"x" * (text - len(body)))
        sizes.append(OVERHEAD + text)
        delays[model_id(i)] = delay_scale * min(400.0, max(5.0, 40.0 * math.exp(rng.gauss(0, 0.8))))
    return sizes, delays


def zipf_ranks(m: int, n: int, rng: random.Random) -> list[int]:
    weights = [1.0 / (r + 1) for r in range(m)]
    return rng.choices(range(m), weights=weights, k=n)


def make_trace(kind: str, m: int, n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    perm = list(range(m))
    rng.shuffle(perm)
    ranks = zipf_ranks(m, n, rng)
    if kind == "zipf":
        return [perm[r] for r in ranks]
    out: list[int] = []
    step = max(1, n // 5)
    for start in range(0, n, step):  # every fifth: the top tenth swaps with random (mostly cold) models
        out += [perm[r] for r in ranks[start:start + step]]
        for a in range(max(1, m // 10)):
            b = rng.randrange(m)
            perm[a], perm[b] = perm[b], perm[a]
    return out


# -- meshes ----------------------------------------------------------------------------------------

@dataclass
class Mesh:
    policy: str
    rests: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    procs: list[ServerProcess] = field(default_factory=list)
    runtimes: list[ServerProcess] = field(default_factory=list)
    etcd: EtcdServer | None = None


def start_meshes(procs: Processes, instances: int, work: Path, models: Path, delays: Path, capacity: int,
                 use_etcd: bool, tag: str) -> list[Mesh]:
    """One mesh per policy, started side by side (every process started before any is waited for,
    except that a mesh's first instance registers the models before its others start)."""
    env = {"KSERVE_MESH_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
           "KSERVE_MESH_MEMORY_RECONCILE": "false"}  # capacity is what the policy manages, nothing else
    meshes = [Mesh(policy) for policy in POLICIES]
    try:
        _start(procs, meshes, instances, work, models, delays, capacity, use_etcd, tag, env)
    except BaseException:
        for mesh in meshes:  # its processes are stopped by ``procs``; its etcd here
            if mesh.etcd is not None:
                mesh.etcd.close()
        raise
    return meshes


def _start(procs: Processes, meshes: list[Mesh], instances: int, work: Path, models: Path, delays: Path,
           capacity: int, use_etcd: bool, tag: str, env: dict[str, str]) -> None:
    py = sys.executable
    runtimes: dict[tuple[int, int], ServerProcess] = {}
    for k, mesh in enumerate(meshes):
        if use_etcd:
            mesh.etcd = EtcdServer(unsafe_no_fsync=True).start()
        for i in range(instances):
            name = f"{tag}-{mesh.policy}-{i}"
            runtimes[k, i] = procs.server(
                f"runtime {name}", [py, str(HERE / "cache_runtime.py"), "--delays", str(delays), "--models",
                                    str(models), "--cache-dir", str(work / f"rt-{name}"), "--capacity-bytes",
                                    str(capacity), "--parent-pid", str(os.getpid())],
                RUNTIME_READY, work / f"runtime-{name}.log", env)
            mesh.runtimes.append(runtimes[k, i])
    for i in range(instances):
        started = []
        for k, mesh in enumerate(meshes):
            address = runtimes[k, i].wait_ready(START_TIMEOUT_S).group(1)
            name = f"{tag}-{mesh.policy}-{i}"
            cmd = [py, "-m", "kserve_mesh.cli", "instance", "--runtime", "remote", "--runtime-address", address,
                   "--eviction-policy", mesh.policy, "--rest-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
            if i == 0:
                cmd += ["--models", str(models)]  # registers them (in the mesh's etcd, for every instance)
            if mesh.etcd is not None:
                cmd += ["--etcd-endpoints", mesh.etcd.endpoint]
            proc = procs.server(f"instance {name}", cmd, READY, work / f"instance-{name}.log", env)
            mesh.procs.append(proc)
            started.append((mesh, proc))
        for mesh, proc in started:
            m = proc.wait_ready(START_TIMEOUT_S)
            mesh.rests.append(m.group(1))
            mesh.metrics.append(m.group(3))


def stop_mesh(procs: Processes, mesh: Mesh) -> list[tuple[float, int | None]]:
    """SIGTERM each instance in turn (the first drains into the others), then the runtimes; returns
    each instance's seconds to exit and exit code (negative: killed after ``procs``' stop grace)."""
    stops = []
    for proc in mesh.procs:
        t0 = time.perf_counter()
        proc.stop()
        stops.append((time.perf_counter() - t0, proc.proc.returncode))
    for proc in mesh.runtimes:  # (``procs`` would stop them at the end anyway)
        proc.stop()
    if mesh.etcd is not None:
        mesh.etcd.close()
    return stops


_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", re.MULTILINE)


def read_metrics(url: str) -> dict[str, float]:
    url = url.rstrip("/")
    with urllib.request.urlopen(url if url.endswith("/metrics") else url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for name, labels, value in _SAMPLE.findall(text):
        if not labels or name.endswith("_info"):
            out[name] = out.get(name, 0.0) + float(value)
    return out


# -- the replay ------------------------------------------------------------------------------------

class Client:
    """Keep-alive HTTP/1.1 connections (one per thread and instance) sending V2 infer requests."""

    def __init__(self, rests: list[str]) -> None:
        self.rests = [r.removeprefix("http://").rstrip("/") for r in rests]
        self.local = threading.local()

    def infer(self, model: str, target: int) -> tuple[bool, float, str]:
        conns = getattr(self.local, "conns", None)
        if conns is None:
            conns = self.local.conns = {}
        host = self.rests[target % len(self.rests)]
        body = json.dumps({"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES",
                                       "data": ["q"]}]}).encode()
        started = time.perf_counter()
        for attempt in (1, 2):
            conn = conns.get(host)
            if conn is None:
                conn = conns[host] = http.client.HTTPConnection(host, timeout=CALL_TIMEOUT_S)
            try:
                conn.request("POST", f"/v2/models/{model}/infer", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conns.pop(host, None)
                if attempt == 2:
                    return False, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"
        took = time.perf_counter() - started
        if resp.status != 200:
            return False, took, f"HTTP {resp.status}: {data[:200]!r}"
        if (model + ":").encode() not in data:
            return False, took, f"answer not from {model}: {data[:200]!r}"
        return True, took, ""


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    max_used_fraction: float = 0.0
    observations: int = 0
    over_capacity: list[str] = field(default_factory=list)


def observe(mesh: Mesh, tally: Tally) -> None:
    for url in mesh.metrics:
        m = read_metrics(url)
        used, cap = m.get("modelmesh_instance_used_bytes", 0.0), m.get("modelmesh_instance_capacity_bytes", 0.0)
        tally.observations += 1
        if cap > 0:
            tally.max_used_fraction = max(tally.max_used_fraction, used / cap)
        if used > cap:
            tally.over_capacity.append(f"{url}: used {used:.0f} > capacity {cap:.0f}")


def replay(meshes: list[Mesh], trace: list[int], clients: int, chunk: int, observe_every: int) -> list[Tally]:
    tallies = [Tally() for _ in meshes]
    conns = [Client(m.rests) for m in meshes]
    with ThreadPoolExecutor(clients) as pool:
        for start in range(0, len(trace), chunk):
            part = list(enumerate(trace[start:start + chunk], start))
            for mesh, client, tally in zip(meshes, conns, tallies, strict=True):
                for ok, took, why in pool.map(lambda it, c=client: c.infer(model_id(it[1]), it[0]), part):
                    tally.latencies.append(took)
                    if not ok:
                        tally.failures.append(why)
                if (start // chunk) % max(1, observe_every // chunk) == 0:
                    observe(mesh, tally)
    for mesh, tally in zip(meshes, tallies, strict=True):
        observe(mesh, tally)
    return tallies


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))] if s else float("nan")


def summarize(mesh: Mesh, tally: Tally, requests: int) -> dict[str, Any]:
    loads = load_ms = bytes_loaded = hits = cache_requests = 0.0
    for url in mesh.metrics:
        m = read_metrics(url)
        loads += m.get("modelmesh_loadmodel_milliseconds_count", 0.0)
        load_ms += m.get("modelmesh_loadmodel_milliseconds_sum", 0.0)
        bytes_loaded += m.get("modelmesh_loaded_model_size_bytes_sum", 0.0)
        hits += m.get("kserve_mesh_cache_hits_total", 0.0)
        cache_requests += m.get("kserve_mesh_cache_requests_total", 0.0)
    return {
        "policy": mesh.policy, "requests": requests, "loads": int(loads),
        "hit_ratio": 1.0 - loads / requests if requests else 0.0,
        "instance_hit_ratio": hits / cache_requests if cache_requests else 0.0,
        "bytes_loaded": int(bytes_loaded), "load_s": load_ms / 1000,
        "p50_ms": 1000 * pct(tally.latencies, 0.50), "p99_ms": 1000 * pct(tally.latencies, 0.99),
        "mean_ms": 1000 * sum(tally.latencies) / max(1, len(tally.latencies)),
        "failed": len(tally.failures), "first_failures": tally.failures[:3],
        "observations": tally.observations, "max_used_fraction": tally.max_used_fraction,
        "over_capacity": tally.over_capacity[:3],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one instance, 150 models, 300 requests per trace, "
                    "load delays x 0.25 (a smoke test)")
    ap.add_argument("--delay-scale", type=float, default=1.0, help="multiply every load delay")
    ap.add_argument("--models", type=int, default=2_000)
    ap.add_argument("--requests", type=int, default=4_000, help="per trace")
    ap.add_argument("--room", type=float, default=0.05, help="capacity per instance, a fraction of all bytes")
    ap.add_argument("--topologies", default="single,etcd", help="single (one instance), etcd (two over etcd)")
    ap.add_argument("--traces", default="zipf,shift")
    ap.add_argument("--clients", type=int, default=4, help="requests in flight")
    ap.add_argument("--chunk", type=int, default=40, help="requests per turn of each mesh")
    ap.add_argument("--observe-every", type=int, default=80, help="requests between capacity checks")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--workdir", help="keep models and logs here, kept afterwards (default: a temporary folder, removed)")
    a = ap.parse_args(argv)
    if a.quick:
        a.models, a.requests, a.topologies, a.delay_scale = 150, 300, "single", 0.25
    topologies, traces = a.topologies.split(","), a.traces.split(",")
    for t in topologies:
        if t not in ("single", "etcd"):
            ap.error(f"unknown topology '{t}': expected single or etcd")
    for t in traces:
        if t not in ("zipf", "shift"):
            ap.error(f"unknown trace '{t}': expected zipf or shift")
    if a.models < 20 or a.requests < 1 or not 0 < a.room < 1 or a.clients < 1 or a.chunk < 1 or a.delay_scale < 0:
        ap.error("need --models >= 20, --requests >= 1, 0 < --room < 1, --clients >= 1, --chunk >= 1, "
                 "--delay-scale >= 0")
    results: list[dict[str, Any]] = []
    failed = False
    t0 = time.perf_counter()
    if a.workdir:
        Path(a.workdir).mkdir(parents=True, exist_ok=True)
    keep = contextlib.nullcontext(a.workdir) if a.workdir else tempfile.TemporaryDirectory(prefix="km-cache-replay-")
    with keep as tmp, Processes() as procs:
        work = Path(tmp)
        models = work / "models"
        sizes, delays = make_models(models, a.models, a.seed, a.delay_scale)
        delays_file = work / "delays.json"
        delays_file.write_text(json.dumps(delays))
        capacity = int(a.room * sum(sizes))
        print(f"{a.models} string models, {sum(sizes) / 1e6:.1f} MB in all (median "
              f"{sorted(sizes)[len(sizes) // 2] / 1e3:.0f} kB), load delays median "
              f"{sorted(delays.values())[len(delays) // 2]:.0f} ms; capacity per instance {capacity / 1e6:.2f} MB "
              f"({100 * a.room:g} %)", flush=True)
        for topo in topologies:
            for trace_kind in traces:
                trace = make_trace(trace_kind, a.models, a.requests, a.seed + 7)
                tag = f"{topo}-{trace_kind}"
                meshes = start_meshes(procs, 2 if topo == "etcd" else 1, work, models, delays_file, capacity,
                                      topo == "etcd", tag)
                rows = []
                try:
                    tallies = replay(meshes, trace, a.clients, a.chunk, a.observe_every)
                    for mesh, tally in zip(meshes, tallies, strict=True):
                        row = summarize(mesh, tally, len(trace))
                        row.update(topology=topo, trace=trace_kind)
                        rows.append(row)
                        failed |= bool(row["failed"] or row["over_capacity"])
                        print(f"{topo:6} {trace_kind:5} {row['policy']:8} hit {row['hit_ratio']:.3f} loads "
                              f"{row['loads']:5d} load s {row['load_s']:6.1f} MB loaded "
                              f"{row['bytes_loaded'] / 1e6:7.2f} p50 "
                              f"{row['p50_ms']:6.1f} ms p99 {row['p99_ms']:6.1f} ms failed {row['failed']} "
                              f"max used {100 * row['max_used_fraction']:.1f}% ({row['observations']} checks)",
                              flush=True)
                finally:
                    for k, mesh in enumerate(meshes):
                        stops = stop_mesh(procs, mesh)
                        if k < len(rows):
                            # SIGTERM to exit, each instance in turn: in a mesh of two the first drains
                            # (re-homes its recently used models into the other) and must not be killed
                            rows[k]["stop_s"] = [round(s, 2) for s, _ in stops]
                            rows[k]["stop_rc"] = [rc for _, rc in stops]
                            killed = sum(rc is not None and rc < 0 for _, rc in stops)
                            failed |= killed > 0
                            print(f"{topo:6} {trace_kind:5} {mesh.policy:8} stopped in "
                                  f"{', '.join(f'{s:.1f}' for s, _ in stops)} s"
                                  f"{f' ({killed} killed)' if killed else ''}", flush=True)
                    results += rows
    wall = time.perf_counter() - t0
    print()
    print("| topology | trace | policy | hit ratio | loads | load s | MB loaded | p50 ms | p99 ms | failed "
          "| max used/capacity | stop s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['topology']} | {r['trace']} | {r['policy']} | {r['hit_ratio']:.3f} | {r['loads']} | "
              f"{r['load_s']:.1f} | {r['bytes_loaded'] / 1e6:.2f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['failed']} | "
              f"{100 * r['max_used_fraction']:.1f}% | {' / '.join(f'{x:.1f}' for x in r.get('stop_s', []))} |")
    verdicts = []
    for topo in topologies:
        for trace_kind in traces:
            rows = {r["policy"]: r for r in results if r["topology"] == topo and r["trace"] == trace_kind}
            if set(rows) == set(POLICIES):
                lru, mine = rows["lru"], rows["adaptive"]
                verdicts.append(f"{topo}/{trace_kind}: adaptive loads {mine['loads']} vs lru {lru['loads']} "
                                f"({'fewer' if mine['loads'] < lru['loads'] else 'NOT fewer'}), load time "
                                f"{mine['load_s']:.1f} vs {lru['load_s']:.1f} s, p99 "
                                f"{mine['p99_ms']:.1f} vs {lru['p99_ms']:.1f} ms "
                                f"({'lower' if mine['p99_ms'] < lru['p99_ms'] else 'NOT lower'})")
    print("\n".join(verdicts))
    print(f"({wall:.0f} s)")
    if a.json:
        Path(a.json).write_text(json.dumps({"models": a.models, "requests": a.requests, "room": a.room,
                                            "wall_s": wall, "results": results, "verdicts": verdicts}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ProcessFailed as exc:
        print(f"cache_replay: {exc}", file=sys.stderr)
        sys.exit(1)
