"""The runtime link over a Unix domain socket against loopback TCP, side by side in one run.

    python benchmarks/runtime_socket.py [--model sklearn-iris] [--requests N] [--rounds R] [--json OUT]

A mesh instance with ``--runtime process`` talks to its runtime child over a Unix socket in a
private folder (any local user can reach a loopback port). This measures whether that costs
anything: two built-in runtime processes, one on ``--port 0`` (TCP, 127.0.0.1) and one on
``--listen unix:PATH``, the same model loaded into both, V2 gRPC ``ModelInfer`` from
``loadgen.py`` processes (pre-encoded requests). Sequential latency in interleaved rounds
(tcp, unix, tcp, unix, ...) so drift on a busy machine spreads over both, then throughput with C
clients in alternating runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import grpc
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from latency import LOAD_TIMEOUT_S, START_TIMEOUT_S, Result, make_model
from procs import Processes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="sklearn-iris")
    p.add_argument("--requests", type=int, default=4000, help="sequential requests per target")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per throughput run")
    p.add_argument("--tput-rounds", type=int, default=4, help="throughput runs per target, alternating")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    from kserve_mesh.protocol import rest as codec
    from kserve_mesh.protos import model_runtime_pb2 as pb

    with tempfile.TemporaryDirectory(prefix="kserve-mesh-sock-") as tmp, Processes() as procs:
        work = Path(tmp)
        models, logs = work / "models", work / "logs"
        models.mkdir()
        logs.mkdir()
        entry = make_model(args.model, models)
        request, _ = codec.parse_infer_request(json.dumps(entry["request"]).encode(), args.model)
        body = work / "request.pb"
        body.write_bytes(request.SerializeToString())
        py = sys.executable
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        common = ["--log-level", "WARNING", "--allow-local-path", str(models)]
        servers = {
            "tcp": procs.server("runtime tcp", [py, "-m", "kserve_mesh.runtime.server", "--host", "127.0.0.1",
                                                "--port", "0", *common, "--cache-dir", str(work / "c1")],
                                r"runtime listening on (\S+)", logs / "tcp.log", env),
            "unix": procs.server("runtime unix", [py, "-m", "kserve_mesh.runtime.server", "--listen",
                                                  f"unix:{work}/rt.sock", *common, "--cache-dir", str(work / "c2")],
                                 r"runtime listening on (\S+)", logs / "unix.log", env),
        }
        addresses = {k: s.wait_ready(START_TIMEOUT_S).group(1) for k, s in servers.items()}
        for address in addresses.values():
            with grpc.insecure_channel(address) as channel:
                load = channel.unary_unary("/mmesh.ModelRuntime/loadModel",
                                           request_serializer=pb.LoadModelRequest.SerializeToString,
                                           response_deserializer=pb.LoadModelResponse.FromString)
                load(pb.LoadModelRequest(modelId=args.model, modelType=entry["type"],
                                         modelPath=str(models / args.model)), timeout=LOAD_TIMEOUT_S)
        gens = {k: procs.loadgen(k, "grpc", a, args.model, body) for k, a in addresses.items()}
        results = {k: Result(k, f"runtime over {k}", "gRPC") for k in gens}
        per_round = max(1, args.requests // args.rounds)
        for r in range(args.rounds):
            for key, gen in gens.items():
                answer = gen.ask(op="seq", n=per_round, warmup=args.warmup if r == 0 else 20)
                res = results[key]
                res.raw_ns.extend(answer["samples_ns"])
                res.round_p50_ms.append(float(np.median(answer["samples_ns"])) / 1e6)
                res.errors += answer["errors"]
        counts = {k: [0, 0.0] for k in gens}
        runs: dict[str, list[float]] = {k: [] for k in gens}
        for r in range(args.tput_rounds):  # alternating order: tcp, unix, unix, tcp, ...
            for key in (list(gens) if r % 2 == 0 else list(gens)[::-1]):
                answer = gens[key].ask(op="tput", concurrency=args.concurrency, seconds=args.duration)
                counts[key][0] += answer["count"]
                counts[key][1] += answer["seconds"]
                runs[key].append(answer["count"] / answer["seconds"])
                results[key].errors += answer["errors"]
        for key, (count, seconds) in counts.items():
            results[key].throughput_rps = count / seconds
        for res in results.values():
            res.summarize()
        tcp, unix = results["tcp"], results["unix"]
        print(f"model {args.model}, {tcp.samples} sequential requests each in {args.rounds} interleaved rounds, "
              f"throughput {args.concurrency} clients x {args.duration:g} s x {args.tput_rounds} alternating runs, "
              f"{os.cpu_count()} cores")
        print(f"{'':6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'req/s':>8} {'errors':>7}")
        for res in (tcp, unix):
            print(f"{res.key:6} {res.p50_ms:8.3f} {res.p90_ms:8.3f} {res.p99_ms:8.3f} {res.mean_ms:8.3f} "
                  f"{res.throughput_rps:8.0f} {res.errors:7d}")
        per_round = [u - t for t, u in zip(tcp.round_p50_ms, unix.round_p50_ms, strict=True)]
        ratios = [u / t for t, u in zip(runs["tcp"], runs["unix"], strict=True)]
        print(f"unix - tcp at p50: {unix.p50_ms - tcp.p50_ms:+.3f} ms (per round {min(per_round):+.3f} .. "
              f"{max(per_round):+.3f}); throughput unix/tcp {unix.throughput_rps / tcp.throughput_rps:.2f} "
              f"(per run pair {min(ratios):.2f} .. {max(ratios):.2f})")
        if args.json is not None:
            args.json.write_text(json.dumps({k: {f: v for f, v in vars(r).items() if f != "raw_ns"}
                                             for k, r in results.items()}, indent=1) + "\n")
        return 1 if tcp.errors or unix.errors else 0


if __name__ == "__main__":
    sys.exit(main())
