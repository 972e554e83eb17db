"""Clocks: ManualClock moves only when told to; SystemClock reads real time in the right units."""

from __future__ import annotations

import time

from kserve_mesh.core.clock import Clock, ManualClock, SystemClock


def test_manual_clock_moves_both_readings_together() -> None:
    clock: Clock = ManualClock(start_ms=1_000)
    assert clock.now_ms() == 1_000
    mono = clock.monotonic()
    assert clock.now_ms() == 1_000 and clock.monotonic() == mono  # no drift without advance
    assert isinstance(clock, ManualClock)
    clock.advance(1.5)
    assert clock.now_ms() == 2_500
    assert clock.monotonic() == mono + 1.5


def test_system_clock_is_epoch_milliseconds() -> None:
    clock: Clock = SystemClock()
    before = int(time.time() * 1000)
    now = clock.now_ms()
    after = int(time.time() * 1000)
    assert before - 1 <= now <= after + 1
    assert clock.monotonic() <= clock.monotonic()
