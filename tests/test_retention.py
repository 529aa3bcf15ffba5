"""Retention of the publish ledger and the execution records (``akhbar reconcile`` prunes them), on
the real PostgreSQL: only what is past its retention and no longer needed is deleted, a bounded
batch per transaction, and rows another transaction holds locked are skipped, not waited for."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import insert, select

from tests.conftest import ROOT

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _empty(url: str) -> None:
    with psycopg.connect(_plain(url), autocommit=True) as conn:
        conn.execute("TRUNCATE executions, published_deliveries, deliveries")


def _delivery(delivery_id: str, status: str = "new") -> dict[str, object]:
    return {
        "id": delivery_id, "source": "retention", "source_id": delivery_id, "format": "text",
        "correlation_id": "retention", "received_at": NOW - 60 * DAY, "processed_at": NOW - 60 * DAY,
        "status": status, "attempts": 1,
    }


def _ledger(delivery_id: str, *, published: datetime, settled: datetime | None) -> dict[str, object]:
    return {
        "delivery_id": delivery_id, "run_id": "retention", "batch_id": f"task-{delivery_id}",
        "queue": "akhbar.bulk", "message": b"" if settled else b"kept until settled",
        "published_at": published, "last_sent_at": published, "sends": 1, "settled_at": settled,
    }


def _execution(delivery_id: str, *, started: datetime, outcome: str | None) -> dict[str, object]:
    return {
        "delivery_id": delivery_id, "task_id": f"task-{delivery_id}", "attempt": 0, "worker": "w1@test",
        "pid": 1, "started_at": started, "finished_at": None if outcome is None else started,
        "outcome": outcome,
    }


def _seed(url: str, n_old: int = 0) -> None:
    """Rows on either side of every line the retention draws (7 days for the ledger, 30 for
    execution records), plus ``n_old`` committed deliveries settled and attempted long ago."""
    from models import Delivery
    from models.ledger import Execution, PublishedDelivery
    from models.session import session_factory

    deliveries = [_delivery(i) for i in ("old-settled", "new-settled", "old-unsettled-committed")]
    deliveries.append(_delivery("quarantined", status="rejected"))
    ledger = [
        # settled 10 days ago, committed: past retention
        _ledger("old-settled", published=NOW - 11 * DAY, settled=NOW - 10 * DAY),
        # settled yesterday: kept
        _ledger("new-settled", published=NOW - 2 * DAY, settled=NOW - DAY),
        # published 10 days ago, never committed: the reconciler's work, never deleted
        _ledger("old-uncommitted", published=NOW - 10 * DAY, settled=None),
        # committed but not yet seen settled: kept until the reconciler settles it
        _ledger("old-unsettled-committed", published=NOW - 10 * DAY, settled=None),
        # settled long ago, but the delivery is not in the store (taken out by `dlq replay` on
        # another path): kept, as anything whose delivery is not committed
        _ledger("settled-not-committed", published=NOW - 12 * DAY, settled=NOW - 11 * DAY),
        # quarantined (rejected is committed too), settled long ago: past retention
        _ledger("quarantined", published=NOW - 12 * DAY, settled=NOW - 11 * DAY),
    ]
    executions = [
        _execution("old-settled", started=NOW - 40 * DAY, outcome="stored"),
        _execution("old-settled", started=NOW - 40 * DAY, outcome=None),  # a crash, then stored
        _execution("quarantined", started=NOW - 35 * DAY, outcome="error"),
        # a delivery never committed: its failed attempts still count toward quarantine
        _execution("old-uncommitted", started=NOW - 40 * DAY, outcome=None),
        _execution("old-uncommitted", started=NOW - 39 * DAY, outcome="timeout"),
        # recent
        _execution("new-settled", started=NOW - 2 * DAY, outcome="stored"),
        _execution("old-settled", started=NOW - 29 * DAY, outcome="skipped"),
    ]
    for i in range(n_old):
        deliveries.append(_delivery(f"bulk-{i:04d}"))
        ledger.append(_ledger(f"bulk-{i:04d}", published=NOW - 50 * DAY, settled=NOW - 50 * DAY))
    # ids grow with start times, as they do when workers write them
    bulk = [_execution(f"bulk-{i:04d}", started=NOW - 50 * DAY, outcome="stored") for i in range(n_old)]
    executions = bulk + sorted(executions, key=lambda e: e["started_at"])  # type: ignore[arg-type,return-value]
    with session_factory(url, write=True).begin() as session:
        session.execute(insert(Delivery), deliveries)
        session.execute(insert(PublishedDelivery), ledger)
        session.execute(insert(Execution), executions)


def _state(url: str) -> tuple[set[str], list[tuple[str, str | None]]]:
    from models.ledger import Execution, PublishedDelivery
    from models.session import session_factory

    with session_factory(url)() as session:
        ledger = set(session.scalars(select(PublishedDelivery.delivery_id)))
        executions = sorted(
            session.execute(select(Execution.delivery_id, Execution.outcome)).tuples(),
            key=lambda e: (e[0], e[1] or ""),
        )
    return ledger, executions


def _settings(url: str, **overrides: object) -> object:
    from akhbar.settings import Settings

    values: dict[str, object] = {"database_url": url, "ledger_retention_days": 7,
                                 "execution_retention_days": 30, "retention_batch": 3}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


KEPT_LEDGER = {"new-settled", "old-uncommitted", "old-unsettled-committed", "settled-not-committed"}
KEPT_EXECUTIONS = sorted([
    ("old-uncommitted", None), ("old-uncommitted", "timeout"), ("new-settled", "stored"),
    ("old-settled", "skipped"),
], key=lambda e: (e[0], e[1] or ""))


def test_prune_deletes_only_what_is_past_retention_and_no_longer_needed(module_pg: str) -> None:
    from worker.reconcile import prune

    _empty(module_pg)
    _seed(module_pg, n_old=10)
    report = prune(_settings(module_pg), now=NOW)  # type: ignore[arg-type]

    ledger, executions = _state(module_pg)
    assert ledger == KEPT_LEDGER
    assert executions == KEPT_EXECUTIONS
    assert report.ledger_deleted == 2 + 10
    assert report.executions_deleted == 3 + 10
    # A bounded batch per transaction: 12 ledger rows at 3 a transaction, and the executions' pages.
    assert report.transactions >= 12 // 3 + 17 // 3

    # A second pass finds nothing more; the same rows a day later, and the yesterday-settled row
    # goes once it is 7 days settled.
    again = prune(_settings(module_pg), now=NOW)  # type: ignore[arg-type]
    assert (again.ledger_deleted, again.executions_deleted) == (0, 0)
    later = prune(_settings(module_pg), now=NOW + 7 * DAY)  # type: ignore[arg-type]
    assert later.ledger_deleted == 1
    assert "new-settled" not in _state(module_pg)[0]
    assert {"old-uncommitted", "old-unsettled-committed", "settled-not-committed"} <= _state(module_pg)[0]


def test_zero_days_keeps_everything(module_pg: str) -> None:
    from worker.reconcile import prune

    _empty(module_pg)
    _seed(module_pg, n_old=4)
    before = _state(module_pg)
    report = prune(_settings(module_pg, ledger_retention_days=0, execution_retention_days=0),  # type: ignore[arg-type]
                   now=NOW + 1000 * DAY)
    assert (report.ledger_deleted, report.executions_deleted) == (0, 0)
    assert _state(module_pg) == before


def test_locked_rows_are_skipped_not_waited_for(module_pg: str) -> None:
    """A transaction holding a ledger row and an execution row locked (a worker finishing it, a
    replay taking it back) neither blocks the pass nor loses the rows: the next pass takes them."""
    from worker.reconcile import prune

    _empty(module_pg)
    _seed(module_pg, n_old=6)
    with psycopg.connect(_plain(module_pg)) as holder:
        holder.execute("SELECT 1 FROM published_deliveries WHERE delivery_id = 'bulk-0002' FOR UPDATE")
        holder.execute("SELECT 1 FROM executions WHERE delivery_id = 'bulk-0004' FOR UPDATE")
        done: dict[str, object] = {}

        def run() -> None:
            done["report"] = prune(_settings(module_pg), now=NOW)  # type: ignore[arg-type]

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(30)
        assert not thread.is_alive(), "pruning waited for a locked row"
        ledger, executions = _state(module_pg)
        assert "bulk-0002" in ledger and ("bulk-0004", "stored") in executions
        assert not any(d.startswith("bulk-") and d != "bulk-0002" for d in ledger)
        holder.rollback()
    report = prune(_settings(module_pg), now=NOW)  # type: ignore[arg-type]
    assert (report.ledger_deleted, report.executions_deleted) == (1, 1)
    ledger, executions = _state(module_pg)
    assert ledger == KEPT_LEDGER
    assert executions == KEPT_EXECUTIONS


def test_reconcile_command_prunes(module_pg: str, redis_url: str, redis_prefix: str) -> None:
    """`akhbar reconcile` (one pass; nothing to publish again here) runs the retention pass."""
    import os

    _empty(module_pg)
    # Real time this time: the rows are dated relative to now.
    from models import Delivery
    from models.base import utcnow
    from models.ledger import PublishedDelivery
    from models.session import session_factory

    now = utcnow()
    with session_factory(module_pg, write=True).begin() as session:
        session.execute(insert(Delivery), [_delivery("cli-old"), _delivery("cli-new")])
        session.execute(insert(PublishedDelivery), [
            _ledger("cli-old", published=now - 9 * DAY, settled=now - 8 * DAY),
            _ledger("cli-new", published=now - DAY, settled=now - DAY),
        ])
    env = {k: v for k, v in os.environ.items() if not k.startswith("AKHBAR_")}
    env.update(AKHBAR_DATABASE_URL=module_pg, AKHBAR_REDIS_URL=redis_url, AKHBAR_REDIS_PREFIX=redis_prefix,
               AKHBAR_LEDGER_RETENTION_DAYS="7", AKHBAR_LOG_FORMAT="json")
    done = subprocess.run([sys.executable, "-m", "akhbar.cli", "reconcile", "--json"], cwd=ROOT, env=env,
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b'"pruned_ledger":1' in done.stdout, done.stdout
    assert _state(module_pg)[0] == {"cli-new"}
