"""Memory churn: does the runtime process give memory back after unloads? (issue 16)

    python benchmarks/memory_churn.py [--cycles 2000] [--resident 4] [--out benchmarks/results/memory-churn]

Makes scikit-learn random forests of three sizes (three model ids each, like ``examples/make_models.py``
but bigger), then drives one runtime process per variant (``python -m kserve_mesh.runtime.server``,
its own handle, stopped by it) through the same seeded churn: each cycle loads a model that is not
loaded and, past ``--resident`` loaded models, unloads the one loaded longest ago (a cache under
pressure). Variants run side by side in the same run (interleaved cycle by cycle, so load from the
machine falls on all alike):

- ``glibc``: ``--no-release-memory`` (what the runtime did before issue 16);
- ``glibc+trim``: the default, ``malloc_trim(0)`` after unloads;
- ``jemalloc``: ``LD_PRELOAD`` of Debian's ``libjemalloc2`` (skipped when it is not installed), no trim;
- ``jemalloc-0ms``: the same told to return freed pages at once (``MALLOC_CONF=dirty_decay_ms:0,
  muzzy_decay_ms:0``), what ``--runtime-allocator jemalloc`` runs.

Every ``--sample-every`` cycles it reads ``runtimeStatus`` (residentBytes, baselineBytes) and adds up
the sizes the runtime reported for the models it holds (what the mesh's ledger accounts). Output:
``OUT.png`` (RSS above baseline and accounted bytes over the cycles, per variant), ``OUT.json`` (every
sample) and a table on stdout: means over the run of RSS above baseline, of the accounted sizes and
of the unaccounted bytes (RSS - baseline - accounted), its 95th percentile, and the peak RSS.
``--from-json OUT.json`` redraws the table and plot of an earlier run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kserve_mesh.core.records import ModelInfo
from kserve_mesh.runtime.grpc_client import GrpcRuntimeClient

MiB = 1 << 20
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
SIZES = {"rf-small": 10, "rf-medium": 40, "rf-large": 100}  # trees per forest


def make_forests(out: Path, copies: int = 3) -> list[tuple[str, str]]:
    """Random forests of a few sizes (``copies`` model ids per size); returns (id, path) pairs."""
    import joblib
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 16))
    y = (x[:, 0] + x[:, 1] * x[:, 2] + rng.normal(scale=0.5, size=20000) > 0).astype(int)
    models = []
    for name, trees in SIZES.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "model.joblib"
        if not path.exists():
            joblib.dump(RandomForestClassifier(n_estimators=trees, random_state=0, n_jobs=1).fit(x, y), path)
        models += [(f"{name}-{i}", str(folder)) for i in range(copies)]
    return models


@dataclass
class Variant:
    name: str
    flags: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    client: GrpcRuntimeClient | None = None
    loaded: dict[str, int] = field(default_factory=dict)  # model id -> reported size, oldest first
    samples: list[dict[str, int]] = field(default_factory=list)


def variants(with_jemalloc: bool) -> list[Variant]:
    out = [Variant("glibc", ["--no-release-memory"]), Variant("glibc+trim", ["--release-memory"])]
    if with_jemalloc and os.path.exists(JEMALLOC):
        out.append(Variant("jemalloc", ["--no-release-memory"], {"LD_PRELOAD": JEMALLOC}))
        # jemalloc told to return freed pages at once (its default keeps them ~10 s)
        out.append(Variant("jemalloc-0ms", ["--no-release-memory"],
                           {"LD_PRELOAD": JEMALLOC, "MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0"}))
    return out


def start(v: Variant, models_dir: Path) -> None:
    env = {**os.environ, **v.env, "PYTHONPATH": str(ROOT)}
    v.proc = subprocess.Popen(
        [sys.executable, "-m", "kserve_mesh.runtime.server", "--port", "0", "--capacity-bytes", "8Gi",
         "--log-level", "WARNING", "--allow-local-path", str(models_dir), *v.flags],
        stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert v.proc.stdout is not None
    line = v.proc.stdout.readline().strip()
    if "listening on" not in line:
        raise RuntimeError(f"runtime {v.name} did not start: {line!r}")
    v.client = GrpcRuntimeClient(line.rsplit(" ", 1)[-1], deadline_s=60)


def stop(v: Variant) -> None:
    if v.proc is not None and v.proc.poll() is None:
        v.proc.terminate()
        try:
            v.proc.wait(20)
        except subprocess.TimeoutExpired:
            v.proc.kill()
            v.proc.wait(5)


async def sample(v: Variant, cycle: int, t0: float) -> None:
    assert v.client is not None
    st = await v.client.runtime_status()
    accounted = sum(v.loaded.values())
    v.samples.append({"cycle": cycle, "t_ms": int((time.monotonic() - t0) * 1000), "resident": st.resident_bytes,
                      "baseline": st.baseline_bytes, "accounted": accounted,
                      "unaccounted": st.resident_bytes - st.baseline_bytes - accounted})


async def churn(vs: list[Variant], models: list[tuple[str, str]], cycles: int, resident: int,
                every: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    paths = dict(models)
    t0 = time.monotonic()
    for v in vs:
        await sample(v, 0, t0)
    order: list[str] = []
    for cycle in range(1, cycles + 1):
        model_id = rng.choice([m for m in paths if m not in order])
        order.append(model_id)
        victim = order.pop(0) if len(order) > resident else None
        for v in vs:
            assert v.client is not None
            if victim is not None:
                await v.client.unload_model(victim)
                del v.loaded[victim]
            result = await v.client.load_model(model_id, ModelInfo("sklearn", paths[model_id]))
            v.loaded[model_id] = result.size_bytes
            if cycle % every == 0 or cycle == cycles:
                await sample(v, cycle, t0)
        if cycle % max(1, cycles // 10) == 0:
            print(f"  cycle {cycle}/{cycles}: " + ", ".join(
                f"{v.name} {v.samples[-1]['resident'] / MiB:.0f} MiB" for v in vs), flush=True)


def summary(samples: list[dict[str, int]]) -> dict[str, float]:
    """Means over the run (what is loaded changes every cycle, so one sample says little)."""
    s = samples[1:] or samples
    above = sorted((x["resident"] - x["baseline"]) / MiB for x in s)
    unacc = sorted(x["unaccounted"] / MiB for x in s)
    return {
        "mean_rss_above_baseline_mib": sum(above) / len(above),
        "peak_rss_mib": max(x["resident"] for x in s) / MiB,
        "mean_accounted_mib": sum(x["accounted"] for x in s) / len(s) / MiB,
        "mean_unaccounted_mib": sum(unacc) / len(unacc),
        "p95_unaccounted_mib": unacc[int(0.95 * (len(unacc) - 1))],
        "final_rss_mib": s[-1]["resident"] / MiB,
    }


def _rolling(values: list[float], window: int = 10) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot(samples: dict[str, list[dict[str, int]]], path: Path, title: str) -> None:
    """Two panels, rolling means over 10 samples: RSS above baseline (and the accounted sizes), and
    the unaccounted bytes (RSS - baseline - accounted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    for name, s in samples.items():
        cyc = [x["cycle"] for x in s]
        line, = top.plot(cyc, _rolling([(x["resident"] - x["baseline"]) / MiB for x in s]), label=f"{name}: RSS - baseline")
        top.plot(cyc, _rolling([x["accounted"] / MiB for x in s]), ls=":", lw=0.9, color=line.get_color(),
                 label=f"{name}: accounted (reported sizes)")
        bottom.plot(cyc, _rolling([x["unaccounted"] / MiB for x in s]), color=line.get_color(), label=name)
    top.set_ylabel("MiB (rolling mean of 10 samples)")
    top.set_title(title, fontsize=10)
    bottom.axhline(0, color="black", lw=0.6)
    bottom.set_ylabel("unaccounted MiB\n(RSS - baseline - accounted)")
    bottom.set_xlabel("load/unload cycle")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(data: dict, out: Path) -> dict[str, dict[str, float]]:
    """Summary table, JSON and plot of one run's samples."""
    samples = data["samples"]
    results = {name: summary(s) for name, s in samples.items()}
    data["summary"] = results
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    plot(samples, out.with_suffix(".png"), f"Runtime process memory over {data['cycles']} load/unload cycles "
         f"({data.get('models', 9)} random forests, {data['resident_models']} resident)")
    print(f"\n{'variant':<13} {'mean RSS-baseline':>17} {'mean accounted':>15} {'mean unaccounted':>17} "
          f"{'p95 unaccounted':>16} {'peak RSS':>9}")
    for name, r in results.items():
        print(f"{name:<13} {r['mean_rss_above_baseline_mib']:>13.0f} MiB {r['mean_accounted_mib']:>11.0f} MiB "
              f"{r['mean_unaccounted_mib']:>13.0f} MiB {r['p95_unaccounted_mib']:>12.0f} MiB {r['peak_rss_mib']:>5.0f} MiB")
    print(f"\nplot: {out.with_suffix('.png')}  numbers: {out.with_suffix('.json')}")
    return results


async def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="memory-churn-"))
    models = make_forests(work / "models")
    vs = variants(not args.no_jemalloc)
    try:
        for v in vs:
            start(v, work / "models")
        for v in vs:
            assert v.client is not None
            await v.client.wait_until_ready(30)
        await churn(vs, models, args.cycles, args.resident, args.sample_every)
    finally:
        for v in vs:
            if v.client is not None:
                await v.client.close()
            stop(v)
        shutil.rmtree(work, ignore_errors=True)
    data = {"cycles": args.cycles, "resident_models": args.resident, "models": len(models),
            "samples": {v.name: v.samples for v in vs}}
    return report(data, Path(args.out))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=2000)
    p.add_argument("--resident", type=int, default=4, help="models kept loaded before the oldest is unloaded")
    p.add_argument("--sample-every", type=int, default=10)
    p.add_argument("--no-jemalloc", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory-churn"))
    p.add_argument("--from-json", type=Path, default=None, help="redraw the table and plot of an earlier run")
    args = p.parse_args(argv)
    if args.from_json is not None:
        report(json.loads(args.from_json.read_text()), Path(args.out))
        return 0
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
