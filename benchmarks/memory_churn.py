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
- ``jemalloc``: ``LD_PRELOAD`` of Debian's ``libjemalloc2`` (skipped when it is not installed), no trim.

Every ``--sample-every`` cycles it reads ``runtimeStatus`` (residentBytes, baselineBytes) and adds up
the sizes the runtime reported for the models it holds (what the mesh's ledger accounts). Output:
``OUT.png`` (RSS above baseline and accounted bytes over the cycles, per variant), ``OUT.json`` (every
sample) and a table on stdout: final and peak RSS, unaccounted bytes (RSS - baseline - accounted) at
the end, and its growth over the second half of the run (drift per 1,000 cycles).
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


def summary(v: Variant) -> dict[str, float]:
    s = v.samples
    half = [x for x in s if x["cycle"] >= s[-1]["cycle"] // 2]
    span = max(1, half[-1]["cycle"] - half[0]["cycle"])
    return {
        "final_rss_mib": s[-1]["resident"] / MiB,
        "peak_rss_mib": max(x["resident"] for x in s) / MiB,
        "baseline_mib": s[-1]["baseline"] / MiB,
        "accounted_mib": s[-1]["accounted"] / MiB,
        "unaccounted_mib": s[-1]["unaccounted"] / MiB,
        "drift_mib_per_1000_cycles": (half[-1]["unaccounted"] - half[0]["unaccounted"]) / MiB * 1000 / span,
    }


def plot(vs: list[Variant], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    for v in vs:
        cyc = [x["cycle"] for x in v.samples]
        line, = ax.plot(cyc, [(x["resident"] - x["baseline"]) / MiB for x in v.samples],
                        label=f"{v.name}: RSS - baseline")
        ax.plot(cyc, [x["unaccounted"] / MiB for x in v.samples], ls=":", color=line.get_color(),
                label=f"{v.name}: unaccounted (RSS - baseline - accounted)")
    first = vs[0]
    ax.plot([x["cycle"] for x in first.samples], [x["accounted"] / MiB for x in first.samples], color="black",
            lw=0.8, alpha=0.6, label="accounted (sum of reported model sizes)")
    ax.set_xlabel("load/unload cycle")
    ax.set_ylabel("MiB")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


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
    results = {v.name: summary(v) for v in vs}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"cycles": args.cycles, "resident_models": args.resident, "summary": results,
         "samples": {v.name: v.samples for v in vs}}, indent=1))
    plot(vs, out.with_suffix(".png"), f"Runtime process memory over {args.cycles} load/unload cycles "
         f"({len(models)} random forests, {args.resident} resident)")
    print(f"\n{'variant':<12} {'final RSS':>10} {'peak RSS':>10} {'baseline':>9} {'accounted':>10} "
          f"{'unaccounted':>12} {'drift/1000 cycles':>18}")
    for name, r in results.items():
        print(f"{name:<12} {r['final_rss_mib']:>7.0f} MiB {r['peak_rss_mib']:>6.0f} MiB {r['baseline_mib']:>5.0f} MiB "
              f"{r['accounted_mib']:>6.0f} MiB {r['unaccounted_mib']:>8.0f} MiB {r['drift_mib_per_1000_cycles']:>13.1f} MiB")
    print(f"\nplot: {out.with_suffix('.png')}  numbers: {out.with_suffix('.json')}")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=2000)
    p.add_argument("--resident", type=int, default=4, help="models kept loaded before the oldest is unloaded")
    p.add_argument("--sample-every", type=int, default=10)
    p.add_argument("--no-jemalloc", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory-churn"))
    asyncio.run(run(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
