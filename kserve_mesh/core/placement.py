"""Where a new copy of a model goes: ModelMesh's placement ranking (REFERENCE.md §4), pure.

Given the published records of the live instances, rank the candidates for a new copy:

1. never an instance that is shutting down, already has (or is loading) the model, failed to load
   it recently, or was excluded by the caller (it failed this request already);
2. instances with room for the model (free bytes >= its size) before full ones;
3. among non-full instances: fewer models first, then more free space;
   among full instances: where evicting hurts least first: the lowest ``victim_value`` (the eviction
   policy's value of the copy that would go first, issue 12) when every full candidate publishes
   one, else (the lru policy, older instances) the coldest cache (oldest ``lru_time_ms``);
4. a full instance whose cache is younger than the churn guard (``min_churn_age_ms``) refuses:
   evicting models used that recently would thrash the cache ("cache churn threshold exceeded");
5. from a short list near the best, drop busy instances (requests/min far above the quietest) and
   pick at random, so simultaneous placements by different instances spread out.

The random choice takes an injected ``random.Random`` so tests are deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from kserve_mesh.core.ids import InstanceId
from kserve_mesh.core.records import InstanceRecord

SHORT_LIST = 3
BUSY_FACTOR = 3.0  # rpm above BUSY_FACTOR x the quietest candidate (plus a floor) counts as busy
BUSY_FLOOR_RPM = 600


def churn_age_ms(load_timeout_ms: int) -> int:
    """ModelMesh's minimum cache age before a full instance may evict to load: 10 x max(3 s, t/3)."""
    return 10 * max(3_000, load_timeout_ms // 3)


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    size_bytes: int
    now_ms: int
    exclude: Collection[InstanceId] = ()
    holders: Collection[InstanceId] = ()
    failed_on: Collection[InstanceId] = ()
    min_churn_age_ms: int = 30_000


def _free(rec: InstanceRecord) -> int:
    return rec.capacity_bytes - rec.used_bytes


def eligible(instances: Iterable[InstanceRecord], req: PlacementRequest) -> list[InstanceRecord]:
    out = []
    banned = set(req.exclude) | set(req.holders) | set(req.failed_on)
    for rec in instances:
        if not rec.accepts_loads or rec.instance_id in banned or rec.capacity_bytes < req.size_bytes:
            continue
        full = _free(rec) < req.size_bytes
        if full and req.now_ms - rec.lru_time_ms < req.min_churn_age_ms:
            continue  # cache churn threshold exceeded
        out.append(rec)
    return out


def rank(instances: Iterable[InstanceRecord], req: PlacementRequest) -> list[InstanceRecord]:
    """Eligible instances, best first (deterministic; no randomness)."""
    cands = eligible(instances, req)
    full = [rec for rec in cands if _free(rec) < req.size_bytes]
    by_value = bool(full) and all(rec.victim_value >= 0 for rec in full)

    def key(rec: InstanceRecord) -> tuple[int, int, int, int, int, str]:
        if _free(rec) >= req.size_bytes:
            return (0, 0, rec.model_count, -_free(rec), 0, rec.instance_id)
        value = rec.victim_value if by_value else 0
        return (1, value, rec.lru_time_ms, rec.model_count, -_free(rec), rec.instance_id)

    return sorted(cands, key=key)


def choose(instances: Iterable[InstanceRecord], req: PlacementRequest, rng: random.Random | None = None) -> InstanceRecord | None:
    """The instance to load a new copy on, or None when no instance can take it."""
    ranked = rank(instances, req)
    if not ranked:
        return None
    short = ranked[:SHORT_LIST]
    # Keep the short list in the best tier only: don't trade a non-full instance for a full one.
    best_full = _free(short[0]) < req.size_bytes
    short = [r for r in short if (_free(r) < req.size_bytes) == best_full]
    quietest = min(r.requests_per_minute for r in short)
    calm = [r for r in short if r.requests_per_minute <= quietest * BUSY_FACTOR + BUSY_FLOOR_RPM]
    return (rng or random).choice(calm or short)
