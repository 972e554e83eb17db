"""Restarting an adapter's server on purpose (memory truth, issue 16): the gate calls wait at, and
when a restart is due.

MLServer keeps what its models allocated after they are unloaded (FACTS.md), and Triton may keep
some too, so an adapter that loads and unloads all day can hold more and more memory that no model
accounts for. When the server tree's RSS exceeds its baseline plus the loaded models' sizes by more
than the adapter's ``recycle_bytes`` (and no recycle happened within ``recycle_min_interval_s``),
the adapter restarts the server it started: the ``Gate`` closes (new calls wait, bounded by their
own deadlines; calls inside finish, up to ``recycle_grace_s``), the server is started again, its
models loaded again, and the gate opens. How each server is restarted stays with its adapter
(``runtime.mlserver.recycle``, ``runtime.triton.supervise``); ``RecycleCheck`` is the test both run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from kserve_mesh.core.errors import Unavailable

logger = logging.getLogger(__name__)


class Gate:
    """Calls pass while it is open; ``close`` stops new ones and waits for those inside.

    ``server`` names the server in the ``Unavailable`` a call gets when the gate stays closed past
    its deadline, and in the warning about calls still inside when the grace period ends."""

    def __init__(self, server: str) -> None:
        self._server = server
        self._open = asyncio.Event()
        self._open.set()
        self._inside = 0
        self._empty = asyncio.Event()
        self._empty.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    @contextlib.asynccontextmanager
    async def enter(self, timeout_s: float) -> AsyncIterator[None]:
        if not self._open.is_set():
            try:
                await asyncio.wait_for(self._open.wait(), max(0.0, timeout_s))
            except TimeoutError:
                raise Unavailable(f"the {self._server} process is being recycled and was not back within "
                                  f"{timeout_s:g} s") from None
        self._inside += 1
        self._empty.clear()
        try:
            yield
        finally:
            self._inside -= 1
            if self._inside == 0:
                self._empty.set()

    async def close(self, grace_s: float) -> int:
        """Stop letting calls in and wait, up to ``grace_s``, for those inside; returns how many
        were still inside when the grace period ended."""
        self._open.clear()
        try:
            await asyncio.wait_for(self._empty.wait(), grace_s)
        except TimeoutError:
            logger.warning("recycling %s with %d calls still in flight", self._server, self._inside)
        return self._inside

    def reopen(self) -> None:
        self._open.set()


def unaccounted(resident: int, baseline: int, accounted: int) -> int:
    """What the process holds beyond its baseline and its models (0 when either is unknown)."""
    if resident <= 0 or baseline <= 0:
        return 0
    return resident - baseline - accounted


def recycle_due(held: int, threshold: int, since_last_s: float, min_interval_s: float) -> bool:
    """Whether a recycle should start: a threshold is set, exceeded, and the last one is not too recent."""
    return threshold > 0 and held > threshold and since_last_s >= min_interval_s


class RecycleCheck:
    """Mixed into an adapter's runtime (whose state, that of ``runtime.adapters.loads.ModelLoads``,
    it reads): ``_recycle_reason`` says why a recycle is due now, or None. Its config has
    ``recycle_bytes``, ``recycle_min_interval_s`` and ``recycle_grace_s``."""

    config: Any
    _owned: Any  # ``process`` is None where the runtime only attached to its server
    _models: dict[str, Any]  # records with a ``size_bytes``
    _pending: dict[str, Any]
    _cleanups: dict[str, Any]
    _baseline_bytes: int
    _last_recycle: float
    _closed: bool
    _gate: Gate

    def _recycle_reason(self, resident: int) -> str | None:
        """Why the server should be recycled now (and the time of this recycle noted), or None."""
        c = self.config
        held = unaccounted(resident, self._baseline_bytes, sum(m.size_bytes for m in self._models.values()))
        now = asyncio.get_running_loop().time()
        if not recycle_due(held, c.recycle_bytes, now - self._last_recycle, c.recycle_min_interval_s):
            return None
        self._last_recycle = now
        return (f"it holds {held >> 20} MiB beyond its baseline and its {len(self._models)} models "
                f"(recycle past {c.recycle_bytes >> 20} MiB)")
