"""What a density run measured, judged against the issue's targets, as a table and as JSON.

Targets (issue 3, "Scale"): p99 < 10 ms at the offered load (open loop); at most 2 KB of instance
memory per registered model (the worst instance); at least 1,000 registrations/s; and no failed
request anywhere. Everything else is reported for context: the split of loaded copies, memory
per instance, the generator's own cost and whether it kept its schedule, and how much CPU the
mesh, etcd, the generator and other processes on the machine took in each phase.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

TARGET_P99_MS = 10.0
TARGET_BYTES_PER_MODEL = 2048
TARGET_REGISTRATIONS_PER_S = 1000.0
MiB = 1 << 20


@dataclass
class Check:
    name: str
    value: float
    unit: str
    target: str
    ok: bool


@dataclass
class Report:
    """Every number of a run, grouped by phase; ``checks`` holds the verdicts."""

    config: dict[str, Any]
    machine: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)  # instance/etcd -> readings
    checks: list[Check] = field(default_factory=list)

    def judge(self) -> None:
        reg = self.phases["register"]
        open_loop = self.phases["open_loop"]
        per_model = max(m["bytes_per_registered_model"] for k, m in self.memory.items() if k != "etcd")
        errors = sum(int(p.get("errors", 0)) for p in self.phases.values())
        self.checks = [
            Check(f"p99 latency at {open_loop['offered_rps']:,.0f} req/s offered", open_loop["p99_ms"], "ms",
                  f"< {TARGET_P99_MS:g} ms", open_loop["p99_ms"] < TARGET_P99_MS),
            Check("instance memory per registered model (worst instance)", per_model, "B",
                  f"<= {TARGET_BYTES_PER_MODEL:,} B", per_model <= TARGET_BYTES_PER_MODEL),
            Check("registrations/s", reg["rate"], "/s", f">= {TARGET_REGISTRATIONS_PER_S:,.0f}/s",
                  reg["rate"] >= TARGET_REGISTRATIONS_PER_S),
            Check("failed requests, all phases", errors, "", "0", errors == 0),
        ]

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "machine": self.machine, "phases": self.phases, "memory": self.memory,
                "checks": [c.__dict__ for c in self.checks], "pass": self.passed}

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def _verdict(ok: bool) -> str:
    return "[green]PASS[/green]" if ok else "[red]FAIL[/red]"


def _ms(v: float) -> str:
    return f"{v:,.2f}"


def render(console: Console, r: Report) -> None:
    cfg, ph = r.config, r.phases
    title = (f"kserve-mesh density: {cfg['registered']:,} registered, {cfg['loaded']:,} loaded string models, "
             f"{cfg['instances']} instances, {r.machine.get('cpus', '?')} CPUs"
             + (" (--quick)" if cfg.get("quick") else ""))

    targets = Table(title=title, box=box.SIMPLE_HEAVY)
    for col, just in (("target", "left"), ("measured", "right"), ("limit", "right"), ("", "center")):
        targets.add_column(col, justify=just)  # type: ignore[arg-type]
    for c in r.checks:
        value = f"{c.value:,.0f}" if c.unit in ("B", "/s", "") else f"{c.value:,.2f}"
        targets.add_row(c.name, f"{value} {c.unit}".strip(), c.target, _verdict(c.ok))
    console.print(targets)

    phases = Table(title="phases", box=box.SIMPLE_HEAVY)
    for col in ("phase", "calls", "seconds", "rate /s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"):
        phases.add_column(col, justify="left" if col == "phase" else "right")
    cpu = Table(title="CPU cores used, mean over each phase ('others': processes outside this run)",
                box=box.SIMPLE_HEAVY)
    procs = list(next((p["cpu_cores"] for p in ph.values() if p.get("cpu_cores")), {}))
    for col in ("phase", *procs, "total"):
        cpu.add_column(col, justify="left" if col == "phase" else "right")
    names = {"generator_check": "generator check: wrk on /v2/health/live (closed loop)",
             "register": "register (gRPC registerModel)", "load": "load (one V2 REST request per model)",
             "open_loop": f"open loop: {cfg['rate']:,} req/s offered, {cfg['connections']:,} conns",
             "closed_loop": f"closed loop: {cfg['connections']:,} conns, as fast as they go"}
    for key, label in names.items():
        p = ph.get(key)
        if p is None:
            continue
        phases.add_row(label, f"{p.get('calls', 0):,}", f"{p.get('seconds', 0):.2f}", f"{p.get('rate', 0):,.0f}",
                       _ms(p.get("p50_ms", 0)), _ms(p.get("p90_ms", 0)), _ms(p.get("p99_ms", 0)),
                       _ms(p.get("max_ms", 0)), str(p.get("errors", 0)))
        cores = p.get("cpu_cores", {})
        cpu.add_row(key, *(f"{cores.get(k, 0):.2f}" for k in procs), f"{sum(cores.values()):.2f}")
    console.print(phases)
    console.print(cpu)

    mem = Table(title="memory (VmRSS)", box=box.SIMPLE_HEAVY)
    for col in ("process", "at start MiB", "before registrations MiB", "after registrations MiB",
                "B / registered model", "copies loaded", "after loading MiB", "B / loaded copy", "at end MiB"):
        mem.add_column(col, justify="left" if col == "process" else "right")
    for name, m in r.memory.items():
        mem.add_row(name, f"{m['start'] / MiB:,.1f}", f"{m['before_register'] / MiB:,.1f}",
                    f"{m['after_register'] / MiB:,.1f}", f"{m['bytes_per_registered_model']:,.0f}",
                    f"{m['copies']:,}" if "copies" in m else "", f"{m['after_load'] / MiB:,.1f}",
                    f"{m['bytes_per_loaded_copy']:,.0f}" if m.get("copies") else "", f"{m['end'] / MiB:,.1f}")
    console.print(mem)

    notes = []
    gen = ph.get("generator_check", {})
    if gen:
        notes.append(f"generator: wrk (C) in its own process; on the no-op endpoint it pushed {gen['rate']:,.0f} req/s "
                     f"(limited by the Python servers) at {gen['generator_requests_per_cpu_s']:,.0f} requests per "
                     f"CPU-second of its own")
    ol = ph.get("open_loop", {})
    if ol:
        notes.append(f"open loop: offered {ol['offered_rps']:,.0f} req/s, achieved {ol['rate']:,.0f} req/s; "
                     f"{ol['late']:,} requests sent late (> 1 ms behind schedule, worst {ol['late_max_ms']:.1f} ms); "
                     f"{ol['forwarded_share']:.0%} of requests entered an instance without the model (forwarded)")
    load = ph.get("load", {})
    if load:
        split = ", ".join(f"{k} {v:,}" for k, v in load["split"].items())
        notes.append(f"loaded copies per instance: {split}")
    notes.append(f"machine: load average {r.machine.get('loadavg_start', '?')} at start, "
                 f"{r.machine.get('loadavg_end', '?')} at end; 'others' in the CPU column is CPU used by "
                 "processes outside this run (the machine is shared)")
    for n in notes:
        console.print(f"- {n}")
    console.print(("[green]all targets met[/green]" if r.passed else "[red]some targets missed[/red]"))
