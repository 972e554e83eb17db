"""The hop between a mesh instance and its runtime child, gRPC against the local link (issue 15).

    python benchmarks/runtime_link.py [--seconds 10] [--rounds 1] [--json OUT]

Starts ``kserve-mesh up --runtime process`` twice, one after the other, with
``KSERVE_MESH_RUNTIME_LINK=grpc`` (inference to the child over grpc.aio on a Unix socket) and
``KSERVE_MESH_RUNTIME_LINK=frames`` (the framed, multiplexed link of ``runtime/local_link.py``),
both serving the example sklearn iris model, and loads each with the load generators of
``peers.py``: ``wrk`` for V2 REST and ``h2load`` for V2 gRPC, at 1 and 16 connections, ``--seconds``
per cell. ``--rounds N`` repeats the pair (grpc, frames, grpc, frames, ...) so that noise from other
work on the machine shows. Every answer is checked once with a real client first.

Printed: req/s, p50, p99 and CPU per request (user + system of the mesh's whole process tree, the
child included) per cell, and frames / grpc ratios. The issue-15 targets for ``--runtime
process`` are relative to the peers (>= 1.5x the best peer at c=16), which only ``peers.py``
measures in the same run (its ``mesh-process`` row is the frames link); p50 at c=1 is shown
against its target (<= 0.8 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peers import (
    MODEL,
    Cell,
    Processes,
    check_server,
    encode_bodies,
    ensure_tools,
    free_port,
    load_model,
    make_model,
    run_h2load,
    run_wrk,
    tree_cpu_seconds,
)
from rich.console import Console
from rich.table import Table

LINKS = ("grpc", "frames")
CELLS = (("rest", 1), ("rest", 16), ("grpc", 1), ("grpc", 16))
START_TIMEOUT_S = 180.0
TARGET_P50_MS = 0.8  # issue 15, --runtime process: p50 at c=1


def start(link: str, procs: Processes, models: Path, work: Path) -> tuple[object, str, str]:
    """``up --runtime process`` with ``KSERVE_MESH_RUNTIME_LINK=link``, the model loaded."""
    env = {"KSERVE_MESH_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1", "KSERVE_MESH_RUNTIME_LINK": link}
    cmd = [sys.executable, "-m", "kserve_mesh.cli", "up", "--models", str(models), "--runtime", "process",
           "--rest-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", "0"]
    proc = procs.server(f"mesh-{link}", cmd, r"kserve-mesh ready: rest=(\S+) grpc=(\S+) metrics",
                        work / f"mesh-{link}.log", env)
    m = proc.wait_ready(START_TIMEOUT_S)
    load_model(m.group(1))
    return proc, m.group(1), m.group(2)


def measure(name: str, proc: object, rest: str, grpc_address: str, bodies: dict[str, Path], seconds: float,
            work: Path) -> list[Cell]:
    urls = {"rest": f"{rest}/v2/models/{MODEL}/infer",
            "grpc": f"http://{grpc_address}/inference.GRPCInferenceService/ModelInfer"}
    runners = {"rest": run_wrk, "grpc": run_h2load}
    pid = proc.pid()  # type: ignore[attr-defined]
    for transport in ("rest", "grpc"):  # warm-up
        runners[transport](urls[transport], bodies[transport], 16, 1, work)
    cells = []
    for transport, connections in CELLS:
        cpu0, t0 = tree_cpu_seconds(pid), time.monotonic()
        requests, errors, p50, p99 = runners[transport](urls[transport], bodies[transport], connections, seconds,
                                                        work)
        took, cpu = time.monotonic() - t0, tree_cpu_seconds(pid) - cpu0
        cells.append(Cell(name, transport, connections, requests, min(took, seconds), errors, p50, p99, cpu))
    return cells


def render(console: Console, rounds: list[list[Cell]]) -> dict[str, object]:
    table = Table(title="mesh --runtime process: the hop to the runtime child, gRPC vs the local link (frames)")
    for col in ("round", "cell", "grpc req/s", "frames req/s", "x", "grpc p50/p99 ms", "frames p50/p99 ms",
                "grpc CPU ms/req", "frames CPU ms/req", "errors"):
        table.add_column(col, justify="right")
    summary: dict[str, object] = {}
    for i, cells in enumerate(rounds, 1):
        by = {(c.server, c.transport, c.connections): c for c in cells}
        for transport, connections in CELLS:
            g, f = by[("grpc", transport, connections)], by[("frames", transport, connections)]
            x = f.rps / g.rps if g.rps else float("nan")
            table.add_row(str(i), f"{transport} c={connections}", f"{g.rps:,.0f}", f"{f.rps:,.0f}", f"{x:.2f}",
                          f"{g.p50_ms:.2f} / {g.p99_ms:.2f}", f"{f.p50_ms:.2f} / {f.p99_ms:.2f}",
                          f"{g.cpu_ms_per_request:.3f}", f"{f.cpu_ms_per_request:.3f}", f"{g.errors} / {f.errors}")
            summary[f"round{i}/{transport}/c{connections}"] = {"x": x, "grpc_rps": g.rps, "frames_rps": f.rps}
    console.print(table)
    last = {(c.server, c.transport, c.connections): c for c in rounds[-1]}
    for transport in ("rest", "grpc"):
        f16, f1 = last[("frames", transport, 16)], last[("frames", transport, 1)]
        console.print(f"frames {transport}: c=16 {f16.rps:,.0f} req/s (against the peers: peers.py, mesh-process); "
                      f"p50 at c=1 {f1.p50_ms:.2f} ms (target <= {TARGET_P50_MS:g} ms)")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each cell (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=1, help="grpc/frames pairs to run (default %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="write the cells here")
    args = parser.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=170)
    ensure_tools(console)
    rounds: list[list[Cell]] = []
    with tempfile.TemporaryDirectory(prefix="kserve-mesh-link-") as tmp, Processes() as procs:
        work = Path(tmp)
        models = work / "models"
        entry = make_model(MODEL, models)
        bodies = encode_bodies(entry, work)
        for _ in range(args.rounds):
            cells: list[Cell] = []
            for link in LINKS:
                console.print(f"[bold]mesh --runtime process, runtime_link={link}[/bold]: starting")
                proc, rest, grpc_address = start(link, procs, models, work)
                check_server(link, rest, grpc_address, bodies, entry["expected"])
                cells += measure(link, proc, rest, grpc_address, bodies, args.seconds, work)
                procs.stop_all()
            rounds.append(cells)
    summary = render(console, rounds)
    if args.json is not None:
        args.json.write_text(json.dumps({"model": MODEL, "seconds": args.seconds, "cpus": os.cpu_count(),
                                         "rounds": [[{**asdict(c), "rps": c.rps} for c in cells] for cells in rounds],
                                         "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
