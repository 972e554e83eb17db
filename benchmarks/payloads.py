"""What payload logging costs inference, measured side by side in one run.

    python benchmarks/payloads.py [--model sklearn-iris] [--requests N] [--rounds R] [--concurrency C]
                                  [--seconds S] [--json OUT]

Three meshes (``kserve-mesh up``, in-process runtime, one model loaded), all on 127.0.0.1 ephemeral
ports, and two payload sinks (``tests/support/payload_sink.py --light``, their own processes: an
asyncio server that only counts, at niceness 19, so that on a small machine it takes little CPU
from the mesh it measures; in production a sink is another machine), all started and stopped by
this script:

    off       no payload processors
    on        ``--payload-processors`` naming a sink that answers 202 at once
    stalled   ``--payload-processors`` naming a sink that reads every event and never answers

For each mesh and transport (V2 REST JSON, V2 gRPC): sequential latency (one client, N requests
after a warm-up, interleaved over R rounds so drift falls on every mesh alike; p50/p99) and
throughput (C clients on keep-alive connections for S seconds), from ``loadgen.py`` processes, and
the mesh process's CPU time per request during the throughput phase (``/proc``): on a machine
shared with other work latency is noisy, CPU per request less so. "p50 x by round" is the spread
of the p50 ratio over the interleaved rounds: how much of a difference is noise. The
issue's bar: logging on adds less than 5% to p50, and a stalled sink changes nothing (its events
are dropped and counted). After the run the sinks' event counts and each mesh's payload metrics
(any ``/metrics`` line naming ``payload``) are shown.

Until the data plane calls the payload logger, ``--payload-processors`` is accepted and does
nothing: the script sees that the "on" sink received no event after a few inferences, says so, and
measures the "off" row only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if importlib.util.find_spec("kserve_mesh") is None:  # run from a checkout without an install
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))

from latency import make_model
from payload_sink import SinkProcess
from procs import Processes
from rich.console import Console
from rich.table import Table

READY = r"kserve-mesh ready: rest=(\S+) grpc=(\S+) metrics=(\S+)"
MESHES = ("off", "on", "stalled")
WIRED_WAIT_S = 5.0


@dataclass
class Row:
    mesh: str
    transport: str
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    throughput_rps: float = 0.0
    cpu_us_per_request: float = 0.0
    errors: int = 0
    first_error: str = ""
    round_p50_ms: list[float] = field(default_factory=list)
    samples_ns: list[int] = field(default_factory=list, repr=False)


def post(url: str, body: bytes = b"", timeout: float = 120) -> bytes:
    req = urllib.request.Request(url, data=body, method="POST", headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


def payload_metrics(metrics_url: str) -> list[str]:
    """The ``/metrics`` lines naming payloads (``metrics_url``: the mesh's metrics address, as it says)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=10) as resp:
            text = resp.read().decode()
    except OSError as exc:
        return [f"(metrics unavailable: {exc})"]
    return [line for line in text.splitlines() if "payload" in line and not line.startswith("#")]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``; 0 elsewhere)."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wired(rest: str, model: str, body: bytes, sink: SinkProcess) -> bool:
    """Whether the "on" mesh sends payloads: a few inferences, then events at the sink."""
    for _ in range(3):
        post(f"{rest}/v2/models/{model}/infer", body)
    deadline = time.monotonic() + WIRED_WAIT_S
    while sink.received() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return sink.received() >= 2


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from kserve_mesh.protocol import rest as codec

    with tempfile.TemporaryDirectory(prefix="kserve-mesh-payload-bench-") as tmp, Processes() as procs:
        work = Path(tmp)
        models = work / "models"
        models.mkdir()
        entry = make_model(args.model, models)
        rest_body = json.dumps(entry["request"]).encode()
        request, _ = codec.parse_infer_request(rest_body, args.model)
        bodies = {"rest": work / "request.json", "grpc": work / "request.pb"}
        bodies["rest"].write_bytes(rest_body)
        bodies["grpc"].write_bytes(request.SerializeToString())
        sinks = {"on": SinkProcess(work / "sink-on.jsonl", light=True, nice=19),
                 "stalled": SinkProcess(work / "sink-stalled.jsonl", mode="stall", light=True, nice=19)}
        try:
            return _measure(args, console, procs, work, models, bodies, rest_body, sinks)
        finally:
            for sink in sinks.values():
                sink.stop()


def _measure(args: argparse.Namespace, console: Console, procs: Processes, work: Path, models: Path,
             bodies: dict[str, Path], rest_body: bytes, sinks: dict[str, SinkProcess]) -> dict[str, Any]:
    quiet = {"KSERVE_MESH_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    flags = {"off": [], "on": ["--payload-processors", sinks["on"].url()],
             "stalled": ["--payload-processors", sinks["stalled"].url()]}
    servers = {kind: procs.server(kind, [sys.executable, "-m", "kserve_mesh.cli", "up", "--models", str(models),
                                         "--rest-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                                         *flags[kind]], READY, work / f"{kind}.log", quiet)
               for kind in MESHES}
    addresses: dict[str, dict[str, str]] = {}
    for kind, server in servers.items():
        m = server.wait_ready(120)
        addresses[kind] = {"rest": m.group(1), "grpc": m.group(2), "metrics": m.group(3)}
        post(f"{m.group(1)}/v2/repository/models/{args.model}/load")
    meshes = MESHES
    note = ""
    if not wired(addresses["on"]["rest"], args.model, rest_body, sinks["on"]):
        meshes = ("off",)
        note = (f"the 'on' sink received no event within {WIRED_WAIT_S:g} s of 3 inferences: this mesh does not "
                "send payloads yet (--payload-processors is accepted but not wired); measuring 'off' only")
        console.print(f"[yellow]{note}[/yellow]")
    gens = {(kind, t): procs.loadgen(f"{kind}-{t}", t, addresses[kind][t], args.model, bodies[t])
            for kind in meshes for t in ("rest", "grpc")}
    rows = {key: Row(*key) for key in gens}
    console.print(f"measuring {len(rows)} rows: {args.rounds} rounds x {args.requests} sequential requests, "
                  f"then {args.seconds:g} s at concurrency {args.concurrency} each")
    for _ in range(args.rounds):
        for key, gen in gens.items():
            answer = gen.ask(op="seq", n=args.requests, warmup=50)
            rows[key].samples_ns += answer["samples_ns"]
            rows[key].round_p50_ms.append(float(np.percentile(answer["samples_ns"], 50)) / 1e6)
            rows[key].errors += answer["errors"]
            rows[key].first_error = rows[key].first_error or answer["error"]
    for key, gen in gens.items():
        before = cpu_seconds(servers[key[0]].pid())
        answer = gen.ask(op="tput", concurrency=args.concurrency, seconds=args.seconds)
        spent = cpu_seconds(servers[key[0]].pid()) - before
        rows[key].cpu_us_per_request = spent / answer["count"] * 1e6 if answer["count"] else 0.0
        rows[key].throughput_rps = answer["count"] / answer["seconds"]
        rows[key].errors += answer["errors"]
        rows[key].first_error = rows[key].first_error or answer["error"]
    for row in rows.values():
        ms = np.asarray(row.samples_ns, dtype=np.float64) / 1e6
        row.p50_ms, row.p99_ms = (float(v) for v in np.percentile(ms, [50, 99]))
    out = _report(args, console, rows)
    out["note"] = note
    time.sleep(0.3)  # the sinks write their counts every 100 ms
    out["sink_events"] = {kind: sink.received() for kind, sink in sinks.items()}
    out["payload_metrics"] = {kind: payload_metrics(addresses[kind]["metrics"]) for kind in meshes}
    console.print(f"events at the sinks: {out['sink_events']}")
    for kind, lines in out["payload_metrics"].items():
        console.print(f"{kind} payload metrics: " + ("; ".join(lines) if lines else "(none)"))
    return out


def _report(args: argparse.Namespace, console: Console, rows: dict[tuple[str, str], Row]) -> dict[str, Any]:
    table = Table(title=f"Payload logging: {args.model}, {args.rounds}x{args.requests} sequential, "
                        f"{args.concurrency} clients for {args.seconds:g} s")
    for col in ("mesh", "transport", "p50 ms", "p99 ms", "req/s", "p50 vs off", "p50 x", "p50 x by round",
                "req/s x", "CPU us/req", "CPU vs off", "errors"):
        table.add_column(col, justify="left" if col in ("mesh", "transport") else "right")
    out: dict[str, Any] = {"model": args.model, "rows": []}
    for (kind, transport), row in rows.items():
        base = rows[("off", transport)]
        added = row.p50_ms - base.p50_ms
        p50_ratio = row.p50_ms / base.p50_ms if base.p50_ms else 0.0
        ratio = row.throughput_rps / base.throughput_rps if base.throughput_rps else 0.0
        other = kind != "off"
        by_round = [mine / theirs for mine, theirs in zip(row.round_p50_ms, base.round_p50_ms, strict=True) if theirs]
        spread = f"{min(by_round):.2f}-{max(by_round):.2f}x" if other and by_round else "-"
        table.add_row(kind, transport, f"{row.p50_ms:.3f}", f"{row.p99_ms:.3f}", f"{row.throughput_rps:,.0f}",
                      f"{added:+.3f} ms" if other else "-", f"{p50_ratio:.3f}x" if other else "-", spread,
                      f"{ratio:.2f}x" if other else "-", f"{row.cpu_us_per_request:.0f}",
                      f"{row.cpu_us_per_request - base.cpu_us_per_request:+.0f} us" if other else "-", str(row.errors))
        out["rows"].append({**{k: v for k, v in asdict(row).items() if k != "samples_ns"},
                            "added_p50_ms": added, "p50_ratio": p50_ratio, "throughput_ratio": ratio,
                            "added_cpu_us_per_request": row.cpu_us_per_request - base.cpu_us_per_request})
    console.print(table)
    if any(r.errors for r in rows.values()):
        console.print("[red]errors:[/red] " + "; ".join(f"{k}: {r.first_error}" for k, r in rows.items() if r.errors))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="sklearn-iris")
    p.add_argument("--requests", type=int, default=500, help="sequential requests per row and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=180)  # piped: the whole table
    began = time.monotonic()
    out = run(args, console)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))
    console.print(f"done in {time.monotonic() - began:.0f} s")
    return 1 if any(r["errors"] for r in out["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
