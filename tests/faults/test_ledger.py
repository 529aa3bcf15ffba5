"""The publish ledger and the reconciler: a producer that dies between writing the ledger and
publishing loses nothing, in distributed and in embedded mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.faults.conftest import account, corpus, publish, to_items, wait_committed
from tests.faults.harness import ROOT, Env

pytestmark = [pytest.mark.faults]


def _messages(publisher, records, run_id):  # type: ignore[no-untyped-def]
    return [publisher.wrap(item, run_id=run_id, correlation_id=run_id) for item in to_items(records)]


def test_reconcile_publishes_what_a_dying_producer_never_sent(env: Env) -> None:
    """50 deliveries written to the ledger but never published (the producer died in between),
    100 published normally: ``akhbar reconcile`` publishes exactly the 50, once, and a second pass
    finds nothing left to do."""
    run = publish(env, corpus(100, offset=7000))
    orphans = _messages(run.publisher, corpus(50, offset=7100), run.run_id)
    for start in range(0, len(orphans), 25):
        run.publisher.record(orphans[start : start + 25], queue="akhbar.bulk", task_id=str(uuid.uuid4()))
    env.start_workers(1)
    first = env.cli("reconcile", "--grace", "0", "--json")
    assert first.returncode == 0, first.stderr.decode()[-2000:]
    report = json.loads(first.stdout.decode().splitlines()[-1])
    # The 100 published are committed or still in the broker: never published twice.
    assert report["republished"] == len(orphans)
    assert report["republished"] + report["settled"] + report["in_flight"] == 150
    ids = run.ids + [m.delivery_id for m in orphans]
    assert wait_committed(env, run.run_id, len(ids), 120)
    second = env.cli("reconcile", "--grace", "0", "--json")
    assert json.loads(second.stdout.decode().splitlines()[-1])["republished"] == 0
    figures = account(env, ids, "ledger: producer died before publishing")
    assert figures.lost == 0 and figures.stored_duplicates == 0 and figures.double_effects == 0


def test_embedded_reconcile(tmp_path: Path) -> None:
    """Embedded mode (SQLite, in-process queue): deliveries in the ledger of a process that died
    are run by ``akhbar reconcile`` with its own in-process worker."""
    from akhbar.settings import Settings
    from models.session import upgrade
    from producers.publish import Publisher

    url = f"sqlite:///{tmp_path / 'akhbar.db'}"
    upgrade(url)
    settings = Settings(database_url=url)
    publisher = Publisher(settings)
    run_id = uuid.uuid4().hex
    orphans = _messages(publisher, corpus(20, offset=7200), run_id)
    publisher.record(orphans, queue=settings.queue_bulk, task_id=str(uuid.uuid4()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AKHBAR_")}
    env.update(AKHBAR_DATABASE_URL=url, AKHBAR_LOG_FORMAT="json", AKHBAR_LOG_LEVEL="WARNING")
    result = subprocess.run(
        [sys.executable, "-m", "akhbar.cli", "reconcile", "--grace", "0", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    report = json.loads(result.stdout.decode().splitlines()[-1])
    assert report["republished"] == 20 and report["pending"] == 0
    from sqlalchemy import func, select

    from models import Delivery
    from models.session import session_factory

    with session_factory(url)() as session:
        assert (
            session.scalar(select(func.count()).select_from(Delivery).where(Delivery.run_id == run_id)) == 20
        )
