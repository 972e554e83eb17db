"""Placement ranking and copy rules (REFERENCE.md §4), in virtual time."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from kserve_mesh.core.copies import (
    CopyBounds,
    CopyUsage,
    desired_copies,
    scale_down_candidates,
    wants_second_copy,
)
from kserve_mesh.core.ids import InstanceId
from kserve_mesh.core.placement import PlacementRequest, choose, churn_age_ms, rank
from kserve_mesh.core.records import InstanceRecord

NOW = 10_000_000


def inst(name: str, *, cap: int = 100, used: int = 0, models: int = 0, lru: int = NOW - 3_600_000,
         rpm: int = 0, shutting_down: bool = False, recycling: bool = False, victim: int = -1) -> InstanceRecord:
    return InstanceRecord(InstanceId(name), f"{name}:8033", cap, used, models, lru,
                          requests_per_minute=rpm, shutting_down=shutting_down, recycling=recycling,
                          victim_value=victim)


def test_non_full_first_then_fewest_models_then_most_free() -> None:
    records = [inst("full", used=95), inst("busy-cache", used=50, models=9), inst("roomy", used=10, models=2),
               inst("roomier", used=5, models=2)]
    order = [r.instance_id for r in rank(records, PlacementRequest(size_bytes=10, now_ms=NOW))]
    assert order == ["roomier", "roomy", "busy-cache", "full"]


def test_all_full_prefers_the_coldest_cache_and_respects_the_churn_guard() -> None:
    records = [inst("warm", used=99, lru=NOW - 60_000), inst("cold", used=99, lru=NOW - 600_000),
               inst("hot", used=99, lru=NOW - 1_000)]
    req = PlacementRequest(size_bytes=10, now_ms=NOW, min_churn_age_ms=30_000)
    assert [r.instance_id for r in rank(records, req)] == ["cold", "warm"]  # "hot" refuses: churn
    assert choose([records[2]], req) is None


def test_all_full_and_all_publishing_a_victim_value_prefer_the_least_valuable_victim() -> None:
    # issue 12: the eviction policy's value of each instance's next victim, not its LRU age
    records = [inst("cold-but-valuable", used=99, lru=NOW - 600_000, victim=900),
               inst("warm-cheap", used=99, lru=NOW - 60_000, victim=5),
               inst("mid", used=99, lru=NOW - 300_000, victim=40),
               inst("roomy", used=10, victim=1_000)]
    req = PlacementRequest(size_bytes=10, now_ms=NOW, min_churn_age_ms=30_000)
    order = [r.instance_id for r in rank(records, req)]
    assert order == ["roomy", "warm-cheap", "mid", "cold-but-valuable"]  # room still comes first


def test_a_full_instance_without_a_victim_value_keeps_the_coldest_cache_rule() -> None:
    # an lru instance (or an older one) publishes none: the values cannot be compared, LRU age rules
    records = [inst("valued", used=99, lru=NOW - 60_000, victim=1),
               inst("lru", used=99, lru=NOW - 600_000)]
    order = [r.instance_id for r in rank(records, PlacementRequest(size_bytes=10, now_ms=NOW))]
    assert order == ["lru", "valued"]


def test_exclusions_holders_failures_shutdown_recycling_and_too_small() -> None:
    records = [inst("a"), inst("b"), inst("c"), inst("d", shutting_down=True), inst("e", cap=5),
               inst("f", recycling=True)]
    req = PlacementRequest(size_bytes=10, now_ms=NOW, exclude={InstanceId("a")}, holders={InstanceId("b")},
                           failed_on={InstanceId("c")})
    assert rank(records, req) == []


def test_choose_spreads_over_the_short_list_and_skips_busy() -> None:
    records = [inst("a", models=1), inst("b", models=1), inst("c", models=1, rpm=100_000), inst("z", models=50)]
    rng = random.Random(7)
    picks = {choose(records, PlacementRequest(size_bytes=1, now_ms=NOW), rng).instance_id for _ in range(50)}
    assert picks == {"a", "b"}


@given(st.lists(st.tuples(st.integers(1, 1000), st.integers(0, 1000), st.integers(0, 50), st.booleans()),
                min_size=1, max_size=8), st.integers(1, 500))
def test_choice_is_always_eligible(specs: list, size: int) -> None:
    records = [inst(f"i{n}", cap=cap, used=min(used, cap), models=m, shutting_down=s)
               for n, (cap, used, m, s) in enumerate(specs)]
    req = PlacementRequest(size_bytes=size, now_ms=NOW)
    picked = choose(records, req, random.Random(0))
    ranked = rank(records, req)
    if picked is None:
        assert ranked == []
    else:
        assert not picked.shutting_down and picked.capacity_bytes >= size
        if any(r.capacity_bytes - r.used_bytes >= size for r in ranked):
            assert picked.capacity_bytes - picked.used_bytes >= size  # never full while room exists


def test_churn_age() -> None:
    assert churn_age_ms(90_000) == 300_000
    assert churn_age_ms(1_000) == 30_000


def test_copy_rules() -> None:
    assert wants_second_copy(NOW - 10 * 60_000, NOW, copies=1)
    assert not wants_second_copy(NOW - 60_000, NOW, copies=1)
    assert not wants_second_copy(NOW - 60 * 60_000, NOW, copies=1)
    assert desired_copies(copies=1, rpm=100, instances=3) == 1
    assert desired_copies(copies=1, rpm=100, instances=3, recurring=True) == 2
    assert desired_copies(copies=1, rpm=9000, instances=9) == 4  # +min(8-1... step 3) = 1+3
    assert desired_copies(copies=1, rpm=9000, instances=9, bounds=CopyBounds(max_copies=2)) == 2
    assert desired_copies(copies=1, rpm=0, instances=3, bounds=CopyBounds(min_copies=3)) == 3
    assert desired_copies(copies=1, rpm=0, instances=2, bounds=CopyBounds(min_copies=3)) == 2
    usage = [CopyUsage("idle", 3, 10), CopyUsage("hot", 3, 9000), CopyUsage("pinned", 2, 0, CopyBounds(min_copies=2))]
    assert scale_down_candidates(usage, free_fraction=0.5) == []
    assert scale_down_candidates(usage, free_fraction=0.01) == ["idle"]
