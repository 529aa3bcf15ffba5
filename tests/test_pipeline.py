"""The pipeline stages called directly, on the real PostgreSQL, each test rolled back."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from structlog.testing import capture_logs

from models import Delivery as DeliveryRow
from models import Fingerprint, SourceKey, Story, StoryVersion
from producers.records import parse_seed
from worker.messages import Delivery, DeliveryMessage, IngestBatch, Rejection, new_delivery_id
from worker.pipeline import process_batch

SEED = Path(__file__).resolve().parent.parent / "seeds" / "000_7b75cc1a696a820f.txt"


def _msg(item: Delivery | Rejection, run_id: str = "t") -> DeliveryMessage:
    kind = "record" if isinstance(item, Delivery) else "rejected"
    return DeliveryMessage(delivery_id=new_delivery_id(), received_at=datetime.now(UTC), correlation_id="c-1",
                           run_id=run_id, **{kind: item})


def _seed() -> Delivery:
    item = parse_seed(SEED.read_bytes(), stem=SEED.stem, max_bytes=1 << 20)
    assert isinstance(item, Delivery)
    return item


def test_new_story_then_duplicates_by_source_id_and_by_content(db_session) -> None:
    seed = _seed()
    first = _msg(seed)
    outcomes = process_batch(db_session, IngestBatch(deliveries=[first]))
    assert [o.status for o in outcomes] == ["new"]
    story = db_session.scalars(select(Story)).one()
    assert story.title == seed.title and story.body == seed.body  # original kept untouched
    assert len(story.paragraphs) == 21
    assert "الاجانب" in story.normalized_title  # alef folded in the match form only
    assert story.enrichment["language"] == "ar"
    assert {p["name"] for p in story.enrichment["places"]} >= {"Syria", "Iraq", "United States"}

    resent = _msg(seed)  # same (source, id)
    reprint = _msg(seed.model_copy(update={"id": "other", "source": "elsewhere",
                                           "body": seed.body.replace("سوريا", "سوريـا")}))  # tatweel only
    outcomes = process_batch(db_session, IngestBatch(deliveries=[resent, reprint]))
    assert [o.status for o in outcomes] == ["duplicate", "duplicate"]
    assert all(o.story_id == story.id and o.duplicate_of == first.delivery_id for o in outcomes)
    assert db_session.scalar(select(func.count()).select_from(Story)) == 1
    assert db_session.scalar(select(func.count()).select_from(StoryVersion)) == 1
    assert db_session.scalar(select(func.count()).select_from(Fingerprint)) == 1
    keys = db_session.scalars(select(SourceKey).order_by(SourceKey.source)).all()
    assert [(k.source, k.story_id) for k in keys] == [("elsewhere", story.id), ("seeds", story.id)]


def test_redelivered_batch_stores_nothing_twice(db_session) -> None:
    batch = IngestBatch(deliveries=[_msg(_seed())])
    assert [o.status for o in process_batch(db_session, batch)] == ["new"]
    assert [o.status for o in process_batch(db_session, batch)] == ["already_processed"]
    assert db_session.scalar(select(func.count()).select_from(DeliveryRow)) == 1
    assert db_session.scalar(select(func.count()).select_from(Story)) == 1


def test_rejection_is_kept_with_raw_bytes(db_session) -> None:
    raw = b'{"id": 1, "body": "\xff"}'
    rejection = Rejection.of("invalid_utf8", "not UTF-8", source="wire", raw=raw)
    msg = _msg(rejection)
    assert [o.status for o in process_batch(db_session, IngestBatch(deliveries=[msg]))] == ["rejected"]
    row = db_session.get(DeliveryRow, msg.delivery_id)
    assert row.status == "rejected" and row.story_id is None
    assert row.raw == raw
    assert row.error == {"code": "invalid_utf8", "message": "not UTF-8"}


def test_a_failing_delivery_is_quarantined_without_failing_its_neighbours(db_session, monkeypatch) -> None:
    import worker.pipeline as pipeline

    real = pipeline.enrich_stage.enrich

    def explode(**kwargs):
        if kwargs["title"] == "boom":
            raise ValueError("enrichment bug")
        return real(**kwargs)

    monkeypatch.setattr(pipeline.enrich_stage, "enrich", explode)
    good = _msg(_seed())
    bad = _msg(Delivery(id="b1", source="wire", title="boom", body="نص آخر مختلف تماما"))
    outcomes = process_batch(db_session, IngestBatch(deliveries=[bad, good]))
    assert [o.status for o in outcomes] == ["rejected", "new"]
    row = db_session.get(DeliveryRow, bad.delivery_id)
    assert row.error["code"] == "processing_error"
    assert "enrichment bug" in row.error["message"] and "Traceback" in row.error["traceback"]
    # the failed delivery's key claims were rolled back with its savepoint
    claims = select(func.count()).select_from(SourceKey).where(SourceKey.source_id == "b1")
    assert db_session.scalar(claims) == 0


def test_every_stage_logs_one_summary_line_with_context(db_session) -> None:
    msg = _msg(_seed())
    with capture_logs() as logs:
        process_batch(db_session, IngestBatch(deliveries=[msg]))
    stages = [e for e in logs if e["event"] == "stage_completed"]
    assert [e["stage"] for e in stages] == ["normalize", "dedup", "enrich", "persist"]
    for event in stages:
        assert event["outcome"] and isinstance(event["duration_ms"], float)
    assert stages[-1]["story_id"] is not None
