"""A bounded background refresh for the panel.

A daemon thread calls ``refresh`` every ``interval_s`` while ``visible()`` says a view of the panel
is on screen, and gives up on its own after ``max_runtime_s`` (a forgotten notebook tab must not poll
a mesh for days) or when ``stop()`` is called (the panel's ``close()``). It is a thread rather than
a task on the kernel's event loop because the client is synchronous: a slow mesh must never block
the kernel. Widget updates from a thread are safe with ipykernel (its IOPub thread serializes sends).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Refresher:
    def __init__(self, refresh: Callable[[], None], visible: Callable[[], bool], *, interval_s: float = 2.0,
                 max_runtime_s: float = 1800.0, on_expire: Callable[[], None] | None = None) -> None:
        self._refresh = refresh
        self._visible = visible
        self.interval_s = interval_s
        self.max_runtime_s = max_runtime_s
        self._on_expire = on_expire
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0
        """Refreshes done by this refresher (for tests and the curious)."""

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name="kserve-mesh-panel-refresh",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self, stop: threading.Event) -> None:
        deadline = time.monotonic() + self.max_runtime_s
        while not stop.wait(self.interval_s):
            if time.monotonic() >= deadline:
                if self._on_expire is not None:
                    self._on_expire()
                return
            if not self._visible():
                continue
            try:
                self._refresh()
            except Exception:  # noqa: BLE001 - a refresh must never kill the thread silently
                log.exception("panel refresh failed")
            self.ticks += 1
