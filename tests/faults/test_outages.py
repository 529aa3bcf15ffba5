"""The broker or the database goes away mid-run: scenarios 5 and 6 of the fault tier."""

from __future__ import annotations

import signal
import time

import pytest
from sqlalchemy import func, select

from tests.faults.conftest import (
    Progress,
    account,
    assert_guarantees,
    corpus,
    publish,
    recovery,
    report,
    unfinished_report,
    utcnow,
    wait_for,
)
from tests.faults.harness import Env

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def _republished(env: Env) -> int:
    from models import PublishedDelivery
    from models.session import session_factory

    with session_factory(env.database_url)() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(PublishedDelivery).where(PublishedDelivery.sends > 1)
            )
            or 0
        )


def test_5_redis_killed_and_restarted_without_persistence(env: Env) -> None:
    """Redis dies mid-run and comes back empty (no persistence): every queued and unacknowledged
    message is gone. The reconciler (``akhbar reconcile --every 1``) finds the deliveries in the
    publish ledger that are neither committed nor in the broker, and publishes them again."""
    run = publish(env, corpus(1000))
    reconciler = env.cli_background("reconcile", "--every", "1", "--json")
    try:
        env.start_workers(2)
        run.started = time.monotonic()
        total = len(run.ids)
        with Progress(env, run.run_id) as progress:
            assert wait_for(lambda: run.committed() >= total * 0.3, 120)
            fault_at = utcnow()
            env.redis.kill()
            time.sleep(2)
            env.redis.start()
            restarted = time.monotonic()
            restart_at = utcnow()
            assert run.wait(240), unfinished_report(env, run)
        figures = account(env, run.ids, "5 Redis restart without persistence")
        figures.recovery_s = progress.resumed_after(restarted)
        figures.settle_s = recovery(env, restart_at, caught="republished")
        figures.seconds = round(time.monotonic() - run.started, 2)
        figures.notes["republished_by_reconciler"] = _republished(env)
        figures.notes["queue_lost_at_s"] = round((restart_at - fault_at).total_seconds(), 2)
        report(figures)
        assert_guarantees(figures)
        assert figures.notes["republished_by_reconciler"] > 0  # the restart did lose queued messages
        assert all(w.alive() for w in env.workers)
    finally:
        reconciler.send_signal(signal.SIGTERM)
        assert reconciler.wait(30) == 0


def test_6_postgresql_stopped_for_20_seconds(env: Env) -> None:
    """PostgreSQL is stopped (immediate mode: a crash) for 20 s mid-run, then started: tasks retry
    with backoff, nothing is acknowledged as failed or quarantined, nothing is lost."""
    run = publish(env, corpus(1000))
    env.start_workers(2)
    run.started = time.monotonic()
    total = len(run.ids)
    with Progress(env, run.run_id) as progress:
        assert wait_for(lambda: run.committed() >= total * 0.3, 120)
        env.pg.stop("immediate")
        time.sleep(20)
        env.pg.start()
        started = time.monotonic()
        start_at = utcnow()
        assert run.wait(240), unfinished_report(env, run)
    figures = account(env, run.ids, "6 PostgreSQL stopped 20 s")
    figures.recovery_s = progress.resumed_after(started)
    figures.settle_s = recovery(env, start_at, caught="retried")
    figures.seconds = round(time.monotonic() - run.started, 2)
    events = [line.get("event") for w in env.workers for line in w.log_lines()]
    figures.notes["task_retries"] = events.count("batch_retry")
    report(figures)
    assert_guarantees(figures)
    assert figures.quarantined == 0 and figures.rejected == 0
    assert figures.notes["task_retries"] > 0
    assert "batch_retries_exhausted" not in events and "quarantine_failed" not in events
