"""Leader election over a ``coordination.k8s.io/v1`` Lease: the rules, with no I/O and no clock of
their own (the driver in ``kube/controller/leader.py`` passes ``now``, a monotonic reading).

The algorithm is client-go's ``leaderelection`` (what controller-runtime and every kubebuilder
controller, ModelMesh Serving's included, use):

- The Lease names its holder and how long a claim lasts (``leaseDurationSeconds``); the holder
  renews it (``renewTime``) every retry period.
- A candidate never trusts the clocks written into the Lease (nodes' clocks differ). It notes, on
  its own monotonic clock, when it last *saw the record change*; the holder is presumed alive until
  ``leaseDurationSeconds`` have passed since then without a change. Only then (or when the Lease
  is free: no holder) may it take over.
- Every write carries the ``resourceVersion`` it read (a JSON patch ``test``): of two candidates
  racing for an expired Lease, the API server lets exactly one through.
- The holder counts as leader only while its last successful renewal is younger than the renew
  deadline (shorter than the lease duration), so it steps down before anyone else can take over.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LEASE_API_VERSION = "coordination.k8s.io/v1"


@dataclass(frozen=True)
class LeaseRecord:
    """The ``spec`` of a Lease, as read."""

    holder: str = ""
    duration_s: int = 0
    acquire_time: str = ""
    renew_time: str = ""
    transitions: int = 0

    @classmethod
    def of(cls, lease: Mapping[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(holder=str(spec.get("holderIdentity") or ""),
                   duration_s=int(spec.get("leaseDurationSeconds") or 0),
                   acquire_time=str(spec.get("acquireTime") or ""),
                   renew_time=str(spec.get("renewTime") or ""),
                   transitions=int(spec.get("leaseTransitions") or 0))

    def spec(self) -> dict[str, Any]:
        return {"holderIdentity": self.holder, "leaseDurationSeconds": self.duration_s,
                "acquireTime": self.acquire_time, "renewTime": self.renew_time,
                "leaseTransitions": self.transitions}


def micro_time(when: dt.datetime) -> str:
    """Kubernetes' MicroTime (RFC 3339 with microseconds, UTC)."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Election:
    """One candidate's view of the Lease: what it observed and when, and what it may write."""

    def __init__(self, identity: str, duration_s: int) -> None:
        if not identity:
            raise ValueError("a leader election candidate needs an identity")
        if duration_s < 1:
            raise ValueError(f"the lease duration must be >= 1 s, got {duration_s}")
        self.identity = identity
        self.duration_s = duration_s
        self._observed: LeaseRecord | None = None
        self._observed_at = float("-inf")

    def observe(self, record: LeaseRecord, now: float) -> None:
        """Note what was read; the holder's clock starts again whenever the record changes."""
        if record != self._observed:
            self._observed = record
            self._observed_at = now

    def held_by_other(self, record: LeaseRecord, now: float) -> bool:
        """Whether someone else holds the Lease and may still be alive (so this candidate waits)."""
        self.observe(record, now)
        if not record.holder or record.holder == self.identity:
            return False
        duration = record.duration_s or self.duration_s
        return now < self._observed_at + duration

    def claim(self, record: LeaseRecord | None, wall: dt.datetime) -> LeaseRecord:
        """The record this candidate writes to take or renew the Lease (``record``: what it read,
        None when there is no Lease yet)."""
        stamp = micro_time(wall)
        if record is not None and record.holder == self.identity:
            return LeaseRecord(self.identity, self.duration_s, record.acquire_time or stamp, stamp,
                               record.transitions)
        transitions = 0 if record is None else record.transitions + (1 if record.holder else 0)
        return LeaseRecord(self.identity, self.duration_s, stamp, stamp, transitions)

    def release(self, record: LeaseRecord, wall: dt.datetime) -> LeaseRecord:
        """The record that hands the Lease back (a follower may take it at once)."""
        return LeaseRecord("", 1, record.acquire_time, micro_time(wall), record.transitions)

    def written(self, record: LeaseRecord, now: float) -> None:
        """This candidate wrote ``record`` (so it is what it last saw)."""
        self._observed = record
        self._observed_at = now


def lease_object(name: str, namespace: str, record: LeaseRecord) -> dict[str, Any]:
    return {"apiVersion": LEASE_API_VERSION, "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace}, "spec": record.spec()}
