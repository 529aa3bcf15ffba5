"""Scenario 9: poison deliveries that raise, hang or kill their process, mixed into good ones."""

from __future__ import annotations

import json
import random
import time
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.faults.conftest import (
    account,
    assert_guarantees,
    corpus,
    publish,
    report,
    utcnow,
    wait_committed,
)
from tests.faults.harness import Env

pytestmark = [pytest.mark.faults, pytest.mark.slow]

# The rate, 1% (it names 50 poison deliveries in 5,000), at half its size: 25 in 2,500,
# after a clean run of 2,500 as the reference. The full size passes too (degradation 16.7%) but
# takes about 4 minutes on a loaded 2-core machine, too much of the suite's time in CI.
GOOD = 2500
POISON = {"raise": 9, "hang": 8, "kill": 8}
EXPECTED_CODE = {"raise": "processing_error", "hang": "timeout", "kill": "worker_lost"}


def _commit_times(env: Env, ids: list[str]) -> list[datetime]:
    from models import Delivery
    from models.session import session_factory

    with session_factory(env.database_url)() as session:
        return sorted(session.scalars(select(Delivery.processed_at).where(Delivery.id.in_(ids))))


def test_9_poison_deliveries_are_quarantined_within_three_attempts(env: Env) -> None:
    """Each poison delivery ends quarantined, with the reason, after at most 3 attempts; the rest
    are stored, and none of them is ever charged a failed attempt (a crash is charged to the
    delivery that was running). The time the rest takes is reported against a clean run of the
    same size, all of it and its first 95% (reported, not asserted: tests assert behaviour)."""
    from models import Delivery, Execution, ledger
    from models.session import session_factory

    rng = random.Random(9)
    # A clean run and then the poisoned one, both queued before the workers start: the clean one
    # is the reference, measured under the same conditions.
    clean = publish(env, corpus(GOOD, offset=0))
    good = corpus(GOOD, offset=GOOD)
    poison: list[dict[str, Any]] = []
    for kind, n in POISON.items():
        for i, article in enumerate(corpus(n, offset=2 * GOOD + len(poison))):
            poison.append(dict(article, id=f"{article['id']}#poison-{kind}-{i}", failpoint=kind))
    records = list(good)
    for p in poison:
        records.insert(rng.randrange(len(records) + 1), p)
    run = publish(env, records)
    ids_by_source_id = dict(zip([r["id"] for r in records], run.ids, strict=True))
    poison_ids = {ids_by_source_id[p["id"]]: p["failpoint"] for p in poison}
    rest = [i for i in run.ids if i not in poison_ids]

    env.start_workers(2, concurrency=2, AKHBAR_FAILPOINTS="poison", AKHBAR_DELIVERY_TIME_LIMIT="1.5")
    started_at = utcnow()
    assert clean.wait(900)
    assert wait_committed(env, run.run_id, len(run.ids), 900)
    seconds = time.monotonic() - run.started
    clean_times = _commit_times(env, clean.ids)
    rest_times = _commit_times(env, rest)
    clean_end = clean_times[-1]

    def span(times: list[datetime], start: datetime, share: float) -> float:
        return (times[int(share * (len(times) - 1))] - start).total_seconds()

    figures = account(env, run.ids, "9 poison deliveries")
    figures.seconds = round(seconds, 2)
    with session_factory(env.database_url)() as session:
        rows = session.execute(
            select(Delivery.id, Delivery.status, Delivery.error).where(Delivery.id.in_(list(poison_ids)))
        ).all()
        attempts = dict(
            session.execute(
                select(Execution.delivery_id, func.count())
                .where(
                    Execution.delivery_id.in_(list(poison_ids)),
                    (Execution.outcome.is_(None)) | Execution.outcome.in_(("timeout", "error")),
                )
                .group_by(Execution.delivery_id)
            )
            .tuples()
            .all()
        )
        # No delivery but the poison ones was ever charged a failed attempt: a crash in a batch is
        # charged to the delivery that was running (its running mark), not to its batch-mates.
        charged = ledger.history(session, rest)
    clean_p95, rest_p95 = span(clean_times, started_at, 0.95), span(rest_times, clean_end, 0.95)
    clean_all, rest_all = span(clean_times, started_at, 1.0), span(rest_times, clean_end, 1.0)
    figures.notes.update(
        poison=len(poison_ids),
        max_failed_attempts=max(attempts.values(), default=0),
        clean_s=round(clean_all, 2),
        rest_s=round(rest_all, 2),
        degradation=round(rest_all / clean_all - 1, 3),
        degradation_p95=round(rest_p95 / clean_p95 - 1, 3),
        pool_children_lost=sum(w.tail(50_000_000).count("exited with 'signal 9") for w in env.workers),
    )
    report(figures)
    assert_guarantees(figures)
    assert figures.quarantined == len(poison_ids)
    assert figures.stored + figures.matched == len(rest)
    for delivery_id, status, error in rows:
        kind = poison_ids[delivery_id]
        assert status == "rejected" and error["code"] == EXPECTED_CODE[kind], (kind, error)
        assert error.get("traceback") or kind == "kill"
        assert 1 <= attempts.get(delivery_id, 0) <= 3, (kind, attempts.get(delivery_id))
    assert all(w.alive() for w in env.workers)
    assert charged == {}, sorted(charged.items())[:5]
    # A killing poison takes a worker down once per attempt, at most 3 times, and nothing else does.
    assert figures.notes["pool_children_lost"] <= 3 * POISON["kill"]

    # After a fix (workers without the fail point), the dead-letter set is listed and replayed.
    for w in env.workers:
        w.kill()
    env.start_workers(1)
    listed = env.cli("dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr.decode()[-2000:]
    entries = [json.loads(line) for line in listed.stdout.decode().splitlines()]
    assert {e["delivery_id"] for e in entries} == set(poison_ids)
    replayed = env.cli("dlq", "replay", "--reason", "timeout", "--json", "--timeout", "300")
    assert replayed.returncode == 0, replayed.stderr.decode()[-2000:]
    assert json.loads(replayed.stdout)["replayed"] == POISON["hang"]
    replayed = env.cli("dlq", "replay", "--json", "--timeout", "300")
    assert replayed.returncode == 0, replayed.stderr.decode()[-2000:]
    assert json.loads(replayed.stdout)["replayed"] == len(poison_ids) - POISON["hang"]
    after = account(env, run.ids, "9 poison deliveries, replayed after a fix")
    assert after.quarantined == 0 and after.lost == 0 and after.double_effects == 0
    assert after.stored + after.matched == len(run.ids)
