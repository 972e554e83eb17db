#!/usr/bin/env python3
"""The eviction policy of the mesh on the cache simulator's grid, next to LRU and the offline optimum.

It runs the project's real ``CacheLedger`` with a real core policy (``kserve_mesh.core.eviction``)
inside ``tools/cachesim.py`` (the shared simulator, imported by path, never copied here: ``--cachesim``
or ``KSERVE_MESH_CACHESIM``, default ``../shared/tools/cachesim.py`` from the repository root). The
adapter drives the ledger the way the cache manager does on a miss: ``try_reserve``; if there is no
room, ``plan_eviction`` (the policy picks victims), ``release`` them, reserve again; then
``mark_loaded`` with the measured load time (the simulator's ``50 ms + 100 ms/MB``). It never
bypasses: the mesh has to hold a model to serve it, so a model the policy does not want is loaded
like any other and becomes the next victim (cachesim's W-TinyLFU and the offline references do
bypass, i.e. serve from a slot outside the capacity).

Grid (``--full``, the default): traces zipf0.8/1.0/1.2, shift, drift, tenant; sizes equal and
lognormal; capacity 1/5/10/20 % of all models' bytes (48 cells), M=10,000 models, N=1,000,000
requests. ``--quick``: M=1,000, N=30,000. Per cell: hit ratio, byte-miss ratio and total load time
of the policy, LRU and OFF (the best of cachesim's Belady and Belady-Size by hit ratio), and the
targets of issue 12:

* never below LRU on hit ratio, byte-miss ratio or load time (a 1e-9 tolerance);
* hit ratio >= 0.85 x OFF at >= 5 % capacity (Zipf 0.8: >= 0.75 x OFF), and >= 0.70 x OFF everywhere.

``--json FILE`` writes every number; ``--reference FILE`` reuses LRU/Belady results from an
earlier ``cachesim.py --json`` (or this script's ``--json``) run of the same M/N/seed, to iterate
faster. Exit status: 0, or 1 with ``--strict`` when a target is missed; 2 for a bad option or a
missing simulator. The pieces the CI test needs without the simulator (``LedgerAdapter``,
``replay``, ``zipf_trace``, ``shift_trace``) live here too.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import multiprocessing as mp
import os
import random
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kserve_mesh.core.cache import CacheLedger
from kserve_mesh.core.eviction import POLICY_NAMES, make_policy
from kserve_mesh.core.ids import ModelId

DEFAULT_CACHESIM = REPO.parent / "shared" / "tools" / "cachesim.py"
TRACES = ["zipf0.8", "zipf1.0", "zipf1.2", "shift", "drift", "tenant"]
SIZES = ["equal", "lognormal"]
CAPS = [0.01, 0.05, 0.10, 0.20]
MB = 1_000_000
TOL = 1e-9


def load_time_s(size: int) -> float:
    """cachesim's load-time model (LOAD_FIXED_S + LOAD_PER_MB_S per MB)."""
    return 0.050 + 0.100 * size / MB


class LedgerAdapter:
    """cachesim's adapter interface over the project's ``CacheLedger`` and a core policy."""

    offline = False

    def __init__(self, policy: str = "adaptive") -> None:
        self.policy = policy
        self.name = "mesh-" + policy

    def setup(self, capacity: int, sizes: Any, trace: Any = None) -> None:
        self.capacity = int(capacity)
        self.ledger = CacheLedger(max(1, self.capacity), make_policy(self.policy, max(1, self.capacity)))
        self.ids = [ModelId(str(i)) for i in range(len(sizes))]

    def on_hit(self, key: int, t: int) -> None:
        self.ledger.touch(self.ids[key], t)

    def on_miss(self, key: int, size: int, t: int) -> tuple[bool, list[int]]:
        if size > self.capacity:
            return False, []
        ledger, mid = self.ledger, self.ids[key]
        evicted: list[int] = []
        while not ledger.try_reserve(mid, size, t):
            victims = ledger.plan_eviction(size)
            if not victims:
                raise AssertionError(f"no victim for {size} bytes with {ledger.free_bytes} free")
            for victim in victims:
                ledger.release(victim)
                evicted.append(int(victim))
        ledger.mark_loaded(mid, t, load_time_s(size) * 1000.0)
        return True, evicted

    def keys(self) -> Iterable[int]:
        return [int(e.model_id) for e in self.ledger.entries()]


# -- a small simulator of our own (for CI, where tools/cachesim.py is not) ---------------------------

def zipf_trace(m: int, n: int, alpha: float, seed: int) -> list[int]:
    rng = random.Random(seed)
    weights = [1.0 / (r + 1) ** alpha for r in range(m)]
    perm = list(range(m))
    rng.shuffle(perm)
    return [perm[r] for r in rng.choices(range(m), weights=weights, k=n)]


def shift_trace(m: int, n: int, alpha: float, seed: int, phases: int = 5) -> list[int]:
    """Zipf whose hot set is replaced by random (mostly cold) models at every phase."""
    rng = random.Random(seed)
    weights = [1.0 / (r + 1) ** alpha for r in range(m)]
    perm = list(range(m))
    rng.shuffle(perm)
    out: list[int] = []
    step = n // phases
    for p in range(phases):
        out += [perm[r] for r in rng.choices(range(m), weights=weights, k=step if p < phases - 1 else n - len(out))]
        for a in range(max(1, m // 10)):
            b = rng.randrange(m)
            perm[a], perm[b] = perm[b], perm[a]
    return out


def lognormal_sizes(m: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [max(1000, round(MB * math.exp(rng.gauss(0.0, 1.0)))) for _ in range(m)]


def replay(trace: Sequence[int], sizes: Sequence[int], capacity: int, adapter: Any) -> dict[str, float]:
    """Run ``adapter`` over ``trace`` like cachesim's ``simulate`` (same metrics, same checks)."""
    adapter.setup(capacity, sizes, None)
    resident: dict[int, int] = {}
    used = hits = loads = bytes_loaded = 0
    load_s = 0.0
    for t, k in enumerate(trace):
        if k in resident:
            hits += 1
            adapter.on_hit(k, t)
            continue
        s = sizes[k]
        loads += 1
        bytes_loaded += s
        load_s += load_time_s(s)
        admitted, evicted = adapter.on_miss(k, s, t)
        for v in evicted:
            used -= resident.pop(v)  # KeyError: evicted what was not there
        if admitted:
            resident[k] = s
            used += s
        if used > capacity:
            raise AssertionError(f"{adapter.name} exceeded capacity at t={t}: {used} > {capacity}")
    if set(adapter.keys()) != set(resident):
        raise AssertionError(f"{adapter.name}: its resident set differs from the simulator's")
    n = len(trace)
    return {"hit_ratio": hits / n, "byte_miss": bytes_loaded / sum(sizes[k] for k in trace),
                "loads": loads, "load_time_s": load_s}


# -- the grid over tools/cachesim.py ---------------------------------------------------------------

def load_cachesim(path: str | os.PathLike[str] | None) -> ModuleType:
    """Import ``tools/cachesim.py`` by path; SystemExit(2) naming the path when it is missing."""
    p = Path(path or os.environ.get("KSERVE_MESH_CACHESIM") or DEFAULT_CACHESIM)
    if not p.is_file():
        raise SystemExit(f"cache_sim: the simulator {p} does not exist; give its path with --cachesim "
                         "or KSERVE_MESH_CACHESIM (it is tools/cachesim.py of the shared folder)")
    spec = importlib.util.spec_from_file_location("cachesim", p)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cachesim"] = module
    spec.loader.exec_module(module)
    return module


_SIM: ModuleType | None = None
_TRACES: dict[tuple[str, int, int, int], Any] = {}


def _init(path: str) -> None:
    global _SIM
    _SIM = load_cachesim(path)


def _run(task: tuple[str, str, float, str, int, int, int]) -> dict[str, Any]:
    tname, kind, cap, pname, m, n, seed = task
    sim = _SIM
    assert sim is not None
    key = (tname, m, n, seed)
    if key not in _TRACES:
        _TRACES.clear()
        _TRACES[key] = sim.make_trace(tname, m, n, seed)
    trace = _TRACES[key]
    sizes = sim.make_sizes(kind, m, seed)
    capacity = int(cap * int(sizes.sum()))
    policy = LedgerAdapter(pname[len("mesh-"):]) if pname.startswith("mesh-") else sim.POLICIES[pname]()
    r = sim.simulate(trace, sizes, capacity, policy)
    r.update(trace=tname, sizes=kind, cap=cap, policy=pname)
    return dict(r)


def run_grid(sim_path: str, traces: list[str], kinds: list[str], caps: list[float], policies: list[str],
             m: int, n: int, seed: int, jobs: int, reference: list[dict[str, Any]], verbose: bool) -> list[dict[str, Any]]:
    have = {(r["trace"], r["sizes"], r["cap"], r["policy"]) for r in reference}
    tasks = []
    for t in traces:
        for k in kinds:
            for c in caps:
                for p in policies:
                    if p == "Belady-Size" and k == "equal":
                        continue
                    if (t, k, c, p) not in have:
                        tasks.append((t, k, c, p, m, n, seed))
    results = [r for r in reference if r["trace"] in traces and r["sizes"] in kinds and r["cap"] in caps]
    cost = {"Belady-Size": 0, "mesh-adaptive": 1, "Belady": 2}
    tasks.sort(key=lambda a: (traces.index(a[0]), cost.get(a[3], 3)))
    t0 = time.perf_counter()
    ctx = mp.get_context("fork")
    with ctx.Pool(jobs, initializer=_init, initargs=(sim_path,)) as pool:
        for i, r in enumerate(pool.imap_unordered(_run, tasks), 1):
            results.append(r)
            if verbose:
                print(f"[{i}/{len(tasks)} {time.perf_counter() - t0:6.1f}s] {r['trace']:8} {r['sizes']:9} "
                      f"{100 * r['cap']:3.0f}% {r['policy']:14} hit={r['hit_ratio']:.4f} ({r['sec']:.1f}s)",
                      file=sys.stderr, flush=True)
    return results


def evaluate(results: list[dict[str, Any]], mine: str) -> list[dict[str, Any]]:
    """One row per cell: the policy's numbers next to LRU's and OFF's, and which targets hold."""
    cells: dict[tuple[str, str, float], dict[str, dict[str, Any]]] = {}
    for r in results:
        cells.setdefault((r["trace"], r["sizes"], r["cap"]), {})[r["policy"]] = r
    rows = []
    for (t, k, c), rs in sorted(cells.items(), key=lambda kv: (TRACES.index(kv[0][0]) if kv[0][0] in TRACES else 99,
                                                                 SIZES.index(kv[0][1]), kv[0][2])):
        if mine not in rs or "LRU" not in rs:
            continue
        offs = [rs[p] for p in ("Belady", "Belady-Size") if p in rs]
        off = max(offs, key=lambda r: r["hit_ratio"]) if offs else None
        me, lru = rs[mine], rs["LRU"]
        row: dict[str, Any] = {"trace": t, "sizes": k, "cap": c}
        for metric in ("hit_ratio", "byte_miss", "load_time_s", "loads"):
            row[metric] = me[metric]
            row["lru_" + metric] = lru[metric]
            row["off_" + metric] = off[metric] if off else None
        row["x_lru"] = me["hit_ratio"] / lru["hit_ratio"] if lru["hit_ratio"] else float("inf")
        row["x_off"] = me["hit_ratio"] / off["hit_ratio"] if off and off["hit_ratio"] else None
        misses = []
        if me["hit_ratio"] < lru["hit_ratio"] - TOL:
            misses.append("hit<LRU")
        if me["byte_miss"] > lru["byte_miss"] + TOL:
            misses.append("bytes>LRU")
        if me["load_time_s"] > lru["load_time_s"] * (1 + TOL):
            misses.append("loadtime>LRU")
        if row["x_off"] is not None:
            need = 0.70 if c < 0.05 else (0.75 if t == "zipf0.8" else 0.85)
            row["need_x_off"] = need
            if row["x_off"] < need:
                misses.append(f"<{need:.2f}xOFF")
        row["misses"] = misses
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], mine: str) -> str:
    out = [(f"| trace | sizes | cap | hit {mine} | hit LRU | hit OFF | x OFF | x LRU | byte-miss {mine} / LRU "
           f"| load h {mine} / LRU | targets |"), "|" + "---|" * 11]
    for r in rows:
        off = "{:.4f}".format(r["off_hit_ratio"]) if r["off_hit_ratio"] is not None else "-"
        xoff = "{:.3f}".format(r["x_off"]) if r["x_off"] is not None else "-"
        out.append(f"| {r['trace']} | {r['sizes']} | {100 * r['cap']:g}% | {r['hit_ratio']:.4f} | "
                   f"{r['lru_hit_ratio']:.4f} | {off} | {xoff} | {r['x_lru']:.3f} | "
                   f"{r['byte_miss']:.4f} / {r['lru_byte_miss']:.4f} | "
                   f"{r['load_time_s'] / 3600:.2f} / {r['lru_load_time_s'] / 3600:.2f} | "
                   f"{'ok' if not r['misses'] else 'MISS ' + ', '.join(r['misses'])} |")
    return "\n".join(out)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def count(pred: Any) -> int:
        return sum(1 for r in rows if pred(r))

    return {
        "cells": len(rows),
        "cells_all_targets": count(lambda r: not r["misses"]),
        "below_lru_hit": count(lambda r: "hit<LRU" in r["misses"]),
        "above_lru_bytes": count(lambda r: "bytes>LRU" in r["misses"]),
        "above_lru_load_time": count(lambda r: "loadtime>LRU" in r["misses"]),
        "below_off_target": count(lambda r: any(m.endswith("xOFF") for m in r["misses"])),
        "min_x_lru": min((r["x_lru"] for r in rows), default=None),
        "min_x_off": min((r["x_off"] for r in rows if r["x_off"] is not None), default=None),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="M=1,000 models, N=30,000 requests")
    g.add_argument("--full", action="store_true", help="M=10,000, N=1,000,000 (the default)")
    ap.add_argument("--cachesim", help="path of tools/cachesim.py (default: env KSERVE_MESH_CACHESIM, "
                    "else ../shared/tools/cachesim.py from the repository root)")
    ap.add_argument("--policy", default="adaptive", choices=[p for p in POLICY_NAMES if p != "lru"])
    ap.add_argument("-M", type=int)
    ap.add_argument("-N", type=int)
    ap.add_argument("--traces", default=",".join(TRACES))
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--caps", default=",".join(str(c) for c in CAPS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-off", action="store_true", help="skip the offline references (faster; no x OFF)")
    ap.add_argument("--check-lru", action="store_true",
                    help="also run the project's LRU through the ledger and require it to equal cachesim's LRU")
    ap.add_argument("--reference", nargs="*", default=[], help="reuse LRU/Belady results of earlier --json runs")
    ap.add_argument("--json", help="write the results and the per-cell evaluation here")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("-v", action="store_true", help="progress on stderr")
    a = ap.parse_args(argv)
    sim_path = str(Path(a.cachesim or os.environ.get("KSERVE_MESH_CACHESIM") or DEFAULT_CACHESIM))
    try:
        load_cachesim(sim_path)  # fail early and clearly
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    m, n = (1_000, 30_000) if a.quick else (10_000, 1_000_000)
    m, n = a.M or m, a.N or n
    traces, kinds = a.traces.split(","), a.sizes.split(",")
    for t in traces:
        if t not in TRACES:
            ap.error(f"unknown trace '{t}': expected some of {','.join(TRACES)}")
    for k in kinds:
        if k not in SIZES:
            ap.error(f"unknown size model '{k}': expected some of {','.join(SIZES)}")
    caps = [float(c) for c in a.caps.split(",")]
    mine = "mesh-" + a.policy
    policies = ["LRU", mine] + ([] if a.no_off else ["Belady", "Belady-Size"]) + (["mesh-lru"] if a.check_lru else [])
    reference: list[dict[str, Any]] = []
    for fn in a.reference:
        d = json.loads(Path(fn).read_text())
        if (d["M"], d["N"], d["seed"]) != (m, n, a.seed):
            ap.error(f"--reference {fn} is for M={d['M']} N={d['N']} seed={d['seed']}, not M={m} N={n} seed={a.seed}")
        reference += [r for r in d["results"] if r["policy"] in ("LRU", "Belady", "Belady-Size")]
    t0 = time.perf_counter()
    results = run_grid(sim_path, traces, kinds, caps, policies, m, n, a.seed, a.jobs, reference, a.v)
    wall = time.perf_counter() - t0
    rows = evaluate(results, mine)
    lru_mismatch = []
    if a.check_lru:
        by = {(r["trace"], r["sizes"], r["cap"], r["policy"]): r for r in results}
        lru_mismatch = [f"{t}/{k}/{c:g}" for (t, k, c, p), r in by.items()
                        if p == "mesh-lru" and by[(t, k, c, "LRU")]["hits"] != r["hits"]]
    s = summary(rows)
    print(f"## mesh eviction policy '{a.policy}' on cachesim: M={m}, N={n}, seed {a.seed} ({wall:.0f} s)\n")
    print(table(rows, a.policy))
    print()
    print("cells: {cells}; all targets met: {cells_all_targets}; hit below LRU: {below_lru_hit}; byte-miss "
          "above LRU: {above_lru_bytes}; load time above LRU: {above_lru_load_time}; below the x OFF target: "
          "{below_off_target}; min x LRU {min_x_lru}; min x OFF {min_x_off}".format(**s))
    if a.check_lru:
        print("project LRU == cachesim LRU in every cell" if not lru_mismatch
              else "project LRU differs from cachesim LRU in: " + ", ".join(lru_mismatch))
    if a.json:
        Path(a.json).write_text(json.dumps({"M": m, "N": n, "seed": a.seed, "policy": a.policy, "wall_s": wall,
                                                "results": results, "rows": rows, "summary": s,
                                                "lru_mismatch": lru_mismatch}, indent=1))
    if lru_mismatch:
        return 1
    return 1 if a.strict and s["cells_all_targets"] < s["cells"] else 0


if __name__ == "__main__":
    sys.exit(main())
