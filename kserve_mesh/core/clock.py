"""The clock port. The core takes times as arguments; the mesh reads them from a ``Clock``.

``now_ms`` is wall-clock epoch milliseconds, used only for last-used stamps that are shared through
the store (ModelMesh's unit). ``monotonic`` is for durations, timeouts and expiries inside one
process. Tests inject ``ManualClock`` to run ages and expiries in virtual time.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._ms = start_ms
        self._mono = 1000.0

    def now_ms(self) -> int:
        return self._ms

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._ms += int(seconds * 1000)
        self._mono += seconds
