"""A batch that lost to a concurrent one is retried at once; an outage waits a backoff.

The errors are real PostgreSQL ones: a story merged away while a batch that read it was writing
(the foreign key refuses the batch once the merge commits), and a deadlock between two sessions.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, delete, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from models import Delivery as DeliveryRow
from models import Fingerprint, SourceKey, Story, StoryVersion
from worker import pipeline
from worker.messages import Delivery, DeliveryMessage, IngestBatch, new_delivery_id
from worker.stages.neardup import StoriesMoved
from worker.tasks import retry_countdown

BODY = "أعلنت الوزارة اليوم عن خطة جديدة لتطوير الطرق في المدن الكبرى خلال العام المقبل."
OTHER = "افتتح المعرض الدولي للكتاب أبوابه أمس بمشاركة مئات من دور النشر العربية والأجنبية."


def _msg(source: str, sid: str, body: str) -> DeliveryMessage:
    return DeliveryMessage(delivery_id=new_delivery_id(), received_at=datetime.now(UTC), correlation_id="c",
                           run_id="conflict", record=Delivery(id=sid, source=source, title="خبر", body=body))


def _waiting_on_a_lock(sessions: object, pid: int, timeout: float = 10.0) -> None:
    """Until backend ``pid`` waits for a lock (the race is then set up, whatever the machine's speed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions() as s:  # type: ignore[operator]
            waiting = s.scalar(text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :p"),
                               {"p": pid})
        if waiting == "Lock":
            return
        time.sleep(0.02)
    with sessions() as s:  # type: ignore[operator]
        rows = s.execute(text("SELECT pid, state, wait_event_type, wait_event, left(query, 120)"
                              " FROM pg_stat_activity WHERE datname = current_database()")).all()
    raise AssertionError(f"backend {pid} never waited for a lock: {rows}")


def test_a_story_merged_away_under_a_batch_is_a_conflict_retried_at_once(committed) -> None:
    sessions, source = committed
    first, other = _msg(source, "a1", BODY), _msg(source, "b1", OTHER)
    with sessions.begin() as s:
        outcomes = pipeline.process_batch(s, IngestBatch(deliveries=[first, other]))
    merged_away, kept = outcomes[0].story_id, outcomes[1].story_id
    assert merged_away is not None and kept is not None and merged_away != kept

    # A concurrent merge of the first story into the other, as the near-duplicate stage writes it:
    # everything that names the story moves, then the story goes; the transaction stays open.
    merger = sessions()
    merger.begin()
    for table in (DeliveryRow, SourceKey, Fingerprint):
        merger.execute(update(table).where(table.story_id == merged_away).values(story_id=kept))
    merger.execute(delete(StoryVersion).where(StoryVersion.story_id == merged_away))
    merger.execute(delete(Story).where(Story.id == merged_away))

    # Meanwhile a batch resends the first delivery: it reads the committed key (the first story)
    # and writes its delivery naming that story, which waits for the merge's lock.
    raised: list[BaseException] = []
    backend: list[int] = []

    def resend() -> None:
        try:
            with sessions.begin() as s:
                backend.append(s.scalar(text("SELECT pg_backend_pid()")))
                pipeline.process_batch(s, IngestBatch(deliveries=[_msg(source, "a1", BODY)]))
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=resend)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not backend and time.monotonic() < deadline:
            time.sleep(0.01)
        _waiting_on_a_lock(sessions, backend[0])
        merger.commit()
    finally:
        merger.close()  # rolled back if the race was never set up: the thread goes on
        thread.join(30)

    assert len(raised) == 1, "the resent delivery was written against a story merged away"
    exc = raised[0]
    assert isinstance(exc, IntegrityError) and exc.orig.sqlstate == "23503"  # type: ignore[union-attr]
    assert pipeline.is_transient(exc) and pipeline.is_conflict(exc)
    assert retry_countdown(exc, retries=0, cap=60) == 0

    # Run again, the batch reads the story the first one went into.
    with sessions.begin() as s:
        again = pipeline.process_batch(s, IngestBatch(deliveries=[_msg(source, "a1", BODY)]))
    assert [(o.status, o.story_id) for o in again] == [("duplicate", kept)]


def test_a_deadlock_is_a_conflict(migrated_pg: str) -> None:
    engine = create_engine(migrated_pg)
    keys = (int(uuid.uuid4().int % 2**62), int(uuid.uuid4().int % 2**62))
    raised: list[BaseException] = []
    barrier = threading.Barrier(2)

    def take(first: int, second: int) -> None:
        try:
            with Session(engine) as s, s.begin():
                s.execute(text("SET LOCAL deadlock_timeout = '100ms'"))
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": first})
                barrier.wait(10)
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": second})
        except BaseException as exc:
            raised.append(exc)

    threads = [threading.Thread(target=take, args=order) for order in (keys, keys[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    engine.dispose()
    assert len(raised) == 1, "PostgreSQL ends a deadlock by failing one of its transactions"
    assert isinstance(raised[0], OperationalError)
    assert pipeline.is_transient(raised[0]) and pipeline.is_conflict(raised[0])
    assert retry_countdown(raised[0], retries=0, cap=60) == 0


def test_the_near_duplicate_stages_moving_stories_are_a_conflict() -> None:
    assert pipeline.is_conflict(StoriesMoved())


def test_a_conflict_that_comes_back_waits_a_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches that keep colliding are spread apart: only the first retry of a message is at once."""
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    assert [retry_countdown(StoriesMoved(), retries=n, cap=60) for n in (0, 1, 2, 6)] == [0, 4, 8, 60]


def test_an_outage_waits_a_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OperationalError) as refused:
        engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
        with engine.connect():
            pass
    exc = refused.value
    assert pipeline.is_transient(exc) and not pipeline.is_conflict(exc)
    # Full jitter: a draw between 0 and the exponential bound, capped.
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    assert [retry_countdown(exc, retries=n, cap=60) for n in (0, 1, 4, 5, 9)] == [2, 4, 32, 60, 60]
    monkeypatch.setattr(random, "uniform", lambda low, high: low)
    assert retry_countdown(exc, retries=3, cap=60) == 0

