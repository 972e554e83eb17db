"""Request rates over the last minute, in one-second buckets (O(1) per request, time passed in).

Buckets are compact arrays of machine integers, not lists of int objects: there is one counter per
served model, so tens of thousands of them.
"""

from __future__ import annotations

from array import array


class RateCounter:
    __slots__ = ("_buckets", "_stamps", "last")

    def __init__(self) -> None:
        self._buckets = array("q", bytes(8 * 60))
        self._stamps = array("q", bytes(8 * 60))
        self.last = 0.0  # time of the latest hit (seconds)

    def hit(self, now: float) -> None:
        sec = int(now)
        slot = sec % 60
        if self._stamps[slot] != sec:
            self._stamps[slot] = sec
            self._buckets[slot] = 0
        self._buckets[slot] += 1
        self.last = now

    def per_minute(self, now: float) -> int:
        if now - self.last >= 60:
            return 0
        sec = int(now)
        return sum(b for b, s in zip(self._buckets, self._stamps) if sec - s < 60)
