"""Graceful shutdown of an instance in a mesh (SIGTERM): hand recently used models to others.

1. Mark the instance shutting down and publish it: no new placements come here, but requests for
   the models it holds are still served throughout the drain (upstream ModelMesh stopped serving
   them, which users noticed).
2. Each model used in the last hour that has no copy elsewhere is loaded on another instance, chosen
   by the placement rules, through that instance's management API, hottest first. The request
   carries the copy's own last use (``lastUsedTime``), so the receiving instance ranks it where it
   belongs among its own copies (for LRU: a merged recency order, not "now"), and loads the
   hottest first; it is a prefetch there, not a request (its eviction policy does not make it
   duel for admission on arrival).
3. Wait, at most the grace period, until each of those copies has been LOADED elsewhere; then the
   caller leaves the mesh (revoking its lease removes its record at once). A copy counts once the
   store has shown it on another instance, even if that instance evicted it again a moment later
   for something it values more: every change of the records is watched as it arrives (a snapshot
   taken now and then missed such short-lived copies, and the drain then waited out its whole grace
   period). A load that failed there ends the wait for that model too (it is logged).
"""

from __future__ import annotations

import asyncio
import logging

from kserve_mesh.core.ids import InstanceId, ModelId
from kserve_mesh.core.placement import PlacementRequest, choose
from kserve_mesh.core.records import CopyState, FailureRecord, ModelRecord
from kserve_mesh.mesh.instance import Instance

log = logging.getLogger(__name__)

RECENT_MS = 3_600_000


async def drain(inst: Instance, grace_s: float) -> list[ModelId]:
    """Re-home recently used models; returns those that did not make it within the grace period."""
    if inst.live_instances() is None:
        return []
    deadline = inst.clock.monotonic() + grace_s
    now = inst.clock.now_ms()
    entries = [e for e in inst.local_copies() if e.state is CopyState.LOADED and now - e.last_used_ms < RECENT_MS]
    entries.sort(key=lambda e: -e.last_used_ms)  # the hottest first
    pending: dict[ModelId, tuple[InstanceId, frozenset[FailureRecord]]] = {}  # target, failures before
    seen: set[ModelId] = set()  # shown on another instance since the drain began

    def held_elsewhere(rec: ModelRecord) -> bool:
        live = inst.live_instances() or {}
        return any(i != inst.instance_id and i in live and not live[i].shutting_down for i in rec.instances)

    def check(model_id: ModelId) -> None:
        """Note a copy shown elsewhere; a pending model is done once one was, once its load failed
        on its target (a failure record that was not there before), or once it is unregistered."""
        rec = inst.model_record(model_id)
        if rec is not None and held_elsewhere(rec):
            seen.add(model_id)
        if model_id not in pending:
            return
        target, before = pending[model_id]
        failed = [] if rec is None else [f for f in rec.failures if f.instance == target and f not in before]
        if failed:
            log.info("could not move %s to %s: %s", model_id, target, failed[-1].message)
        if rec is None or model_id in seen or failed:
            pending.pop(model_id)

    def changed(kind: str, ident: str) -> None:
        if kind == "model":
            check(ModelId(ident))
        elif kind == "resync":
            for model_id in list(pending):
                check(model_id)

    asked = 0
    listeners = inst.registry.listeners
    listeners.append(changed)  # before the first load is asked for: no copy can come and go unseen
    try:
        for entry in entries:
            if inst.clock.monotonic() >= deadline:
                break
            rec = inst.model_record(entry.model_id)
            if rec is None or held_elsewhere(rec):
                continue
            exclude: set[InstanceId] = {inst.instance_id}
            while inst.clock.monotonic() < deadline:
                target = choose((inst.live_instances() or {}).values(),
                                PlacementRequest(entry.size_bytes, now, exclude=exclude, min_churn_age_ms=0))
                if target is None:
                    break
                pending[entry.model_id] = (target.instance_id, frozenset(rec.failures))
                seen.discard(entry.model_id)
                try:
                    await inst.load_on(target, entry.model_id, max(0.1, deadline - inst.clock.monotonic()),
                                       last_used_ms=entry.last_used_ms)
                    asked += 1
                    break
                except Exception as exc:  # noqa: BLE001 - try the next instance
                    pending.pop(entry.model_id, None)
                    log.info("could not move %s to %s: %s", entry.model_id, target.instance_id, exc)
                    exclude.add(target.instance_id)
        log.info("draining: %d recently used models re-homed, %d loads still awaited", asked, len(pending))
        changed("resync", "")  # each pending model against its record as it stands now
        while pending and inst.clock.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        listeners.remove(changed)
    if pending:
        log.warning("shutdown grace period over; %d models not yet loaded elsewhere", len(pending))
    return list(pending)
