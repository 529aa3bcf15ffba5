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


def test_batch_claims_and_attach_point_keys_at_their_stories(db_session) -> None:
    from models import Fingerprint, SourceKey
    from models import ingest as queries

    ids = queries.create_stories(db_session, [dict(
        canonical_delivery_id=f"d-attach-{n}", source="wire", source_id=f"attach-{n}", title="خبر",
        body=BODY, paragraphs=BODY.split("\n"), normalized_title="خبر", normalized_body=BODY,
        content_hash=f"h-attach-{n}", url=None, published_at=None, language="ar", enrichment={"k": n},
        enrichment_version="v", pipeline_version="1") for n in range(3)])
    assert sorted(ids) == ["d-attach-0", "d-attach-1", "d-attach-2"]
    won = queries.claim_source_keys(db_session, [("wire", f"attach-{n}", f"d-attach-{n}") for n in range(3)])
    assert won == {("wire", f"attach-{n}") for n in range(3)}
    assert queries.claim_source_keys(db_session, [("wire", "attach-0", "d-other")]) == set()
    assert queries.claim_fingerprints(db_session, [(f"h-attach-{n}", f"d-attach-{n}") for n in range(3)]) == {
        f"h-attach-{n}" for n in range(3)}
    queries.attach_keys_many(
        db_session,
        [("wire", f"attach-{n}", ids[f"d-attach-{n}"], 1) for n in range(3)]
        + [("wire", "attach-2", ids["d-attach-2"], 2)],  # the same key twice: the last one wins
        [(f"h-attach-{n}", ids[f"d-attach-{n}"], 1) for n in range(2)])
    keys = {row.source_id: (row.story_id, row.version) for row in db_session.scalars(
        select(SourceKey).where(SourceKey.source_id.like("attach-%")))}
    assert keys == {"attach-0": (ids["d-attach-0"], 1), "attach-1": (ids["d-attach-1"], 1),
                    "attach-2": (ids["d-attach-2"], 2)}
    hashes = {row.content_hash: row.story_id for row in db_session.scalars(
        select(Fingerprint).where(Fingerprint.content_hash.like("h-attach-%")))}
    assert hashes == {"h-attach-0": ids["d-attach-0"], "h-attach-1": ids["d-attach-1"], "h-attach-2": None}
    story = db_session.scalar(select(Story).where(Story.id == ids["d-attach-1"]))
    db_session.refresh(story)
    assert story.enrichment == {"k": 1} and story.version == 1 and story.withdrawn is False
    assert story.created_at is not None and len(story.versions) == 1
