"""FailurePolicy in virtual time: 3 failures within 7.5 min block new loads; records expire at 15 min."""

from __future__ import annotations

from kserve_mesh.core.failures import FAILURE_EXPIRY_MS, FAILURE_WINDOW_MS, MAX_FAILURES, FailurePolicy
from kserve_mesh.core.ids import InstanceId
from kserve_mesh.core.records import FailureRecord

Inst = InstanceId
T0 = 1_700_000_000_000
MIN = 60_000


def test_defaults_match_modelmesh() -> None:
    assert (MAX_FAILURES, FAILURE_WINDOW_MS, FAILURE_EXPIRY_MS) == (3, 450_000, 900_000)
    policy = FailurePolicy()
    assert (policy.max_failures, policy.window_ms, policy.expiry_ms) == (3, 450_000, 900_000)


def test_three_failures_within_the_window_block_new_loads() -> None:
    policy = FailurePolicy()
    failures: tuple[FailureRecord, ...] = ()
    failures = policy.record(failures, Inst("i1"), "boom 1", T0)
    assert not policy.blocked(failures, T0)
    failures = policy.record(failures, Inst("i2"), "boom 2", T0 + MIN)
    assert not policy.blocked(failures, T0 + MIN)
    failures = policy.record(failures, Inst("i3"), "boom 3", T0 + 2 * MIN)
    assert policy.blocked(failures, T0 + 2 * MIN)
    assert policy.last_error(failures, T0 + 2 * MIN) == "boom 3"
    assert policy.failed_instances(failures, T0 + 2 * MIN) == {"i1", "i2", "i3"}


def test_failures_spread_wider_than_the_window_do_not_block() -> None:
    policy = FailurePolicy()
    failures: tuple[FailureRecord, ...] = ()
    for k in range(3):
        failures = policy.record(failures, Inst("i"), f"boom {k}", T0 + k * 4 * MIN)
    # first at T0, third at T0+8min: only two lie within the last 7.5 minutes
    assert not policy.blocked(failures, T0 + 8 * MIN)
    assert policy.last_error(failures, T0 + 8 * MIN) == "boom 2"


def test_block_lifts_when_the_oldest_failure_leaves_the_window() -> None:
    policy = FailurePolicy()
    failures = tuple(FailureRecord(Inst("i"), T0 + k, f"boom {k}") for k in range(3))
    assert policy.blocked(failures, T0 + FAILURE_WINDOW_MS - 1)
    assert not policy.blocked(failures, T0 + FAILURE_WINDOW_MS)
    # ... while the records themselves are still live and reported
    assert policy.last_error(failures, T0 + FAILURE_WINDOW_MS) == "boom 2"


def test_records_expire_after_fifteen_minutes() -> None:
    policy = FailurePolicy()
    failures = policy.record((), Inst("i1"), "disk full", T0)
    assert policy.live(failures, T0 + 15 * MIN - 1) == failures
    assert policy.last_error(failures, T0 + 15 * MIN - 1) == "disk full"
    assert policy.live(failures, T0 + 15 * MIN) == ()
    assert policy.last_error(failures, T0 + 15 * MIN) is None
    assert policy.failed_instances(failures, T0 + 15 * MIN) == set()
    assert not policy.blocked(failures, T0 + 15 * MIN)


def test_recording_drops_expired_records() -> None:
    policy = FailurePolicy()
    failures = policy.record((), Inst("i1"), "old", T0)
    failures = policy.record(failures, Inst("i2"), "new", T0 + 20 * MIN)
    assert [f.message for f in failures] == ["new"]
    assert failures[0] == FailureRecord(Inst("i2"), T0 + 20 * MIN, "new")


def test_live_keeps_order_oldest_first_and_last_error_is_the_newest() -> None:
    policy = FailurePolicy()
    failures: tuple[FailureRecord, ...] = ()
    for k, inst in enumerate(["a", "b", "a"]):
        failures = policy.record(failures, Inst(inst), f"e{k}", T0 + k * MIN)
    assert [f.message for f in policy.live(failures, T0 + 3 * MIN)] == ["e0", "e1", "e2"]
    assert policy.last_error(failures, T0 + 3 * MIN) == "e2"
    assert policy.failed_instances(failures, T0 + 3 * MIN) == {"a", "b"}


def test_custom_policy_numbers() -> None:
    policy = FailurePolicy(max_failures=1, window_ms=1_000, expiry_ms=2_000)
    failures = policy.record((), Inst("i"), "x", 0)
    assert policy.blocked(failures, 999)
    assert not policy.blocked(failures, 1_000)
    assert policy.last_error(failures, 1_999) == "x" and policy.last_error(failures, 2_000) is None


def test_no_failures() -> None:
    policy = FailurePolicy()
    assert not policy.blocked((), T0) and policy.last_error((), T0) is None and policy.live((), T0) == ()
