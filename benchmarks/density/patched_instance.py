"""An instance with proposed mesh fixes patched in, and stall probes: for ``density_experiment.py``.

Started instead of ``python -m kserve_mesh.cli``; it patches ``kserve_mesh`` in this process only,
then runs the CLI. It exists to measure fixes before they land in the mesh (drop it once they have).
``DENSITY_PATCH`` (comma-separated) picks the patches:

- ``lru``: ``CacheLedger.lru_time_ms`` computed at most once a second (the router asks for this
  instance's record, hence the O(loaded copies) scan, on every forwarded request);
- ``chunk``: ``Duties.scale_up`` and ``Duties.janitor`` yield to the event loop every 256 items
  instead of scanning 10,000 copies or 100,000 records in one go;
- ``freeze``: ``gc.freeze()`` every 5 s, so full collections no longer walk the registry.

``DENSITY_LAG=PREFIX`` writes probes: ``PREFIX.<instance>`` event-loop stalls over 5 ms,
``PREFIX.gc.<pid>`` garbage-collection passes over 5 ms (all full ones), ``PREFIX.duties.<pid>``
the wall time of every duty round.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import time
from dataclasses import replace
from typing import Any

CHUNK = 256


def patch_lru() -> None:
    from kserve_mesh.core import cache

    original = cache.CacheLedger.lru_time_ms
    memo: dict[int, tuple[float, Any]] = {}

    def lru_time_ms(self: Any, default: int) -> int:
        now = time.monotonic()
        hit = memo.get(id(self))
        if hit is None or now - hit[0] >= 1.0:
            hit = memo[id(self)] = (now, original(self, None))
        return hit[1] if hit[1] is not None else default

    cache.CacheLedger.lru_time_ms = lru_time_ms  # type: ignore[method-assign]


def patch_chunk() -> None:
    from kserve_mesh.core.copies import CopyBounds, desired_copies
    from kserve_mesh.core.records import CopyState
    from kserve_mesh.mesh import duties

    async def scale_up(self: Any) -> None:  # Duties.scale_up, yielding every CHUNK copies
        inst = self.inst
        if inst.cluster is None or inst.shutting_down:
            return
        for n, entry in enumerate(inst.cache.ledger.entries()):
            if n % CHUNK == CHUNK - 1:
                await asyncio.sleep(0)
            rec = inst.registry.models.get(entry.model_id)
            if entry.state is not CopyState.LOADED or rec is None:
                continue
            holders = self._live_holders(rec)
            if not holders or holders[0] != inst.instance_id:
                continue
            copies = len(holders)
            want = desired_copies(copies=copies, rpm=inst.model_rpm(entry.model_id) * copies,
                                  instances=len(inst.cluster.instances),
                                  bounds=CopyBounds(rec.min_copies, rec.max_copies), threshold_rpm=self.threshold_rpm,
                                  recurring=inst.is_recurring(entry.model_id))
            for _ in range(want - copies):
                if not await self._add_copy(entry.model_id, holders, entry.size_bytes):
                    break
                holders = [*holders, "?"]

    async def janitor(self: Any) -> None:  # Duties.janitor, yielding every CHUNK records
        inst = self.inst
        cluster = inst.cluster
        if cluster is None or not cluster.is_leader or not inst.registry.synced.is_set():
            return
        for n, rec in enumerate(list(inst.registry.models.values())):
            if n % CHUNK == CHUNK - 1:
                await asyncio.sleep(0)
            if any(i not in cluster.instances for i in rec.instances):
                await inst.registry.mutate_model(
                    rec.model_id, lambda r: replace(r, instances={i: t for i, t in r.instances.items()
                                                                  if i in cluster.instances}))
            holders = self._live_holders(rec)
            if rec.min_copies > len(holders) and not inst.failures.blocked(rec.failures, inst.clock.now_ms()):
                await self._add_copy(rec.model_id, holders, inst.cache.config.default_model_size_bytes)

    duties.Duties.scale_up = scale_up  # type: ignore[method-assign]
    duties.Duties.janitor = janitor  # type: ignore[method-assign]


def patch_freeze() -> None:
    def freezer() -> None:
        while True:
            time.sleep(5)
            gc.freeze()

    threading.Thread(target=freezer, name="gc-freeze", daemon=True).start()


def probe(prefix: str) -> None:
    """Write event-loop stalls, GC passes and duty rounds to files starting with ``prefix``."""
    from kserve_mesh import server
    from kserve_mesh.mesh import duties

    gc_log = open(f"{prefix}.gc.{os.getpid()}", "w")  # noqa: SIM115 - lives as long as the process
    started: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - started[0]) * 1000
        if ms > 5 or info["generation"] == 2:
            gc_log.write(f"{time.time():.3f} gen{info['generation']} {ms:.1f}ms collected={info['collected']}\n")
            gc_log.flush()

    gc.callbacks.append(on_gc)
    duty_log = open(f"{prefix}.duties.{os.getpid()}", "w")  # noqa: SIM115

    def timed(name: str) -> None:
        original = getattr(duties.Duties, name)

        async def run(self: Any) -> None:
            t0 = time.perf_counter()
            try:
                await original(self)
            finally:
                duty_log.write(f"{time.time():.3f} {name} {(time.perf_counter() - t0) * 1000:.1f}ms\n")
                duty_log.flush()

        run.__name__ = name
        setattr(duties.Duties, name, run)

    for name in ("scale_up", "scale_down", "janitor", "preload"):
        timed(name)

    async def stalls(path: str) -> None:
        loop = asyncio.get_running_loop()
        with open(path, "w") as out:
            while True:
                t0 = loop.time()
                await asyncio.sleep(0.005)
                lag = loop.time() - t0 - 0.005
                if lag > 0.005:
                    out.write(f"{time.time():.3f} {lag * 1000:.1f}\n")
                    out.flush()

    start = server.MeshServer.start

    async def start_and_probe(self: Any) -> Any:
        endpoints = await start(self)
        self._stall_probe = asyncio.create_task(stalls(f"{prefix}.{self.instance_id}"))
        return endpoints

    server.MeshServer.start = start_and_probe  # type: ignore[method-assign]


def main() -> None:
    patches = set(filter(None, os.environ.get("DENSITY_PATCH", "").split(",")))
    unknown = patches - {"lru", "chunk", "freeze"}
    if unknown:
        raise SystemExit(f"DENSITY_PATCH: unknown patch(es) {', '.join(sorted(unknown))} (lru, chunk, freeze)")
    for name in sorted(patches):
        globals()[f"patch_{name}"]()
    if os.environ.get("DENSITY_LAG"):
        probe(os.environ["DENSITY_LAG"])
    from kserve_mesh.cli import main as cli_main

    sys.argv[0] = "kserve-mesh"
    cli_main()


if __name__ == "__main__":
    main()
