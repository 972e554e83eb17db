"""Local copies: the state of each model this instance holds, is loading, or is unloading.

A ``LocalCopy`` is where requests meet loads. Requests for a LOADING copy await its ``ready``
future (shielded, so a cancelled request never cancels the load that others wait for); requests on
a LOADED copy count themselves in ``inflight`` so an eviction unloads only after they finish.
"""

from __future__ import annotations

import asyncio
import enum

from kserve_mesh.core.ids import ModelId


class Phase(enum.Enum):
    QUEUED = "QUEUED"
    LOADING = "LOADING"
    LOADED = "LOADED"
    UNLOADING = "UNLOADING"


class LocalCopy:
    __slots__ = ("gone", "idle", "inflight", "load_started_at", "model_id", "phase", "queued_at", "ready",
                 "requested", "size_bytes", "waiters")

    def __init__(self, model_id: ModelId, loop: asyncio.AbstractEventLoop, now: float) -> None:
        self.model_id = model_id
        self.phase = Phase.QUEUED
        self.ready: asyncio.Future[None] = loop.create_future()
        self.gone = asyncio.Event()  # set when an UNLOADING copy has left the runtime
        self.inflight = 0
        self.waiters = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.queued_at = now
        self.load_started_at = 0.0
        self.size_bytes = 0
        self.requested = False  # a request waited for it (else a prefetch: an explicit or background load)

    def enter(self) -> None:
        self.inflight += 1
        self.idle.clear()

    def leave(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self.idle.set()
