"""Versions of a wire story (NewsML-G2 / NITF ``guid`` and ``version``) are one story whatever their
text: an agency's one-line flash and the full story that replaces it share the guid, not the words."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from models import Delivery as DeliveryRow
from models import StoryVersion
from producers.formats.newsml import parse_newsml
from worker.messages import Delivery, DeliveryMessage, IngestBatch, new_delivery_id
from worker.neardup.local import LocalNearDupIndex
from worker.pipeline import process_batch

DATA = Path(__file__).resolve().parent / "producers" / "data"
FLASH = "عاجل: مقتل ثلاثة في انفجار سيارة ملغومة قرب مبنى حكومي في العاصمة"


def _msg(record: Delivery) -> DeliveryMessage:
    return DeliveryMessage(delivery_id=new_delivery_id(), received_at=datetime.now(UTC), correlation_id="v",
                           record=record)


def _version(name: str, source: str, **changes: object) -> DeliveryMessage:
    (record,) = parse_newsml((DATA / name).read_bytes(), source=source)
    assert isinstance(record, Delivery)
    return _msg(record.model_copy(update=changes))


def test_a_later_version_with_other_words_is_an_update_of_the_same_story(db_session) -> None:
    index = LocalNearDupIndex()
    flash = _version("newsml_v1.xml", "wire-g", title="عاجل", body=FLASH)
    (first,) = process_batch(db_session, IngestBatch(deliveries=[flash]), neardup_index=index)
    assert first.status == "new"
    full = _version("newsml_v2.xml", "wire-g")
    assert full.record is not None and flash.record is not None
    assert full.record.extra["guid"] == flash.record.extra["guid"]
    (second,) = process_batch(db_session, IngestBatch(deliveries=[full]), neardup_index=index)
    assert (second.status, second.story_id) == ("update", first.story_id)
    assert second.duplicate_of == flash.delivery_id
    row = db_session.get(DeliveryRow, full.delivery_id)
    assert (row.status, row.version) == ("update", 2)
    versions = db_session.scalars(select(StoryVersion).where(StoryVersion.story_id == first.story_id)
                                  .order_by(StoryVersion.version)).all()
    assert [v.delivery_id for v in versions] == [flash.delivery_id, full.delivery_id]
    assert versions[1].changes["paragraphs_added"]


def test_the_same_guid_in_one_batch_and_another_source_apart(db_session) -> None:
    index = LocalNearDupIndex()
    flash = _version("newsml_v1.xml", "wire-h", title="عاجل", body=FLASH)
    full = _version("newsml_v2.xml", "wire-h")
    # The same guid from another source is another agency's item: not linked by the guid.
    other = _version("newsml_v1.xml", "wire-i", title="افتتاح مستشفى",
                     body="أعلنت وزارة الصحة اليوم افتتاح مستشفى جديد للأطفال في المدينة بسعة مئتي سرير")
    outcomes = process_batch(db_session, IngestBatch(deliveries=[flash, full]), neardup_index=index)
    assert [o.status for o in outcomes] == ["new", "update"]
    assert outcomes[0].story_id == outcomes[1].story_id
    (alone,) = process_batch(db_session, IngestBatch(deliveries=[other]), neardup_index=index)
    assert alone.status == "new" and alone.story_id != outcomes[0].story_id
