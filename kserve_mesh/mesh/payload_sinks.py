"""One payload sink's side of the logger: its bounded queue, its in-flight burst and its counters.

Every event offered to a sink ends up in exactly one of: sent, dropped (the queue was full, or the
logger stopped before it went out), failed (not delivered after its tries, or not renderable),
queued, in flight. The bounds (``queue_size`` events, ``max_bytes`` bytes) count what is queued and
what is in flight together, so a stalled sink holds at most that much memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from kserve_mesh.core.payload_config import SinkSpec
from kserve_mesh.mesh.payload_events import PayloadEvent


@dataclass(frozen=True, slots=True)
class SinkCounters:
    """What one sink got so far: counts since start, and (``queued*``, ``in_flight``) now. Every event
    offered to the sink is in exactly one of sent, dropped, failed, queued and in_flight."""

    sink: str
    sent: int
    dropped: int
    failed: int
    queued: int
    queued_bytes: int
    in_flight: int


class SinkQueue:
    """One sink: its queue and its burst in flight, its counters, the start of its requests, and
    the state of its failures (pause, rate-limited warnings)."""

    def __init__(self, spec: SinkSpec, queue_size: int, max_bytes: int) -> None:
        self.spec = spec
        self.queue: deque[PayloadEvent] = deque()
        self.queued_bytes = 0
        self.queue_size = queue_size
        self.max_bytes = max_bytes
        self.ready = asyncio.Event()
        self.open = True
        self.sent = self.dropped = self.failed = self.in_flight = self.in_flight_bytes = 0
        self.pause_s = 0.0
        self.unwarned = 0
        self.warned_at = float("-inf")
        auth = f"authorization: {spec.authorization}\r\n" if spec.authorization else ""
        self.prefix = f"POST {spec.target} HTTP/1.1\r\nhost: {spec.host_header}\r\n{auth}".encode("latin-1")
        """The start of every request head to this sink."""

    def offer(self, event: PayloadEvent) -> None:
        """Queue an event, or drop it (counted) when what the sink holds (queued and in flight) is
        at its bounds."""
        if (not self.open or len(self.queue) + self.in_flight >= self.queue_size
                or self.queued_bytes + self.in_flight_bytes + event.size > self.max_bytes):
            self.dropped += 1
            return
        self.queue.append(event)
        self.queued_bytes += event.size
        self.ready.set()

    def drop_queued(self) -> None:
        """Drop (and count) everything still queued: the logger stopped."""
        self.dropped += len(self.queue)
        self.queue.clear()
        self.queued_bytes = 0

    def take_all(self) -> deque[PayloadEvent]:
        """Everything queued, now in flight."""
        batch, self.queue = self.queue, deque()
        self.in_flight += len(batch)
        self.in_flight_bytes += self.queued_bytes
        self.queued_bytes = 0
        return batch

    def done(self, event: PayloadEvent) -> None:
        """An event of a burst is through (sent, failed or dropped: counted by the caller)."""
        self.in_flight -= 1
        self.in_flight_bytes -= event.size

    def put_back(self, batch: deque[PayloadEvent], *, drop: bool) -> None:
        """Events a burst did not send: dropped, or queued again ahead of the newer ones (the
        newest dropped if that overfills the queue)."""
        if not batch:
            return
        size = sum(event.size for event in batch)
        self.in_flight -= len(batch)
        self.in_flight_bytes -= size
        if drop:
            self.dropped += len(batch)
        else:
            self.queue.extendleft(reversed(batch))
            self.queued_bytes += size
            while len(self.queue) > self.queue_size or (self.queued_bytes > self.max_bytes and len(self.queue) > 1):
                self.queued_bytes -= self.queue.pop().size
                self.dropped += 1
        batch.clear()

    def counters(self) -> SinkCounters:
        return SinkCounters(self.spec.name, self.sent, self.dropped, self.failed, len(self.queue), self.queued_bytes,
                            self.in_flight)
