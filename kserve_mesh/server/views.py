"""What ``/mesh/v1/status`` and ``kserve-mesh status`` show of an instance and its mesh."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kserve_mesh.core.records import InstanceRecord, ModelRecord


def instance_json(r: InstanceRecord) -> dict[str, object]:
    labels = dict(label.split("=", 1) for label in r.labels if "=" in label)
    return {"instanceId": r.instance_id, "grpc": r.endpoint, "rest": labels.get("rest", ""),
            "metrics": labels.get("metrics", ""), "pid": int(labels.get("pid", "0") or 0),
            "capacityBytes": r.capacity_bytes, "usedBytes": r.used_bytes, "models": r.model_count,
            "requestsPerMinute": r.requests_per_minute, "lruTime": r.lru_time_ms,
            "loadsInProgress": r.loads_in_progress, "shuttingDown": r.shutting_down,
            "recycling": r.recycling,             "startTime": r.start_time_ms, "version": r.version}


def placements(records: Iterable[ModelRecord], live: Mapping[str, object]) -> dict[str, list[str]]:
    """Where each model's copies live (model id -> the live instances holding one)."""
    out: dict[str, list[str]] = {}
    for rec in records:
        where = sorted(i for i in rec.instances if i in live)
        if where:
            out[rec.model_id] = where
    return out
