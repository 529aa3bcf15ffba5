"""The per-delivery deadline: the full limit, and the stall check for work that does no I/O."""

from __future__ import annotations

import time

import pytest

from worker.quarantine import DeliveryTimeout, deadline


def _spin(seconds: float) -> int:
    """Compute for ``seconds`` of wall time (stays on the CPU)."""
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        n += sum(range(200))
    return n


def test_blocked_work_is_stopped_at_the_stall_limit_not_the_full_limit() -> None:
    started = time.monotonic()
    with pytest.raises(DeliveryTimeout, match=r"still running after [0-9.]+ s and blocked"), \
            deadline(30.0, stall=0.1):
        time.sleep(30)
    # Far below the 30 s limit: the first tick found the sleep off the CPU.
    assert time.monotonic() - started < 10


def test_work_that_keeps_the_cpu_runs_past_the_stall_limit() -> None:
    with deadline(30.0, stall=0.1):
        assert _spin(0.6) > 0


def test_work_that_keeps_the_cpu_still_stops_at_the_full_limit() -> None:
    with pytest.raises(DeliveryTimeout, match=r"still running after 0\.5 s$"), deadline(0.5, stall=0.1):
        _spin(60)


def test_blocked_after_computing_is_caught_by_a_later_tick() -> None:
    """The CPU is compared tick by tick, so a stall after a stretch of computing is not hidden by it."""
    with pytest.raises(DeliveryTimeout, match="blocked"), deadline(30.0, stall=0.1):
        _spin(0.35)
        time.sleep(30)


def test_without_stall_only_the_full_limit_applies() -> None:
    with deadline(30.0):
        time.sleep(0.4)
    with pytest.raises(DeliveryTimeout, match=r"still running after 0\.3 s$"), deadline(0.3):
        time.sleep(30)


def test_the_timer_is_disarmed_after_the_block() -> None:
    with deadline(0.2, stall=0.05):
        pass
    time.sleep(0.4)  # an alarm left armed would raise here (or kill the process)


def test_inside_alarm_handler_deadlines_only_arm_the_timer(monkeypatch) -> None:
    import signal

    from worker.quarantine import alarm_handler

    before = signal.getsignal(signal.SIGALRM)
    with alarm_handler():
        installs = []
        real = signal.signal
        monkeypatch.setattr(signal, "signal", lambda *a: installs.append(a) or real(*a))
        for _ in range(3):
            with deadline(0.5, stall=0.1):
                _spin(0.01)
        with pytest.raises(DeliveryTimeout, match="blocked"), deadline(30.0, stall=0.1):
            time.sleep(30)
        with pytest.raises(DeliveryTimeout, match=r"still running after 0\.3 s$"), deadline(0.3):
            _spin(60)
        monkeypatch.undo()
        assert installs == []  # the handler stayed; only the timer was armed and disarmed
    assert signal.getsignal(signal.SIGALRM) == before
    time.sleep(0.4)  # nothing left armed
