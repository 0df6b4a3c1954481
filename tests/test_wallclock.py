"""The live clock never runs backwards, whatever the system clock does."""

from __future__ import annotations

import pytest

import scheduler.wallclock
from scheduler.wallclock import WallClock


def test_a_system_clock_stepping_back_does_not_move_time_backwards(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([100.0, 105.0, 90.0, 106.0])
    monkeypatch.setattr(scheduler.wallclock.time, "time", lambda: next(readings))
    clock = WallClock()
    assert [clock.now() for _ in range(4)] == [100.0, 105.0, 105.0, 106.0]
