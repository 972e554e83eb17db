"""The rules of leader election over a Lease (kube/core/lease.py), in virtual time."""

from __future__ import annotations

import datetime as dt

import pytest

from kserve_mesh.kube.core.lease import Election, LeaseRecord, lease_object, micro_time

WALL = dt.datetime(2026, 12, 6, 21, 0, 0, 123456, tzinfo=dt.UTC)


def test_a_free_or_missing_lease_is_taken_at_once() -> None:
    e = Election("a", 15)
    assert not e.held_by_other(LeaseRecord(), now=0.0)
    first = e.claim(None, WALL)
    assert (first.holder, first.duration_s, first.transitions) == ("a", 15, 0)
    assert first.acquire_time == first.renew_time == "2026-12-06T21:00:00.123456Z"
    released = LeaseRecord("", 1, "x", "y", 4)
    assert e.claim(released, WALL).transitions == 4  # nobody held it: no transition


def test_another_holder_counts_as_alive_until_its_record_stops_changing_for_the_duration() -> None:
    e = Election("b", 15)
    held = LeaseRecord("a", 3, "t0", "t0", 0)
    assert e.held_by_other(held, now=100.0)
    assert e.held_by_other(held, now=102.9)
    renewed = LeaseRecord("a", 3, "t0", "t1", 0)
    assert e.held_by_other(renewed, now=105.0)  # a change restarts the clock, whatever renewTime says
    assert e.held_by_other(renewed, now=107.9)
    assert not e.held_by_other(renewed, now=108.0)  # 3 s without a change: expired
    taken = e.claim(renewed, WALL)
    assert (taken.holder, taken.transitions) == ("b", 1) and taken.acquire_time == micro_time(WALL)


def test_clocks_written_in_the_lease_are_not_trusted() -> None:
    """A holder whose renewTime lies years in the past is alive while its record keeps changing."""
    e = Election("b", 15)
    for i, now in enumerate((0.0, 2.0, 4.0, 6.0)):
        assert e.held_by_other(LeaseRecord("a", 3, "1999-01-01T00:00:00.000000Z",
                                           f"1999-01-01T00:00:0{i}.000000Z", 0), now)


def test_the_holder_renews_keeping_its_acquire_time_and_may_release() -> None:
    e = Election("a", 15)
    mine = LeaseRecord("a", 15, "t0", "t0", 2)
    assert not e.held_by_other(mine, now=0.0)
    renewed = e.claim(mine, WALL)
    assert (renewed.acquire_time, renewed.transitions, renewed.renew_time) == ("t0", 2, micro_time(WALL))
    released = e.release(renewed, WALL)
    assert released.holder == "" and released.duration_s == 1
    other = Election("b", 15)
    assert not other.held_by_other(released, now=0.0)


def test_lease_object_and_bad_arguments() -> None:
    record = LeaseRecord("a", 15, "t0", "t1", 1)
    obj = lease_object("leader", "sys", record)
    assert obj["apiVersion"] == "coordination.k8s.io/v1" and obj["kind"] == "Lease"
    assert LeaseRecord.of(obj) == record
    with pytest.raises(ValueError, match="identity"):
        Election("", 15)
    with pytest.raises(ValueError, match="lease duration"):
        Election("a", 0)
