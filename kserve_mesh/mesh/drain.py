"""Graceful shutdown of an instance in a mesh (SIGTERM): hand recently used models to others.

1. Mark the instance shutting down and publish it: no new placements come here, but requests for
   the models it holds are still served throughout the drain (upstream ModelMesh stopped serving
   them, which users noticed).
2. Each model used in the last hour that has no copy elsewhere is loaded on another instance, chosen
   by the placement rules, through that instance's management API.
3. Wait, at most the grace period, until those copies are LOADED elsewhere; then the caller leaves
   the mesh (revoking its lease removes its record at once).
"""

from __future__ import annotations

import asyncio
import logging

from kserve_mesh.core.ids import InstanceId, ModelId
from kserve_mesh.core.placement import PlacementRequest, choose
from kserve_mesh.core.records import CopyState
from kserve_mesh.mesh.instance import Instance

log = logging.getLogger(__name__)

RECENT_MS = 3_600_000


async def drain(inst: Instance, grace_s: float) -> list[ModelId]:
    """Re-home recently used models; returns those that did not make it within the grace period."""
    live = inst.live_instances()
    if live is None:
        return []
    deadline = inst.clock.monotonic() + grace_s
    now = inst.clock.now_ms()
    entries = [e for e in inst.local_copies() if e.state is CopyState.LOADED and now - e.last_used_ms < RECENT_MS]
    entries.sort(key=lambda e: -e.last_used_ms)  # the hottest first
    pending: dict[ModelId, InstanceId] = {}
    for entry in entries:
        rec = inst.model_record(entry.model_id)
        if rec is None:
            continue
        live = inst.live_instances() or {}
        others = [i for i in rec.instances if i != inst.instance_id and i in live and not live[i].shutting_down]
        if others:
            continue
        exclude: set[InstanceId] = {inst.instance_id}
        while inst.clock.monotonic() < deadline:
            target = choose((inst.live_instances() or {}).values(),
                            PlacementRequest(entry.size_bytes, now, exclude=exclude, min_churn_age_ms=0))
            if target is None:
                break
            try:
                await inst.load_on(target, entry.model_id, max(0.1, deadline - inst.clock.monotonic()))
                pending[entry.model_id] = target.instance_id
                break
            except Exception as exc:  # noqa: BLE001 - try the next instance
                log.info("could not move %s to %s: %s", entry.model_id, target.instance_id, exc)
                exclude.add(target.instance_id)
    log.info("draining: %d recently used models to re-home", len(pending))
    while pending and inst.clock.monotonic() < deadline:
        for model_id in list(pending):
            rec, live = inst.model_record(model_id), inst.live_instances() or {}
            if rec is None or any(i != inst.instance_id and i in live for i in rec.instances):
                pending.pop(model_id)
        if pending:
            await asyncio.sleep(0.1)
    if pending:
        log.warning("shutdown grace period over; %d models not yet loaded elsewhere", len(pending))
    return list(pending)
