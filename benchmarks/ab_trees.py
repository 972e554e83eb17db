"""One mesh topology from two source trees, side by side in interleaved rounds: what a change did.

    git worktree add /tmp/before <commit>
    python benchmarks/ab_trees.py --server mesh-process --before /tmp/before --rounds 5 --seconds 4

Each round starts the topology (a ``peers.py`` server name: ``mesh``, ``mesh-process``,
``mesh-workers``) from the ``--before`` tree, measures it, stops it, then does the same from this
checkout (``--after``, default), alternating which goes first each round, so that a machine
whose speed drifts while it runs (a shared VM) weighs on both alike. A tree is chosen with
PYTHONPATH (the servers start in a scratch folder, so it is not shadowed by the current one), so
both use this environment's installed dependencies. The cells, the load generators
(``wrk`` for V2 REST, ``h2load`` for V2 gRPC, closed loop), the model and the answer check are
``peers.py``'s. Printed: per round, req/s, p50 and server CPU per request of each cell (user +
system of the whole process tree, and of the instance's own process apart from its children: with
``mesh-process`` that splits the instance from its runtime child, where the gain or loss of a
change that moves work between them shows though the machine's speed drifts); then the median
over rounds of each, and after / before.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peers import (
    MODEL,
    Cell,
    Processes,
    check_server,
    encode_bodies,
    ensure_tools,
    make_model,
    measure,
    start_server,
)
from rich import box
from rich.console import Console
from rich.table import Table

SERVERS = ("mesh", "mesh-process", "mesh-workers", "mesh-workers-nobatch")


def _grid(text: str) -> tuple[tuple[str, int], ...]:
    cells = []
    for item in text.split(","):
        transport, _, connections = item.strip().partition(":")
        if transport not in ("rest", "grpc") or not connections.isdigit() or int(connections) < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: a cell is rest:N or grpc:N (N connections, N >= 1)")
        cells.append((transport, int(connections)))
    return tuple(cells)


def _tree(text: str) -> Path:
    path = Path(text).resolve()
    if not (path / "kserve_mesh" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a kserve-mesh source tree (no kserve_mesh/__init__.py)")
    return path


def run_one(server: str, tree: Path, models: Path, work: Path, bodies: dict[str, Path], entry: dict[str, Any],
            seconds: float, grid: tuple[tuple[str, int], ...]) -> list[Cell]:
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(tree)  # the servers started below import this tree's kserve_mesh
    try:
        with Processes() as procs:
            proc, rest, grpc_address = start_server(server, procs, models, work)
            check_server(server, rest, grpc_address, bodies, entry["expected"])
            return measure(server, proc, rest, grpc_address, bodies, seconds, work, grid)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="mesh-process", choices=SERVERS, help="the topology (peers.py's name)")
    parser.add_argument("--before", type=_tree, required=True, help="the source tree to compare against")
    parser.add_argument("--after", type=_tree, default=HERE.parent, help="the changed tree (default: this one)")
    parser.add_argument("--rounds", type=int, default=5, help="before/after pairs (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each cell (default %(default)s)")
    parser.add_argument("--cells", type=_grid, default=_grid("rest:1,rest:16,grpc:1,grpc:16"),
                        help="cells as transport:connections, comma separated (default %(default)s)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds above 0")
    console = Console()
    ensure_tools(console)
    arms = {"before": args.before, "after": args.after}
    results: dict[str, list[list[Cell]]] = {name: [] for name in arms}
    with tempfile.TemporaryDirectory(prefix="ab-trees-") as tmp:
        work = Path(tmp)
        # `python -m` puts the current folder first on sys.path, ahead of PYTHONPATH: the servers
        # (and their runtime children) start in a folder without a kserve_mesh package of its own.
        os.chdir(work)
        models = work / "models"
        entry = make_model(MODEL, models)
        bodies = encode_bodies(entry, work)
        for n in range(args.rounds):
            order = list(arms) if n % 2 == 0 else list(reversed(arms))
            for name in order:
                cells = run_one(args.server, arms[name], models, work, bodies, entry, args.seconds, args.cells)
                results[name].append(cells)
                console.print(f"round {n + 1} {name}: " + "  ".join(
                    f"{c.transport} c={c.connections} {c.rps:,.0f} req/s p50 {c.p50_ms:.3f} ms "
                    f"cpu {c.cpu_ms_per_request:.3f} (instance {c.own_cpu_ms_per_request:.3f})"
                    + (f" [red]{c.errors} err[/red]" if c.errors else "")
                    for c in cells))
    table = Table(title=f"{args.server}: median of {args.rounds} rounds, before -> after", box=box.SIMPLE_HEAVY)
    for column in ("cell", "req/s", "p50 ms", "CPU ms/req", "instance CPU ms/req", "after/before req/s, CPU, inst."):
        table.add_column(column, justify="left" if column == "cell" else "right")
    for i, (transport, connections) in enumerate(args.cells):
        fields = ("rps", "p50_ms", "cpu_ms_per_request", "own_cpu_ms_per_request")
        med = {name: [statistics.median(getattr(r[i], field) for r in rounds) for field in fields]
               for name, rounds in results.items()}
        before, after = med["before"], med["after"]
        cols = [f"{before[k]:{fmt}} -> {after[k]:{fmt}}" for k, fmt in enumerate((",.0f", ".3f", ".3f", ".3f"))]
        ratios = ", ".join(f"{after[k] / before[k]:.2f}" if before[k] else "-" for k in (0, 2, 3))
        table.add_row(f"{transport} c={connections}", *cols, ratios)
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
