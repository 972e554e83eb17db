"""How much the mesh adds to a direct runtime call, measured in one run.

    python benchmarks/latency.py [--model sklearn-iris] [--requests N] [--concurrency C] [--json OUT]

Targets, all on 127.0.0.1 ephemeral ports, all started and stopped by this script:

    in-process  BuiltinRuntime.infer called in this process (the runtime's own cost, no transport)
    (a) direct  the built-in runtime as its own process (``kserve_mesh.runtime.server``), model
                loaded with mmesh.ModelRuntime/loadModel, called with V2 gRPC ModelInfer
    (b) mesh    ``kserve-mesh up`` with the in-process runtime (the embedded default)
    (c) mesh    ``kserve-mesh up --runtime process`` (mesh -> gRPC -> runtime child process)

Meshes are measured over V2 gRPC and V2 REST (JSON); the runtime process has no REST, so REST
(c) is compared with REST (b). For each target and transport: sequential latency (one client,
N requests after a warm-up; p50/p90/p99/mean) and throughput (C clients for a fixed time).
Sequential runs are interleaved in rounds (a, b, c, a, b, c, ...) so drift on a busy machine
spreads over every target alike. Load comes from ``loadgen.py`` processes (pre-encoded requests,
raw bytes), never from a server's own process. THE number: (b) - (a) at p50 over gRPC, the
mesh's overhead over a direct call, against the 0.3 ms target.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import json
import logging
import os
import platform
import signal
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if importlib.util.find_spec("kserve_mesh") is None:  # run from a checkout without an install
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from rich import box  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from procs import ProcessFailed, Processes, ServerProcess  # noqa: E402

log = logging.getLogger("benchmarks.latency")

TARGET_ADDED_P50_MS = 0.3
START_TIMEOUT_S = 120.0
LOAD_TIMEOUT_S = 120.0
MAKERS = {"sklearn-iris": "make_sklearn", "xgboost-iris": "make_xgboost", "lightgbm-iris": "make_lightgbm",
          "onnx-iris": "make_onnx", "string-1": "make_string"}


@dataclass
class Result:
    """One target x transport: latencies in ms and throughput in requests/s."""

    key: str
    target: str
    transport: str
    reference: str = ""  # the key this row is compared with
    samples: int = 0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    throughput_rps: float = 0.0
    throughput_note: str = ""
    errors: int = 0
    first_error: str = ""
    round_p50_ms: list[float] = field(default_factory=list)  # p50 of each interleaved round
    raw_ns: list[int] = field(default_factory=list, repr=False)

    def summarize(self) -> None:
        ms = np.asarray(self.raw_ns, dtype=np.float64) / 1e6
        self.samples = int(ms.size)
        self.p50_ms, self.p90_ms, self.p99_ms = (float(v) for v in np.percentile(ms, [50, 90, 99]))
        self.mean_ms = float(ms.mean())


ROWS = [  # key, target, transport, reference key
    ("inproc", "in-process BuiltinRuntime.infer", "-", ""),
    ("a-grpc", "(a) runtime process, direct", "gRPC", "inproc"),
    ("b-grpc", "(b) mesh + in-process runtime", "gRPC", "a-grpc"),
    ("c-grpc", "(c) mesh + runtime process", "gRPC", "a-grpc"),
    ("b-rest", "(b) mesh + in-process runtime", "REST", "inproc"),
    ("c-rest", "(c) mesh + runtime process", "REST", "b-rest"),
]


def _load_make_models() -> ModuleType:
    path = ROOT / "examples" / "make_models.py"
    spec = importlib.util.spec_from_file_location("make_models", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_model(model: str, out_dir: Path) -> dict[str, Any]:
    """Write the example model ``model`` under ``out_dir``; return its inputs.json entry."""
    if model not in MAKERS:
        raise SystemExit(f"unknown model {model!r}; choose one of {', '.join(MAKERS)}")
    make = getattr(_load_make_models(), MAKERS[model])
    return make(out_dir, model)


def scale_entry(entry: dict[str, Any], rows: int) -> dict[str, Any]:
    """The entry with every input and expected output repeated along axis 0 to ``rows`` rows."""

    def tile(t: dict[str, Any]) -> dict[str, Any]:
        arr = np.asarray(t["data"], dtype=object).reshape(t["shape"])
        reps = -(-rows // arr.shape[0])
        big = np.concatenate([arr] * reps)[:rows]
        return {**t, "shape": list(big.shape), "data": big.ravel().tolist()}

    return {**entry,
            "request": {**entry["request"], "inputs": [tile(t) for t in entry["request"]["inputs"]]},
            "expected": {**entry["expected"], "outputs": [tile(t) for t in entry["expected"]["outputs"]]}}


# -- servers ---------------------------------------------------------------------------------------
def start_servers(procs: Processes, models_dir: Path, logs: Path) -> dict[str, ServerProcess]:
    py = sys.executable
    quiet = {"KSERVE_MESH_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    mesh = [py, "-m", "kserve_mesh.cli", "up", "--models", str(models_dir),
            "--rest-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    ready = r"kserve-mesh ready: rest=(\S+) grpc=(\S+) metrics=(\S+)"
    return {
        "a": procs.server("runtime process (a)", [py, "-m", "kserve_mesh.runtime.server", "--host", "127.0.0.1",
                                                  "--port", "0", "--log-level", "WARNING",
                                                  "--allow-local-path", str(models_dir),
                                                  "--cache-dir", str(logs.parent / "runtime-a-cache")],
                          r"runtime listening on (\S+)", logs / "runtime-a.log", quiet),
        "b": procs.server("mesh (b)", mesh, ready, logs / "mesh-b.log", quiet),
        "c": procs.server("mesh (c)", [*mesh, "--runtime", "process"], ready, logs / "mesh-c.log", quiet),
    }


def load_everywhere(addresses: dict[str, str], model: str, model_type: str, model_path: Path) -> None:
    from kserve_mesh.protos import model_runtime_pb2 as pb

    with grpc.insecure_channel(addresses["a-grpc"]) as channel:
        load = channel.unary_unary("/mmesh.ModelRuntime/loadModel",
                                   request_serializer=pb.LoadModelRequest.SerializeToString,
                                   response_deserializer=pb.LoadModelResponse.FromString)
        load(pb.LoadModelRequest(modelId=model, modelType=model_type, modelPath=str(model_path)),
             timeout=LOAD_TIMEOUT_S)
    for key in ("b-rest", "c-rest"):
        req = urllib.request.Request(f"{addresses[key]}/v2/repository/models/{model}/load", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=LOAD_TIMEOUT_S) as resp:
            resp.read()


def check_answers(addresses: dict[str, str], model: str, grpc_body: bytes, rest_body: bytes,
                  expected: dict[str, Any]) -> None:
    """One request per target and transport, answers compared with the expected outputs, so the
    benchmark never times a fast error."""
    from kserve_mesh.protocol import tensors, v2

    want = {o["name"]: np.asarray(o["data"]) for o in expected["outputs"]}

    def same(name: str, got: Any, where: str) -> None:
        w = want[name]
        g = np.asarray(got).ravel()
        ok = np.allclose(g.astype(np.float64), w.astype(np.float64), rtol=1e-4) if w.dtype.kind in "fiu" \
            else [x.decode() if isinstance(x, bytes) else x for x in g] == list(w)
        if not ok:
            raise SystemExit(f"{where}: output {name} is {g.tolist()}, expected {w.tolist()}")

    for key, address in addresses.items():
        if key.endswith("-grpc"):
            with grpc.insecure_channel(address) as channel:
                raw = channel.unary_unary(v2.method("ModelInfer"))(grpc_body, timeout=30)
            outputs = tensors.decode_outputs(v2.ModelInferResponse.FromString(raw))
            for name in want:
                same(name, outputs[name], key)
        else:
            req = urllib.request.Request(f"{address}/v2/models/{model}/infer", data=rest_body, method="POST",
                                         headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                doc = json.loads(resp.read())
            got = {o["name"]: o["data"] for o in doc["outputs"]}
            for name in want:
                same(name, got[name], key)


# -- measuring -------------------------------------------------------------------------------------
def measure_inprocess(model: str, model_type: str, model_path: Path, grpc_body: bytes, n: int,
                      warmup: int) -> Result:
    """BuiltinRuntime.infer on the same request, in this process: the runtime's own cost."""
    from kserve_mesh.core.records import ModelInfo
    from kserve_mesh.protocol import v2
    from kserve_mesh.runtime.builtin import BuiltinRuntime, RuntimeConfig
    from kserve_mesh.runtime.builtin.fetch import LocalFetcher

    async def run() -> list[int]:
        runtime = BuiltinRuntime(RuntimeConfig(), LocalFetcher([model_path.parent]))
        try:
            await runtime.load_model(model, ModelInfo(model_type, str(model_path)))
            request = v2.ModelInferRequest.FromString(grpc_body)
            for _ in range(warmup):
                await runtime.infer(request)
            clock = time.perf_counter_ns
            samples = [0] * n
            for i in range(n):
                start = clock()
                await runtime.infer(request)
                samples[i] = clock() - start
            return samples
        finally:
            await runtime.close()

    result = Result("inproc", *ROWS[0][1:])
    result.raw_ns = asyncio.run(run())
    result.summarize()
    result.throughput_rps = 1000.0 / result.mean_ms
    result.throughput_note = "1/mean, one caller"
    return result


def measure_remote(procs: Processes, addresses: dict[str, str], model: str, bodies: dict[str, Path],
                   args: argparse.Namespace, console: Console) -> list[Result]:
    rows = {key: (target, transport, ref) for key, target, transport, ref in ROWS}
    results: dict[str, Result] = {}
    gens = {}
    for key, address in addresses.items():
        transport = key.split("-")[1]
        gens[key] = procs.loadgen(key, transport, address, model, bodies[transport])
        results[key] = Result(key, *rows[key])
    per_round = max(1, args.requests // args.rounds)
    for r in range(args.rounds):
        console.print(f"  sequential latency, round {r + 1}/{args.rounds} ({per_round} requests per target)")
        for key, gen in gens.items():
            answer = gen.ask(op="seq", n=per_round, warmup=args.warmup if r == 0 else max(1, args.warmup // 10))
            res = results[key]
            res.raw_ns.extend(answer["samples_ns"])
            res.round_p50_ms.append(float(np.median(answer["samples_ns"])) / 1e6)
            res.errors += answer["errors"]
            res.first_error = res.first_error or answer["error"]
    for key, gen in gens.items():
        console.print(f"  throughput {key}: {args.concurrency} clients for {args.duration:g} s")
        answer = gen.ask(op="tput", concurrency=args.concurrency, seconds=args.duration)
        res = results[key]
        res.throughput_rps = answer["count"] / answer["seconds"]
        res.throughput_note = f"{args.concurrency} clients"
        res.errors += answer["errors"]
        res.first_error = res.first_error or answer["error"]
    for res in results.values():
        res.summarize()
    return list(results.values())


# -- reporting -------------------------------------------------------------------------------------
def comparisons(results: dict[str, Result]) -> dict[str, dict[str, float]]:
    out = {}
    for res in results.values():
        ref = results.get(res.reference)
        if ref is None:
            continue
        out[res.key] = {
            "reference": ref.key,  # type: ignore[dict-item]
            "added_p50_ms": res.p50_ms - ref.p50_ms,
            "added_p99_ms": res.p99_ms - ref.p99_ms,
            "p50_ratio": res.p50_ms / ref.p50_ms,
            "throughput_ratio": res.throughput_rps / ref.throughput_rps,
        }
    return out


def verdict(results: dict[str, Result]) -> dict[str, Any]:
    """THE number: what the mesh adds at p50 over a direct call, with its spread over the rounds."""
    a, b = results["a-grpc"], results["b-grpc"]
    added = b.p50_ms - a.p50_ms
    per_round = [rb - ra for ra, rb in zip(a.round_p50_ms, b.round_p50_ms)]
    return {"metric": "p50(b mesh in-process, gRPC) - p50(a direct runtime, gRPC)",
            "added_p50_ms": added, "added_p50_ms_per_round": per_round,
            "limit_ms": TARGET_ADDED_P50_MS, "pass": added <= TARGET_ADDED_P50_MS}


def _short(res: Result) -> str:
    return "in-process" if res.key == "inproc" else f"({res.key[0]}) {res.transport}"


def render(console: Console, results: dict[str, Result], cmp: dict[str, dict[str, float]],
           verdict_: dict[str, Any], args: argparse.Namespace) -> None:
    size = args.request_bytes
    table = Table(title=f"kserve-mesh latency: model {args.model} (request {size['grpc']:,} B protobuf, "
                        f"{size['rest']:,} B JSON), {os.cpu_count()} cores, "
                        f"{results['a-grpc'].samples} sequential requests per row, "
                        f"throughput with {args.concurrency} clients x {args.duration:g} s",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("target", "", "p50 ms", "p90 ms", "p99 ms", "mean ms", "req/s", "vs", "+p50 ms", "p50 x",
                "req/s x"):
        table.add_column(col, justify="left" if col in ("target", "", "vs") else "right")
    for key, *_ in ROWS:
        res = results[key]
        c = cmp.get(key)
        ref = results[res.reference] if res.reference else None
        table.add_row(
            res.target, res.transport, f"{res.p50_ms:.3f}", f"{res.p90_ms:.3f}", f"{res.p99_ms:.3f}",
            f"{res.mean_ms:.3f}", f"{res.throughput_rps:,.0f}" + ("*" if key == "inproc" else ""),
            _short(ref) if ref else "",
            f"{c['added_p50_ms']:+.3f}" if c else "", f"{c['p50_ratio']:.2f}" if c else "",
            f"{c['throughput_ratio']:.2f}" if c else "", style="bold" if key == "b-grpc" else None)
    console.print(table)
    console.print("vs: the row compared with; +p50 ms = p50 - its p50; x = ratio to it. * in-process req/s "
                  "is 1/mean of one caller (no transport, no concurrency).")
    for key, res in results.items():
        if res.errors:
            console.print(f"[red]{key}: {res.errors} failed requests, first: {res.first_error}[/red]")
    word = "[green]PASS[/green]" if verdict_["pass"] else "[red]FAIL[/red]"
    rounds = verdict_["added_p50_ms_per_round"]
    spread = f" (per round {min(rounds):+.3f} .. {max(rounds):+.3f})" if len(rounds) > 1 else ""
    console.print(f"[bold]target[/bold]: the mesh (b) adds {verdict_['added_p50_ms']:+.3f} ms at p50 over a "
                  f"direct runtime call (a), gRPC{spread}; limit {TARGET_ADDED_P50_MS} ms: {word}")


def write_json(path: Path, results: dict[str, Result], cmp: dict[str, Any], verdict_: dict[str, Any],
               args: argparse.Namespace) -> None:
    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "grpc": grpc.__version__},
        "settings": {"model": args.model, "rows": args.rows, "request_bytes": args.request_bytes, "requests": args.requests, "warmup": args.warmup, "rounds": args.rounds,
                     "concurrency": args.concurrency, "duration_s": args.duration},
        "results": [{k: v for k, v in asdict(results[key]).items() if k != "raw_ns"} for key, *_ in ROWS],
        "comparisons": cmp,
        "target": verdict_,
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")


# -- main ------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="sklearn-iris", choices=sorted(MAKERS), help="example model (default %(default)s)")
    p.add_argument("--requests", type=int, default=2000, help="sequential requests per target (default %(default)s)")
    p.add_argument("--warmup", type=int, default=200, help="unmeasured requests first (default %(default)s)")
    p.add_argument("--rounds", type=int, default=8, help="interleaved rounds of sequential requests (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=4, help="clients in the throughput runs (default %(default)s)")
    p.add_argument("--duration", type=float, default=4.0, help="seconds per throughput run (default %(default)s)")
    p.add_argument("--rows", type=int, default=0,
                   help="repeat the sample request's rows to this many (default: the sample as is, 3 rows)")
    p.add_argument("--json", type=Path, default=None, help="write the raw numbers here as JSON")
    return p


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for name in ("requests", "warmup", "rounds", "concurrency", "rows"):
        if getattr(args, name) < (0 if name in ("warmup", "rows") else 1):
            raise SystemExit(f"--{name} must be positive, got {getattr(args, name)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    console = Console() if sys.stdout.isatty() else Console(width=130)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kserve-mesh-bench-") as tmp, Processes() as procs:
        work = Path(tmp)
        models_dir, logs = work / "models", work / "logs"
        models_dir.mkdir()
        logs.mkdir()
        try:
            return _run(args, console, procs, models_dir, logs, work, began)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted; stopping every process[/yellow]")
            return 130
        except ProcessFailed as exc:
            console.print(f"[red]benchmark failed:[/red] {exc}")
            return 1
        finally:
            procs.stop_all()


def _run(args: argparse.Namespace, console: Console, procs: Processes, models_dir: Path, logs: Path, work: Path,
         began: float) -> int:
    from kserve_mesh.protocol import rest as codec

    console.print(f"making model {args.model} and starting the runtime process and two meshes")
    entry = make_model(args.model, models_dir)
    if args.rows:
        entry = scale_entry(entry, args.rows)
    servers = start_servers(procs, models_dir, logs)
    rest_body = json.dumps(entry["request"]).encode()
    request, _ = codec.parse_infer_request(rest_body, args.model)
    grpc_body = request.SerializeToString()
    args.request_bytes = {"grpc": len(grpc_body), "rest": len(rest_body)}
    bodies = {"grpc": work / "request.pb", "rest": work / "request.json"}
    bodies["grpc"].write_bytes(grpc_body)
    bodies["rest"].write_bytes(rest_body)

    addresses = {"a-grpc": servers["a"].wait_ready(START_TIMEOUT_S).group(1)}
    for name in ("b", "c"):
        m = servers[name].wait_ready(START_TIMEOUT_S)
        addresses[f"{name}-grpc"], addresses[f"{name}-rest"] = m.group(2), m.group(1)
    model_path = models_dir / args.model
    load_everywhere(addresses, args.model, entry["type"], model_path)
    check_answers(addresses, args.model, grpc_body, rest_body, entry["expected"])
    console.print(f"ready after {time.monotonic() - began:.1f} s; measuring")

    results = {"inproc": measure_inprocess(args.model, entry["type"], model_path, grpc_body,
                                           args.requests, args.warmup)}
    for res in measure_remote(procs, addresses, args.model, bodies, args, console):
        results[res.key] = res
    cmp = comparisons(results)
    verdict_ = verdict(results)
    render(console, results, cmp, verdict_, args)
    if args.json is not None:
        write_json(args.json, results, cmp, verdict_, args)
        console.print(f"raw numbers written to {args.json}")
    console.print(f"done in {time.monotonic() - began:.0f} s")
    return 0 if not any(r.errors for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
