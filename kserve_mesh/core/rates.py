"""Request rates over the last minute, in one-second buckets (O(1) per request, time passed in).

Buckets are compact arrays of machine integers, not lists of int objects: there is one counter per
served model, so tens of thousands of them.
"""

from __future__ import annotations

from array import array

from kserve_mesh.core.copies import wants_second_copy


class RateCounter:
    __slots__ = ("_buckets", "_stamps", "_total", "last")

    def __init__(self) -> None:
        self._buckets = array("q", bytes(8 * 60))
        self._stamps = array("q", bytes(8 * 60))
        self._total = 0  # the sum of every bucket, stale ones included: an upper bound of the rate
        self.last = 0.0  # time of the latest hit (seconds)

    def hit(self, now: float) -> None:
        sec = int(now)
        slot = sec % 60
        if self._stamps[slot] != sec:
            self._stamps[slot] = sec
            self._total -= self._buckets[slot]
            self._buckets[slot] = 0
        self._buckets[slot] += 1
        self._total += 1
        self.last = now

    def upper_bound(self, now: float) -> int:
        """At least ``per_minute(now)``, in O(1): a scan over many counters filters with this and
        computes the exact rate only for the few that may be above a threshold."""
        return 0 if now - self.last >= 60 else self._total

    def per_minute(self, now: float) -> int:
        if now - self.last >= 60:
            return 0
        sec = int(now)
        return sum(b for b, s in zip(self._buckets, self._stamps) if sec - s < 60)


class ModelRates:
    """The request rate of each model served here, and which models recur: a model used again
    7-40 minutes after an earlier use (``core.copies.wants_second_copy``) earns a second copy."""

    __slots__ = ("_rates", "_recurring")

    def __init__(self) -> None:
        self._rates: dict[str, RateCounter] = {}
        self._recurring: set[str] = set()

    def hit(self, model_id: str, now: float) -> None:
        rate = self._rates.get(model_id)
        if rate is None:
            rate = self._rates[model_id] = RateCounter()
        elif wants_second_copy(int(rate.last * 1000), int(now * 1000), copies=1):
            self._recurring.add(model_id)
        rate.hit(now)

    def per_minute(self, model_id: str, now: float) -> int:
        rate = self._rates.get(model_id)
        return 0 if rate is None else rate.per_minute(now)

    def upper_bound(self, model_id: str, now: float) -> int:
        """An upper bound of ``per_minute`` in O(1), to skip quiet models in scans of every copy."""
        rate = self._rates.get(model_id)
        return 0 if rate is None else rate.upper_bound(now)

    def is_recurring(self, model_id: str) -> bool:
        return model_id in self._recurring
