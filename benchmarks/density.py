"""How many models a mesh holds and how it serves them: the density run of issue 3 ("Scale").

    python benchmarks/density.py [--registered 100000] [--loaded 20000] [--connections 1000]
                                 [--rate 1000] [--duration 20] [--json OUT] [--quick]

One run starts a local etcd and 2 mesh instances (in-process runtime) on 127.0.0.1 ephemeral
ports, then, in order:

1. generator check: ``wrk`` closed loop on ``/v2/health/live`` (a no-op endpoint) over both
   instances, to show what the generator can push and what it costs per request;
2. registration: ``--registered`` ``string`` models through the management gRPC API
   (``registerModel``, ``--in-flight`` calls in flight, spread over both instances): the
   registration rate, and the instances' memory (VmRSS) before and after, i.e. the memory per
   registered-but-unloaded model (each instance holds the whole registry view). A warm-up of 1 %
   is registered before the "before" reading, so one-off allocations are not counted per model;
3. loading: one V2 REST request for each of the first ``--loaded`` models, half entering each
   instance; placement decides where each copy lands (the split is reported); every answer is
   checked to come from the model asked for;
4. open loop: ``--connections`` connections (half to each instance) offering ``--rate`` requests/s
   in total on a fixed schedule for ``--duration`` s, each to a model drawn uniformly from the
   loaded ones (so about half are forwarded to the instance holding the model): p50/p90/p99;
5. closed loop: the same connections sending as fast as answers come back: throughput.

It prints a table of every number with the targets (p99 < 10 ms at the offered load, <= 2 KB per
registered model, >= 1,000 registrations/s, zero errors) and PASS/FAIL, and writes JSON with
``--json``. Everything it starts is stopped at the end, on Ctrl-C, SIGTERM or an error.
``--quick`` divides every count by 10 (a smoke run of under a minute; ``benchmarks/test_density.py``).

Needs ``wrk`` (``apt-get install wrk``): a load generator in C, so that generating 1,000 requests/s
costs a few percent of one core instead of competing with the servers for the 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import logging
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if importlib.util.find_spec("kserve_mesh") is None:  # run from a checkout without an install
    sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402

from density_clients import (  # noqa: E402
    ClientFailed,
    Outcome,
    Wrk,
    WrkResult,
    children_cpu,
    encode_registrations,
    load_models,
    register_models,
    wrk_binary,
)
from density_mesh import CpuWatch, DensityMesh, loadavg, model_id, write_model_files  # noqa: E402
from density_report import Report, render  # noqa: E402
from procs import ProcessFailed  # noqa: E402

log = logging.getLogger("benchmarks.density")

STRING_MODEL_BYTES = 2048 + len(model_id(0))  # what the runtime reports for one string model
SETTLE_S = 2.0  # pause before a memory reading, so in-flight work (watch events, records) is done
VISIBLE_TIMEOUT_S = 300.0
CLI_LAUNCHER = (sys.executable, "-m", "kserve_mesh.cli")


def _percentiles(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {"p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    p50, p90, p99 = (float(v) for v in np.percentile(np.asarray(ms), [50, 90, 99]))
    return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": float(max(ms))}


def _outcome(o: Outcome) -> dict[str, Any]:
    return {"calls": o.calls, "seconds": o.seconds, "rate": o.rate, "errors": o.errors,
            "first_error": o.first_error, "client_cpu_s": o.client_cpu_s, **_percentiles(o.latencies_ms)}


def _wrk(w: WrkResult) -> dict[str, Any]:
    return {"calls": w.requests, "seconds": w.seconds, "rate": w.rate, "errors": w.errors,
            "error_kinds": w.error_kinds, "late": w.late, "late_max_ms": w.late_max_ms, "p50_ms": w.p50_ms,
            "p90_ms": w.p90_ms, "p99_ms": w.p99_ms, "p999_ms": w.p999_ms, "max_ms": w.max_ms, "mean_ms": w.mean_ms}


def wait_visible(mesh: DensityMesh, count: int, timeout_s: float = VISIBLE_TIMEOUT_S) -> float:
    """Wait until every instance counts ``count`` registered models; returns the seconds waited."""
    began = time.monotonic()
    while True:
        seen = [inst.registered() for inst in mesh.instances]
        if all(n >= count for n in seen):
            return time.monotonic() - began
        mesh.check_alive()
        if time.monotonic() - began > timeout_s:
            raise ProcessFailed(f"instances saw {seen} registered models, not {count}, after {timeout_s:g} s")
        time.sleep(0.2)


def run_wrk(mesh: DensityMesh, args: argparse.Namespace, *, mode: str, connections: int, seconds: float,
            rate: float, seed: int) -> tuple[WrkResult, dict[str, float]]:
    targets = [inst.rest.removeprefix("http://") for inst in mesh.instances]
    watch = CpuWatch(mesh, children_cpu)
    wrk_cpu0 = children_cpu()
    wrk = Wrk(targets, mode=mode, connections=connections, seconds=seconds, rate_per_s=rate, models=args.loaded,
              prefix="d", start_ms=args.schedule_start_ms, seed=seed)
    try:
        result = wrk.result()
    finally:
        wrk.stop()
    cpu = watch.stop()
    cpu["wrk_cpu_s"] = round(children_cpu() - wrk_cpu0, 3)  # wrk has been reaped: its time is counted
    mesh.check_alive()
    return result, cpu


def measure(args: argparse.Namespace, console: Console, work: Path,
            launcher: tuple[str, ...] = CLI_LAUNCHER) -> Report:
    """The whole run; ``launcher`` starts an instance (an experiment may wrap the CLI, e.g. with patches)."""
    n_inst = args.instances
    share = -(-args.loaded // n_inst)  # the even share of loaded copies per instance
    # Room for twice the even share: placement may split unevenly, and no copy should be evicted.
    capacity = args.capacity_bytes or max(64 << 20, 2 * share * STRING_MODEL_BYTES)
    report = Report(config={
        "registered": args.registered, "loaded": args.loaded, "connections": args.connections, "rate": args.rate,
        "duration_s": args.duration, "instances": n_inst, "in_flight": args.in_flight,
        "load_in_flight": args.load_in_flight, "capacity_bytes": capacity, "etcd_fsync": not args.etcd_no_fsync,
        "quick": args.quick, "command": " ".join(["python", "benchmarks/density.py", *sys.argv[1:]]),
    }, machine={"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_start": loadavg(),
                "date": datetime.datetime.now().isoformat(timespec="seconds")})

    console.print(f"writing {args.loaded:,} string model files")
    files = write_model_files(work / "models", args.loaded)
    ids = [model_id(i) for i in range(args.registered)]
    paths = [str(files[i % len(files)]) for i in range(args.registered)]
    requests = encode_registrations(ids, paths)

    console.print(f"starting etcd and {n_inst} instances (capacity {capacity / (1 << 20):.0f} MiB each)")
    with DensityMesh(n_inst, capacity, work / "logs", max_loading_concurrency=args.max_loading_concurrency,
                     etcd_fsync=not args.etcd_no_fsync, launcher=launcher, models_dir=work / "models") as mesh:
        mem: dict[str, dict[str, Any]] = {i.name: {"start": i.rss()} for i in mesh.instances}
        mem["etcd"] = {"start": mesh.etcd_rss()}

        def read_mem(key: str) -> None:
            for inst in mesh.instances:
                mem[inst.name][key] = inst.rss()
            mem["etcd"][key] = mesh.etcd_rss()

        # 1. the generator on a no-op endpoint
        console.print("generator check: wrk on /v2/health/live")
        gen, cpu = run_wrk(mesh, args, mode="health", connections=min(args.connections, 64), seconds=3, rate=0,
                           seed=1)
        wrk_cpu_s = cpu.pop("wrk_cpu_s")
        report.phases["generator_check"] = {**_wrk(gen), "cpu_cores": cpu, "wrk_cpu_s": wrk_cpu_s,
                                            "generator_requests_per_cpu_s": gen.requests / max(wrk_cpu_s, 1e-9)}

        # 2. registration
        warm = max(100, args.registered // 100)
        grpc_targets = [inst.grpc for inst in mesh.instances]
        console.print(f"registering {warm:,} models (warm-up, not timed)")
        warm_out = asyncio.run(register_models(grpc_targets, requests[:warm], args.in_flight))
        wait_visible(mesh, warm)
        time.sleep(SETTLE_S)
        read_mem("before_register")
        console.print(f"registering {args.registered - warm:,} models, {args.in_flight} calls in flight")
        watch = CpuWatch(mesh, children_cpu)
        reg = asyncio.run(register_models(grpc_targets, requests[warm:], args.in_flight))
        visible_s = wait_visible(mesh, args.registered)
        cpu = watch.stop()
        time.sleep(SETTLE_S)
        read_mem("after_register")
        timed = args.registered - warm
        for name, m in mem.items():
            m["bytes_per_registered_model"] = (m["after_register"] - m["before_register"]) / timed
        report.phases["register"] = {**_outcome(reg), "errors": reg.errors + warm_out.errors, "warmup": warm,
                                     "visible_everywhere_after_s": visible_s, "cpu_cores": cpu,
                                     "rate_until_visible": timed / (reg.seconds + visible_s)}
        mesh.check_alive()

        # 3. loading
        console.print(f"loading {args.loaded:,} models (one request each, {args.load_in_flight} in flight)")
        watch = CpuWatch(mesh, children_cpu)
        rest_targets = [inst.rest_hostport for inst in mesh.instances]
        load = asyncio.run(load_models(rest_targets, ids[:args.loaded], args.load_in_flight))
        cpu = watch.stop()
        split = {inst.name: inst.copies() for inst in mesh.instances}
        time.sleep(SETTLE_S)
        read_mem("after_load")
        for inst in mesh.instances:
            m = mem[inst.name]
            m["copies"] = split[inst.name]
            m["bytes_per_loaded_copy"] = (m["after_load"] - m["after_register"]) / max(split[inst.name], 1)
        mem["etcd"]["bytes_per_loaded_copy"] = 0
        report.phases["load"] = {**_outcome(load), "split": split, "copies": sum(split.values()), "cpu_cores": cpu}
        mesh.check_alive()

        # 4. open loop at the offered rate
        console.print(f"open loop: {args.rate:,} req/s offered over {args.connections:,} connections for "
                      f"{args.duration:g} s")
        ol, cpu = run_wrk(mesh, args, mode="infer", connections=args.connections, seconds=args.duration,
                          rate=args.rate, seed=2)
        # Requests enter each instance alike, for models drawn uniformly: the share that enters an
        # instance without a copy (and is forwarded) is 1 - copies / (models x instances).
        forwarded = 1 - sum(split.values()) / (args.loaded * n_inst)
        report.phases["open_loop"] = {**_wrk(ol), "offered_rps": float(args.rate), "wrk_cpu_s": cpu.pop("wrk_cpu_s"),
                                      "cpu_cores": cpu, "forwarded_share": forwarded}

        # 5. closed loop
        console.print(f"closed loop: {args.connections:,} connections for {args.duration:g} s")
        cl, cpu = run_wrk(mesh, args, mode="infer", connections=args.connections, seconds=args.duration, rate=0,
                          seed=3)
        report.phases["closed_loop"] = {**_wrk(cl), "wrk_cpu_s": cpu.pop("wrk_cpu_s"), "cpu_cores": cpu}
        read_mem("end")
        report.memory = mem
        report.machine["loadavg_end"] = loadavg()
    report.judge()
    return report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--registered", type=int, default=100_000, help="models to register (default 100,000)")
    p.add_argument("--loaded", type=int, default=20_000, help="of those, models to load (default 20,000)")
    p.add_argument("--connections", type=int, default=1000, help="client connections (default 1,000)")
    p.add_argument("--rate", type=int, default=1000, help="requests/s offered in the open loop (default 1,000)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of each latency phase (default 20)")
    p.add_argument("--json", type=Path, default=None, help="write every number here as JSON")
    p.add_argument("--quick", action="store_true", help="every count / 10 (a smoke run)")
    p.add_argument("--instances", type=int, default=2, help="mesh instances (default 2)")
    p.add_argument("--in-flight", type=int, default=256, help="registerModel calls in flight (default 256)")
    p.add_argument("--load-in-flight", type=int, default=64, help="loading requests in flight (default 64)")
    p.add_argument("--max-loading-concurrency", type=int, default=8, help="loads at once per instance (default 8)")
    p.add_argument("--capacity-bytes", type=int, default=0, help="cache capacity per instance (default: room for "
                   "twice an even share of the loaded models, at least 64 MiB)")
    p.add_argument("--schedule-start-ms", type=int, default=1000,
                   help="open loop: start the schedule this long after wrk starts, once connections are open")
    p.add_argument("--etcd-no-fsync", action="store_true", help="run etcd with --unsafe-no-fsync")
    return p


def _check(args: argparse.Namespace) -> None:
    if args.quick:
        for name in ("registered", "loaded", "connections", "rate"):
            setattr(args, name, max(1, getattr(args, name) // 10))
        args.duration = max(5.0, args.duration / 10)  # long enough for a few seconds on schedule
    positive = ("registered", "loaded", "connections", "rate", "duration", "instances", "in_flight",
                "load_in_flight", "max_loading_concurrency")
    for name in positive:
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.loaded > args.registered:
        raise SystemExit(f"--loaded ({args.loaded}) cannot exceed --registered ({args.registered})")
    if args.registered >= 1_000_000:
        raise SystemExit("--registered must be below 1,000,000 (model ids have 6 digits)")
    if args.connections < args.instances:
        raise SystemExit(f"--connections must be at least --instances ({args.instances})")
    wrk_binary()


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None, launcher: tuple[str, ...] = CLI_LAUNCHER) -> int:
    args = _parser().parse_args(argv)
    _check(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kserve-mesh-density-") as tmp:
        work = Path(tmp)
        (work / "logs").mkdir()
        try:
            report = measure(args, console, work, launcher)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted; every process was stopped[/yellow]")
            return 130
        except (ProcessFailed, ClientFailed) as exc:
            console.print(f"[red]density run failed:[/red] {exc}")
            return 1
    report.machine["seconds"] = round(time.monotonic() - began, 1)
    render(console, report)
    if args.json is not None:
        report.write_json(args.json)
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
