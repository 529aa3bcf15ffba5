"""The ingest path's writes on the real PostgreSQL: what the batch statements store."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, text

from models import Story
from worker.messages import Delivery, DeliveryMessage, IngestBatch, new_delivery_id
from worker.pipeline import process_batch

BODY = "\n".join(
    f"أعلنت وزارة الصحة اليوم عن افتتاح المستشفى رقم {i} في مدينة جدة، ويضم ثلاثمئة سرير وخمسين عيادة."
    for i in range(60)
)


def _msg(source: str, sid: str, body: str) -> DeliveryMessage:
    return DeliveryMessage(delivery_id=new_delivery_id(), received_at=datetime.now(UTC),
                           correlation_id="c-persist", run_id="persist",
                           record=Delivery(id=sid, source=source, title="خبر", body=body))


def test_large_text_is_toasted_with_lz4(db_session) -> None:
    (outcome,) = process_batch(db_session, IngestBatch(deliveries=[_msg("wire", "lz4-1", BODY)]))
    assert outcome.status == "new"
    story = db_session.scalar(select(Story).where(Story.id == outcome.story_id))
    assert story.body == BODY
    methods = db_session.execute(text(
        "SELECT pg_column_compression(s.body), pg_column_compression(v.body), pg_column_compression(d.body)"
        " FROM stories s JOIN story_versions v ON v.story_id = s.id JOIN deliveries d ON d.story_id = s.id"
        " WHERE s.id = :id"), {"id": outcome.story_id}).one()
    assert tuple(methods) == ("lz4", "lz4", "lz4")
