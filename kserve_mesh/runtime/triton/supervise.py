"""Keeping the Triton this adapter started alive and lean: restart after a death, recycle when it
holds memory no model accounts for (issue 16).

**Death.** A watcher polls the child (``poll()``, every 0.1 s). When Triton exits without being
asked to: ``runtimeStatus`` says FAILING at once, calls already in flight fail (``Unavailable``
naming the exit and quoting Triton's log), new calls wait at the ``Gate``, and Triton is started
again on the same work folder — tries spaced 0.5 s, doubling up to ``restart_backoff_max_s``. The
models the adapter held are then loaded again (their folders are still in the repository, their
sizes unchanged) and the runtime is READY. They are loaded again, not forgotten, because a mesh in
front may not notice a restart shorter than its health checks (``--runtime remote`` needs two
failed checks, 5 s apart by default) and would still count them as loaded here; a mesh that did
notice dropped its copies and unloads them from the recovered runtime itself
(``CacheManager.runtime_back``), which keeps both sides true either way.

**Recycle.** As MLServer's (both use ``runtime.adapters.recycle``: its ``Gate`` and
``RecycleCheck``): when the Triton tree's RSS exceeds its baseline plus the loaded models' sizes by
more than ``recycle_bytes`` (and none happened within ``recycle_min_interval_s``), the gate
closes, calls inside finish (up to ``recycle_grace_s``), Triton is stopped and started again, the
models loaded again, the gate opened: READY throughout, no call fails. The Python backend runs each
model in a stub process that exits on unload, so Triton gives most memory back by itself; the
recycle is the guard for what it does not.

A Triton the adapter only attached to is not its to restart or recycle.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from kserve_mesh.core.errors import MeshError, Unavailable
from kserve_mesh.runtime.adapters.memory import tree_rss_bytes
from kserve_mesh.runtime.adapters.recycle import Gate, RecycleCheck
from kserve_mesh.runtime.triton.client import TritonClient
from kserve_mesh.runtime.triton.process import TritonProcess

if TYPE_CHECKING:
    from kserve_mesh.runtime.triton.config import TritonConfig
    from kserve_mesh.runtime.triton.process import TritonEndpoint

logger = logging.getLogger(__name__)

_WATCH_S = 0.1
_CRASH_GRACE_S = 2.0  # calls inside when Triton died fail fast; this only bounds the wait for them


class Supervised(RecycleCheck):
    """Restart and recycle of ``TritonRuntime`` (module docstring); mixed into it, using its state."""

    config: TritonConfig
    endpoint: TritonEndpoint
    _client: TritonClient

    def _init_supervision(self) -> None:
        self._gate = Gate("Triton")
        self._watcher: asyncio.Task[None] | None = None
        self._restart: asyncio.Task[None] | None = None
        self._last_recycle = float("-inf")
        self.down = False  # Triton died and is not serving again yet
        self.restart_reason = ""
        self.restarts = 0  # after deaths
        self.recycles = 0  # on purpose

    @property
    def restarting(self) -> bool:
        return self._restart is not None and not self._restart.done()

    @property
    def recycling(self) -> bool:
        return self.restarting and not self.down

    def _start_watching(self) -> None:
        if self._owned.process is not None:
            self._watcher = asyncio.create_task(self._watch(), name="triton-watch")

    async def _watch(self) -> None:
        while not self._closed:
            await asyncio.sleep(_WATCH_S)
            process = self._owned.process
            if process is None or process.alive() or self.restarting or self._closed:
                continue
            reason = f"Triton (pid {process.pid}) {process.exit_text()}"
            logger.warning("%s; its log ends:\n%s", reason, process.log_tail())
            self.down = True
            self._restart = asyncio.create_task(self._restart_triton(reason, planned=False), name="triton-restart")

    def _maybe_recycle(self, resident: int) -> None:
        if self._owned.process is None or self._pending or self._cleanups or self.restarting:
            return
        reason = self._recycle_reason(resident)
        if reason is not None:
            self._restart = asyncio.create_task(self._restart_triton(reason, planned=True), name="triton-recycle")

    async def recycle(self, reason: str) -> None:
        """Restart the Triton this adapter started, on purpose, and load its models again."""
        if self._owned.process is None or self._closed:
            return
        if not self.restarting:
            self._restart = asyncio.create_task(self._restart_triton(reason, planned=True), name="triton-recycle")
        await asyncio.shield(self._restart)  # type: ignore[arg-type]

    async def _restart_triton(self, reason: str, *, planned: bool) -> None:
        c = self.config
        self.restart_reason = reason
        await self._gate.close(c.recycle_grace_s if planned else _CRASH_GRACE_S)
        try:
            old = self._owned.process
            logger.warning("%s Triton (pid %d): %s", "recycling" if planned else "restarting", old.pid, reason)
            await self._client.close()
            await old.stop()
            backoff = 0.5
            while True:
                try:
                    process = await TritonProcess.start(self._owned.dist, self._owned.python, self._owned.work_dir,
                                                        timeout_s=c.start_timeout_s, exit_timeout_s=c.exit_timeout_s)
                    break
                except Unavailable as exc:
                    logger.error("Triton did not start again (%s); next try in %g s", exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, c.restart_backoff_max_s)
            self._owned.process, self.endpoint = process, process.endpoint
            self._client = TritonClient(process.endpoint.grpc_target, c, process)
            self._baseline_bytes = await asyncio.to_thread(tree_rss_bytes, process.pid) or 0
            for model_id, loaded in list(self._models.items()):
                try:
                    await self._client.load(loaded.name, model_id)
                except MeshError as exc:  # the mesh hears NOT_FOUND on its next call and loads it again
                    logger.error("model %s did not load again after the restart: %s", model_id, exc)
                    self._models.pop(model_id, None)
            if planned:
                self.recycles += 1
            else:
                self.restarts += 1
            logger.warning("Triton %s: pid %d -> %d, %d models loaded again", "recycled" if planned else "restarted",
                           old.pid, process.pid, len(self._models))
        finally:
            self.down = False
            self._gate.reopen()

    async def _stop_supervision(self) -> None:
        for task in (self._watcher, self._restart):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(*(t for t in (self._watcher, self._restart) if t is not None), return_exceptions=True)
