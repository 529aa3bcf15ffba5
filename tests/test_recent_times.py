"""The first attempt's limit in a batch, from the process's recent delivery times."""

from __future__ import annotations

from worker.quarantine import RecentTimes


def test_a_new_process_uses_the_floor_not_the_full_limit() -> None:
    times = RecentTimes()
    assert times.limit(30.0, floor=2.0, factor=20.0) == 2.0
    for _ in range(RecentTimes.MIN_SAMPLES - 1):
        times.add(0.001)
    assert times.limit(30.0, floor=2.0, factor=20.0) == 2.0
    # A floor above the full limit never raises the limit.
    assert times.limit(1.5, floor=2.0, factor=20.0) == 1.5


def test_the_limit_follows_the_99th_percentile_between_floor_and_full_limit() -> None:
    times = RecentTimes()
    for _ in range(200):
        times.add(0.01)
    assert times.limit(30.0, floor=0.1, factor=20.0) == 0.2
    assert times.limit(30.0, floor=2.0, factor=20.0) == 2.0
    for _ in range(200):
        times.add(1.0)
    assert times.limit(30.0, floor=2.0, factor=20.0) == 20.0
    assert times.limit(10.0, floor=2.0, factor=20.0) == 10.0


def test_no_floor_means_no_tighter_limit() -> None:
    times = RecentTimes()
    for _ in range(100):
        times.add(0.01)
    assert times.limit(30.0, floor=0.0, factor=20.0) == 30.0
