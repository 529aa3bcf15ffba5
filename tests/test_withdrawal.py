"""A canceled wire version marks every stored version of its guid withdrawn, and keeps them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from models import Story
from producers.formats.newsml import parse_newsml
from worker.messages import Delivery, DeliveryMessage, IngestBatch, new_delivery_id
from worker.pipeline import process_batch

DATA = Path(__file__).resolve().parent / "producers" / "data"


def _msgs(name: str) -> list[DeliveryMessage]:
    items = parse_newsml((DATA / name).read_bytes(), source="wire-w")
    assert all(isinstance(i, Delivery) for i in items)
    return [DeliveryMessage(delivery_id=new_delivery_id(), received_at=datetime.now(UTC), correlation_id="w",
                            record=i) for i in items]


def test_cancel_marks_every_version_withdrawn(db_session) -> None:
    first = process_batch(db_session, IngestBatch(deliveries=_msgs("newsml_v1.xml")))
    story_v1 = first[0].story_id
    assert story_v1 is not None
    assert db_session.get(Story, story_v1).withdrawn is False
    cancel = _msgs("newsml_v3_canceled.xml")
    assert cancel[0].record.extra["withdrawn"] is True
    process_batch(db_session, IngestBatch(deliveries=cancel))
    stories = db_session.scalars(select(Story).where(Story.source == "wire-w")).all()
    assert stories, "the versions are kept"
    assert all(s.withdrawn for s in stories)
    assert story_v1 in {s.id for s in stories}
