"""RateCounter: requests per minute in one-second buckets, and its O(1) upper bound."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kserve_mesh.core.rates import RateCounter


def test_counts_the_last_minute_only() -> None:
    rate = RateCounter()
    for t in (100.1, 100.5, 130.0, 159.9):
        rate.hit(t)
    assert rate.per_minute(159.9) == 4
    assert rate.per_minute(160.5) == 2  # the two hits of second 100 are a minute old
    assert rate.per_minute(219.9) == 0
    assert rate.upper_bound(219.9) == 0  # nothing for a minute: the bound is exact again


def test_upper_bound_drops_stale_buckets_when_they_are_reused() -> None:
    rate = RateCounter()
    for _ in range(50):
        rate.hit(10.0)
    rate.hit(69.0)
    assert rate.per_minute(70.5) == 1
    assert rate.upper_bound(70.5) == 51  # second 10's bucket is stale but not yet overwritten
    rate.hit(70.5)  # second 70 reuses second 10's slot
    assert rate.upper_bound(70.5) == rate.per_minute(70.5) == 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=400, allow_nan=False), min_size=1, max_size=300),
       st.floats(min_value=0, max_value=100))
def test_upper_bound_is_never_below_the_rate(gaps: list[float], later: float) -> None:
    rate = RateCounter()
    now = 0.0
    for gap in gaps:
        now += gap / 100  # non-decreasing times, several hits per second
        rate.hit(now)
        assert rate.upper_bound(now) >= rate.per_minute(now)
    assert rate.upper_bound(now + later) >= rate.per_minute(now + later)
