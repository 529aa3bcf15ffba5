"""A micro-batch written together: the same outcomes as one delivery at a time, on the real PostgreSQL.

Duplicates inside one batch, a delivery that fails and hands its keys to the next one, a delivery
charged alone, and two concurrent batches racing on the same keys (committed transactions on two
connections: those tests clean up their own rows).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from structlog.testing import capture_logs

from models import Delivery as DeliveryRow
from models import Fingerprint, SourceKey, Story, StoryVersion
from worker import pipeline
from worker.messages import Delivery, DeliveryMessage, IngestBatch, new_delivery_id
from worker.pipeline import process_batch

BODY_A = "أعلنت وزارة الصحة اليوم عن افتتاح مستشفى جديد في مدينة جدة.\nويضم المستشفى ثلاثمئة سرير."
BODY_B = "فاز المنتخب الوطني على نظيره في مباراة ودية أقيمت مساء أمس في الرياض بهدفين نظيفين."


def _msg(item: Delivery) -> DeliveryMessage:
    return DeliveryMessage(
        delivery_id=new_delivery_id(),
        received_at=datetime.now(UTC),
        correlation_id="c-batch",
        run_id="batch",
        record=item,
    )


def _story(source: str, sid: str, body: str, title: str = "خبر") -> Delivery:
    return Delivery(id=sid, source=source, title=title, body=body)


def test_duplicates_inside_one_batch_match_one_by_one(db_session) -> None:
    a = _msg(_story("wire", "a1", BODY_A))
    resent = _msg(_story("wire", "a1", BODY_A))  # same (source, id)
    # same match form (harakat, tatweel, alef with hamza), another outlet
    reprint = _msg(
        _story(
            "other", "x9", BODY_A.replace("وزارة", "وَزارة").replace("جديد", "جديـد").replace("اليوم", "أليوم")
        )
    )
    b = _msg(_story("wire", "b1", BODY_B))
    with capture_logs() as logs:
        outcomes = process_batch(db_session, IngestBatch(deliveries=[a, resent, reprint, b]))
    assert [o.status for o in outcomes] == ["new", "duplicate", "duplicate", "new"]
    story_a = outcomes[0].story_id
    assert outcomes[1].story_id == outcomes[2].story_id == story_a != outcomes[3].story_id
    assert outcomes[1].duplicate_of == outcomes[2].duplicate_of == a.delivery_id
    assert db_session.scalar(select(func.count()).select_from(Story)) == 2
    assert db_session.scalar(select(func.count()).select_from(StoryVersion)) == 2
    assert db_session.scalar(select(func.count()).select_from(Fingerprint)) == 2
    keys = {
        (k.source, k.source_id): (k.delivery_id, k.story_id) for k in db_session.scalars(select(SourceKey))
    }
    # the reprint keeps its own (source, id), pointed at the story it duplicates
    assert keys == {
        ("wire", "a1"): (a.delivery_id, story_a),
        ("other", "x9"): (reprint.delivery_id, story_a),
        ("wire", "b1"): (b.delivery_id, outcomes[3].story_id),
    }
    rows = {r.id: r for r in db_session.scalars(select(DeliveryRow))}
    assert (
        rows[resent.delivery_id].status == "duplicate"
        and rows[resent.delivery_id].duplicate_of == a.delivery_id
    )
    assert rows[b.delivery_id].story_id == outcomes[3].story_id
    stages = [(e["delivery_id"], e["stage"]) for e in logs if e["event"] == "stage_completed"]
    assert stages == [
        (a.delivery_id, "normalize"),
        (a.delivery_id, "dedup"),
        (a.delivery_id, "enrich"),
        (a.delivery_id, "persist"),
        (resent.delivery_id, "normalize"),
        (resent.delivery_id, "dedup"),
        (resent.delivery_id, "persist"),
        (reprint.delivery_id, "normalize"),
        (reprint.delivery_id, "dedup"),
        (reprint.delivery_id, "persist"),
        (b.delivery_id, "normalize"),
        (b.delivery_id, "dedup"),
        (b.delivery_id, "enrich"),
        (b.delivery_id, "persist"),
    ]


def test_a_failed_delivery_hands_its_keys_to_the_next(db_session, monkeypatch) -> None:
    import worker.pipeline as pipeline

    real = pipeline.enrich_stage.enrich

    def explode(**kwargs):
        if kwargs["title"] == "boom":
            raise ValueError("enrichment bug")
        return real(**kwargs)

    monkeypatch.setattr(pipeline.enrich_stage, "enrich", explode)
    bad = _msg(_story("wire", "k1", BODY_A, title="boom"))
    later = _msg(_story("wire", "k1", BODY_B))  # same (source, id): a duplicate only if bad had been stored
    outcomes = process_batch(db_session, IngestBatch(deliveries=[bad, later]))
    assert [o.status for o in outcomes] == ["rejected", "new"]
    assert db_session.get(DeliveryRow, bad.delivery_id).error["code"] == "processing_error"
    key = db_session.get(SourceKey, ("wire", "k1"))
    assert key.delivery_id == later.delivery_id and key.story_id == outcomes[1].story_id


class Deadline(Exception):
    pass


def test_a_delivery_charged_alone_stores_nothing_and_the_rest_commit(db_session) -> None:
    slow = _msg(_story("wire", "s1", BODY_A))
    fine = _msg(_story("wire", "f1", BODY_B))

    @contextmanager
    def around(msg: DeliveryMessage, *, io: bool = True) -> Iterator[None]:
        if msg.delivery_id == slow.delivery_id:
            raise Deadline("too slow")
        yield

    outcomes = process_batch(
        db_session,
        IngestBatch(deliveries=[slow, fine]),
        around=around,
        propagate=(Deadline,),
        timeouts=(Deadline,),
    )
    assert [(o.status, o.failure) for o in outcomes] == [("failed", "timeout"), ("new", None)]
    assert "Deadline: too slow" in outcomes[0].error
    assert db_session.get(DeliveryRow, slow.delivery_id) is None
    assert db_session.get(SourceKey, ("wire", "s1")) is None
    assert db_session.get(DeliveryRow, fine.delivery_id).status == "new"


def _race(sessions, first: list[DeliveryMessage], second: list[DeliveryMessage]) -> list[str]:
    """Run ``second`` while ``first``'s transaction holds its claims uncommitted; second's statuses."""
    result: list[str] = []
    with sessions.begin() as s1:
        assert [o.status for o in process_batch(s1, IngestBatch(deliveries=first))] == ["new"]

        def run() -> None:
            with sessions.begin() as s2:
                result.extend(o.status for o in process_batch(s2, IngestBatch(deliveries=second)))

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(1.5)
        assert thread.is_alive(), "the second batch must wait for the first one's claims"
    thread.join(30)
    assert not thread.is_alive()
    return result


def test_concurrent_batches_racing_on_a_key(committed) -> None:
    sessions, source = committed
    x = _msg(_story(source, "r1", BODY_A))
    again = _msg(_story(source, "r1", BODY_A))
    other = _msg(_story(source, "r2", BODY_B))
    assert _race(sessions, [x], [again, other]) == ["duplicate", "new"]
    with sessions() as s:
        row = s.get(DeliveryRow, again.delivery_id)
        assert row.duplicate_of == x.delivery_id
        assert s.scalar(select(func.count()).select_from(Story).where(Story.source == source)) == 2


@pytest.mark.parametrize(("attempts", "expected", "not_expected"), [
    (pipeline.TOGETHER_ATTEMPTS, "batch_again", "batch_one_by_one"),  # written together again
    (1, "batch_one_by_one", "batch_again"),  # still raced after its attempts: one by one
])
def test_a_batch_depending_on_a_raced_key(committed, monkeypatch, attempts, expected, not_expected) -> None:
    monkeypatch.setattr(pipeline, "TOGETHER_ATTEMPTS", attempts)
    sessions, source = committed
    x = _msg(_story(source, "r1", BODY_A))
    again = _msg(_story(source, "r1", BODY_A))
    twice = _msg(_story(source, "r1", BODY_A))  # depends on `again` holding the key inside the batch
    with capture_logs() as logs:
        assert _race(sessions, [x], [again, twice]) == ["duplicate", "duplicate"]
    events = [e["event"] for e in logs]
    assert expected in events and not_expected not in events
    with sessions() as s:
        assert {s.get(DeliveryRow, m.delivery_id).duplicate_of for m in (again, twice)} == {x.delivery_id}
