"""Recycling the MLServer process the adapter started (memory truth, issue 16).

MLServer keeps what its models allocated after they are unloaded (FACTS.md), so an adapter that
loads and unloads all day holds more and more memory that no model accounts for. When the process
tree's RSS exceeds its baseline plus the loaded models' sizes by more than
``MLServerConfig.recycle_bytes`` (and no recycle happened within ``recycle_min_interval_s``), the
adapter restarts its MLServer gracefully:

1. the ``Gate`` closes: new inference, metadata and load calls wait (bounded by their own deadlines);
   calls already inside finish (up to ``recycle_grace_s``);
2. the old MLServer stops, a fresh one starts on the same work folder (model settings and fetched
   files stay), its formats are primed and its RSS taken as the new baseline;
3. every model that was loaded is loaded again into the fresh process (sizes unchanged);
4. the gate opens.

The mesh sees a runtime that was slow for a few seconds: no call fails for it, and the instance's
ledger stays true (same models, same sizes). An MLServer the adapter only attached to is not its to
restart: nothing happens there (reconciliation in the instance still counts the excess as used).

The ``Gate`` and the test of when a recycle is due (``RecycleCheck``) are ``runtime.adapters.recycle``,
shared with the Triton adapter; how MLServer is started again is this module's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from kserve_mesh.core.errors import MeshError
from kserve_mesh.runtime.adapters.recycle import RecycleCheck
from kserve_mesh.runtime.mlserver.client import MLServerClient
from kserve_mesh.runtime.mlserver.process import MLServerProcess

if TYPE_CHECKING:
    from kserve_mesh.runtime.mlserver.config import MLServerConfig
    from kserve_mesh.runtime.mlserver.process import MLServerEndpoint

logger = logging.getLogger(__name__)


class Recycling(RecycleCheck):
    """The recycle of ``MLServerRuntime`` (module docstring); mixed into it, using its state."""

    config: MLServerConfig
    endpoint: MLServerEndpoint
    formats: frozenset[str]
    recycles: int
    _client: MLServerClient
    _recycling: asyncio.Task[None] | None
    _tree_rss: Callable[[], int | None]

    @property
    def recycling(self) -> bool:
        return self._recycling is not None and not self._recycling.done()

    def _maybe_recycle(self, resident: int) -> None:
        if (self._owned.process is None or self._owned.venv is None or self._pending or self._cleanups
                or self.recycling):
            return  # not ours to restart, sizes in flux, or under way
        reason = self._recycle_reason(resident)
        if reason is not None:
            self._recycling = asyncio.create_task(self.recycle(reason), name="mlserver-recycle")

    async def recycle(self, reason: str) -> None:
        """Restart the MLServer this adapter started and load its models again (recycle.py)."""
        old = self._owned.process
        if old is None or self._owned.venv is None or self._owned.work_dir is None or self._closed:
            return
        c = self.config
        await self._gate.close(c.recycle_grace_s)
        try:
            logger.warning("recycling MLServer (pid %d): %s", old.pid, reason)
            await self._client.close()
            await old.stop()
            process = await MLServerProcess.start(
                self._owned.venv, self._owned.work_dir, parallel_workers=c.parallel_workers,
                max_message_bytes=c.max_message_bytes, timeout_s=c.start_timeout_s)
            self._owned.process, self.endpoint = process, process.endpoint
            self._client = MLServerClient(process.endpoint, c, process)
            await self._client.prepare(self.formats)
            self._baseline_bytes = await asyncio.to_thread(self._tree_rss) or 0
            for model_id in list(self._models):
                try:
                    await self._client.repository("load", model_id)
                except MeshError as exc:  # the mesh hears NOT_FOUND on its next call and loads it again
                    logger.error("model %s did not load again after the recycle: %s", model_id, exc)
                    self._models.pop(model_id, None)
            self.recycles += 1
            logger.warning("MLServer recycled: pid %d -> %d, %d models loaded again", old.pid, process.pid,
                           len(self._models))
        except Exception:
            logger.exception("recycling MLServer failed; it reports FAILING until it is restarted")
        finally:
            self._gate.reopen()

