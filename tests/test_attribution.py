"""A worker that dies in the middle of a batch: the lost attempt is charged to the delivery it was
running (its running mark in Redis), not to its batch-mates, and a later retry of the message
does not erase that charge. Real PostgreSQL and Redis; the crash is an attempt abandoned halfway,
as a killed process leaves it (execution records open, nothing committed)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
import redis

from tests.conftest import read_corpus


def _batch(offset: int, n: int = 6) -> object:
    from producers.records import build_delivery
    from worker.messages import Delivery, DeliveryMessage, IngestBatch, new_delivery_id

    messages = []
    for article in read_corpus(offset + n)[offset:]:
        record = {"id": f"{article['id']}#attribution", "title": article["title"], "body": article["body"],
                  "source": "attribution", "url": article["url"]}
        item = build_delivery(record, default_source="attribution", raw=orjson.dumps(record))
        assert isinstance(item, Delivery)
        messages.append(DeliveryMessage(delivery_id=new_delivery_id(), received_at=datetime.now(UTC),
                                        correlation_id="attribution", run_id=None, record=item))
    return IngestBatch(deliveries=messages)


def _runner(url: str, task_id: str, attempt: int, marks: object) -> object:
    from models.session import session_factory
    from worker.quarantine import Attempt, AttemptRunner

    return AttemptRunner(session_factory(url, write=True),
                         Attempt(task_id=task_id, attempt=attempt, worker="w@test", pid=os.getpid()),
                         max_attempts=3, delivery_time_limit=30, marks=marks)  # type: ignore[arg-type]


def _history(url: str, ids: list[str]) -> dict[str, int]:
    from models import ledger
    from models.session import session_factory

    with session_factory(url)() as session:
        return {d: h.failed for d, h in ledger.history(session, ids).items()}


@pytest.fixture()
def marks(redis_url: str, redis_prefix: str, tmp_path) -> Iterator[object]:
    from worker.quarantine import RunningMarks

    client = redis.Redis.from_url(redis_url)
    yield RunningMarks(client, f"{redis_prefix}-attribution", ttl=60, where=tmp_path)
    client.close()


def _die_marked(marks: object, attempt: object, delivery_id: str) -> None:
    """Mark ``delivery_id`` as running and die: the worker node publishes the mark before it
    requeues the message (worker/requeue.py)."""
    from worker.marks import publish_lost

    assert marks.mark(attempt, delivery_id)  # type: ignore[attr-defined]
    marks.own_file().close(remove=False)  # type: ignore[attr-defined]  # dead: no lock, the file stays
    assert publish_lost(marks.client, os.getpid(), attempt.task_id, 60,  # type: ignore[attr-defined]
                        marks.where) == delivery_id  # type: ignore[attr-defined]
    marks.close()  # type: ignore[attr-defined]  # the next "process" makes its own file


def _crash_in_batch_mode(url: str, task_id: str, batch: object, marks: object, running: int) -> str:
    """An attempt that started every record (batch mode) and died while running delivery
    ``running``: its mark says so, nothing was committed, its records stay open."""
    runner = _runner(url, task_id, 0, marks)
    plan = runner.begin(batch)  # type: ignore[attr-defined]
    assert not plan.isolated and len(plan.exec_ids) == len(batch.deliveries)  # type: ignore[attr-defined]
    culprit = batch.deliveries[running].delivery_id  # type: ignore[attr-defined]
    _die_marked(marks, runner.attempt, culprit)  # type: ignore[attr-defined]
    return str(culprit)


def test_crash_is_charged_to_the_running_delivery_alone(module_pg: str, marks: object) -> None:
    batch = _batch(0)
    ids = [d.delivery_id for d in batch.deliveries]  # type: ignore[attr-defined]
    task_id = str(uuid.uuid4())
    culprit = _crash_in_batch_mode(module_pg, task_id, batch, marks, running=3)
    assert _history(module_pg, ids) == dict.fromkeys(ids, 1)  # every record open: all charged

    # The redelivered message (same task, same retry number) reads the mark.
    again = _runner(module_pg, task_id, 0, marks)
    plan = again.begin(batch)  # type: ignore[attr-defined]
    assert plan.lost_while == culprit
    assert [d.delivery_id for d in plan.suspects] == [culprit]
    assert [d.delivery_id for d in plan.together] == [i for i in ids if i != culprit]
    result = again.run()  # type: ignore[attr-defined]
    assert len(result.outcomes) == len(ids) - 1 and not result.failed
    assert _history(module_pg, ids) == {culprit: 1}
    assert result.deferred == [culprit]  # its next attempt goes behind everything else

    # The retry of the message (retry number 1) must not take the sealed crash for a record its
    # worker failed to finish: the culprit still has its failed attempt, runs alone and is stored.
    retry = _runner(module_pg, task_id, 1, marks)
    plan = retry.begin(batch)  # type: ignore[attr-defined]
    assert plan.skipped == len(ids) - 1 and [d.delivery_id for d in plan.suspects] == [culprit]
    assert _history(module_pg, [culprit]) == {culprit: 1}
    result = retry.run()  # type: ignore[attr-defined]
    assert [o.delivery_id for o in result.outcomes] == [culprit] and not result.deferred


def test_a_delivery_that_keeps_killing_is_quarantined_after_three(module_pg: str, marks: object) -> None:
    batch = _batch(10)
    ids = [d.delivery_id for d in batch.deliveries]  # type: ignore[attr-defined]
    task_id = str(uuid.uuid4())
    culprit = _crash_in_batch_mode(module_pg, task_id, batch, marks, running=0)
    # Redelivered: the others are committed, the culprit deferred to retry 1.
    first = _runner(module_pg, task_id, 0, marks)
    first.begin(batch)  # type: ignore[attr-defined]
    assert first.run().deferred == [culprit]  # type: ignore[attr-defined]
    # Retry 1 kills its worker twice while running the culprit alone (redelivered each time).
    for _ in range(2):
        runner = _runner(module_pg, task_id, 1, marks)
        plan = runner.begin(batch)  # type: ignore[attr-defined]
        assert [d.delivery_id for d in plan.suspects] == [culprit] and not plan.poison
        # Die right after starting it alone: its record is open, its mark names it.
        with runner.sessions.begin() as session:  # type: ignore[attr-defined]
            runner._start(session, [culprit])  # type: ignore[attr-defined]
        _die_marked(marks, runner.attempt, culprit)  # type: ignore[attr-defined]
    assert _history(module_pg, [culprit]) == {culprit: 3}
    last = _runner(module_pg, task_id, 1, marks)
    plan = last.begin(batch)  # type: ignore[attr-defined]
    assert [d.delivery_id for d, _ in plan.poison] == [culprit] and not plan.todo
    assert last.quarantine_poison() == 1  # type: ignore[attr-defined]
    assert _history(module_pg, [i for i in ids if i != culprit]) == {}


def test_without_marks_every_delivery_of_the_lost_attempt_is_a_suspect(module_pg: str,
                                                                        marks: object) -> None:
    """The fallback when the mark was not published (no mark file, Redis away): slower (each
    alone), never less safe."""
    batch = _batch(20, n=4)
    ids = [d.delivery_id for d in batch.deliveries]  # type: ignore[attr-defined]
    task_id = str(uuid.uuid4())
    runner = _runner(module_pg, task_id, 0, None)
    runner.begin(batch)  # type: ignore[attr-defined]  # and dies: no mark
    again = _runner(module_pg, task_id, 0, marks)
    plan = again.begin(batch)  # type: ignore[attr-defined]
    assert plan.lost_while is None and not plan.together
    assert sorted(d.delivery_id for d in plan.suspects) == sorted(ids)
    result = again.run()  # type: ignore[attr-defined]
    assert len(result.outcomes) == len(ids) and not result.deferred


def test_a_batch_logs_its_stage_lines_once_it_has_committed(module_pg: str, monkeypatch) -> None:
    """Each ``stage_completed`` line of a batch is written after its transaction committed: a reader
    of the log who looks the delivery up finds it stored, and nothing is logged inside the
    transaction, where the batch holds locks other batches wait for."""
    from sqlalchemy import func, select

    from models import Delivery as DeliveryRow
    from models.session import session_factory
    from worker import pipeline

    batch = _batch(20, n=4)
    ids = [d.delivery_id for d in batch.deliveries]  # type: ignore[attr-defined]
    reader = session_factory(module_pg)
    seen: list[tuple[str, str, int]] = []  # (delivery, stage, its rows visible to another connection)
    real_info = pipeline.log.info

    def info(event: str, **kw: object) -> None:
        if event == "stage_completed":
            with reader() as session:
                stored = session.scalar(select(func.count()).select_from(DeliveryRow)
                                        .where(DeliveryRow.id == kw["delivery_id"]))
            seen.append((str(kw["delivery_id"]), str(kw["stage"]), int(stored or 0)))
        real_info(event, **kw)

    monkeypatch.setattr(pipeline.log, "info", info)
    runner = _runner(module_pg, str(uuid.uuid4()), 0, None)
    plan = runner.begin(batch)  # type: ignore[attr-defined]
    assert len(plan.together) == len(ids)  # type: ignore[attr-defined]
    result = runner.run()  # type: ignore[attr-defined]
    assert len(result.outcomes) == len(ids) and not result.failed
    assert {d for d, _, _ in seen} == set(ids)
    assert {s for _, s, _ in seen} >= {"normalize", "dedup", "persist"}
    assert all(stored == 1 for _, _, stored in seen), [s for s in seen if s[2] != 1]
