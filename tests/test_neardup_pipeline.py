"""Near-duplicates and updates through the pipeline, on real PostgreSQL and the real Redis index.

Real corpus articles: a reprint with small edits by another outlet joins the story as a
near-duplicate, the full story after a shorter first version is its version 2 with the paragraphs
added recorded, an unrelated story stays new; in one batch and one delivery at a time alike.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import select
from structlog.testing import capture_logs

from bench import corpus_variants as cv
from models import Delivery as DeliveryRow
from models import Story, StoryVersion
from tests.conftest import expected_enrichment, read_corpus
from worker.messages import Delivery, DeliveryMessage, IngestBatch, new_delivery_id
from worker.neardup import NearDupIndex
from worker.pipeline import process_batch, process_one

# Far from the corpus's own dates, and articles past the slice other tests store in the same
# database: nothing stored by them is an exact duplicate or within the time window.
T0 = datetime(2031, 7, 22, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def articles() -> list[dict]:
    """Three long SaudiNewsNet articles with a headline and at least four paragraphs."""
    rows = [r for r in read_corpus(9000)[6000:] if r["source_dataset"] == "SaudiNewsNet" and r["title"]]
    rows = [r for r in rows if len(r["body"].split()) >= 150 and len(cv._paras(r["body"])) >= 5]
    random.Random(7).shuffle(rows)
    assert len(rows) >= 3
    return rows[:3]


@pytest.fixture()
def index(redis_url: str, redis_prefix: str) -> NearDupIndex:
    idx = NearDupIndex(redis.Redis.from_url(redis_url), f"{redis_prefix}:nd-{uuid.uuid4().hex[:8]}")
    idx.ensure()
    return idx


def _msg(source: str, sid: str, title: str, paragraphs: list[str], at: datetime) -> DeliveryMessage:
    return DeliveryMessage(
        delivery_id=new_delivery_id(), received_at=datetime.now(UTC), correlation_id="c-nd", run_id="nd",
        record=Delivery(id=sid, source=source, title=title, body="\n\n".join(paragraphs), published_at=at),
    )


def _reprint(article: dict) -> DeliveryMessage:
    rnd = random.Random(1)
    paragraphs = cv.dateline_edit(cv.typo_edit(cv._paras(article["body"]), rnd, 2), rnd)
    return _msg("okaz", "r-1", article["title"], paragraphs, T0 + timedelta(minutes=40))


def test_reprint_with_small_edits_joins_the_story(db_session, index, articles) -> None:
    base = _msg("spa", "b-1", articles[0]["title"], cv._paras(articles[0]["body"]), T0)
    first = process_batch(db_session, IngestBatch(deliveries=[base]), neardup_index=index)
    with capture_logs() as logs:
        second = process_batch(db_session, IngestBatch(deliveries=[_reprint(articles[0])]),
                               neardup_index=index)
    assert first[0].status == "new"
    assert second[0].status == "near_duplicate"
    assert second[0].story_id == first[0].story_id
    assert second[0].duplicate_of == base.delivery_id
    row = db_session.get(DeliveryRow, second[0].delivery_id)
    assert (row.status, row.story_id, row.version, row.duplicate_of) == (
        "near_duplicate", first[0].story_id, 1, base.delivery_id)
    assert row.neardup_signature
    # the story the reprint created for a moment is gone; one story holds both deliveries
    assert db_session.scalars(select(Story.id).where(Story.source_id.in_(["b-1", "r-1"]))).all() == [
        first[0].story_id]
    lines = [e for e in logs if e["event"] == "stage_completed" and e["stage"] == "neardup"]
    assert len(lines) == 1
    assert lines[0]["outcome"] == "near_duplicate" and "duration_ms" in lines[0]


def test_full_story_after_a_shorter_one_is_an_update(db_session, index, articles) -> None:
    paragraphs = cv._paras(articles[1]["body"])
    short = _msg("spa", "u-1", articles[1]["title"], paragraphs[:-2], T0)
    full = _msg("spa", "u-2", articles[1]["title"], paragraphs, T0 + timedelta(minutes=30))
    first = process_batch(db_session, IngestBatch(deliveries=[short]), neardup_index=index)
    second = process_batch(db_session, IngestBatch(deliveries=[full]), neardup_index=index)
    assert (first[0].status, second[0].status) == ("new", "update")
    story = db_session.get(Story, first[0].story_id)
    db_session.refresh(story)
    assert story.version == 2
    assert story.body == full.record.body
    versions = db_session.scalars(select(StoryVersion).where(StoryVersion.story_id == story.id)
                                  .order_by(StoryVersion.version)).all()
    assert [v.version for v in versions] == [1, 2]
    assert versions[1].delivery_id == full.delivery_id
    assert versions[1].changes["paragraphs_added"] == paragraphs[-2:]
    assert versions[1].changes["paragraphs_removed"] == []
    assert versions[1].changes["title_changed"] is False
    assert db_session.get(DeliveryRow, full.delivery_id).version == 2


def test_each_update_stamps_the_story_with_its_own_time(db_session, index, articles) -> None:
    """A story's ``updated_at`` is the time of the batch that wrote its latest version, not of the
    first one that built the statement."""
    paragraphs = cv._paras(articles[1]["body"])
    extra = cv._paras(articles[2]["body"])[:2]  # the third version adds two paragraphs
    stamps = []
    for n, (sid, text) in enumerate((("s-1", paragraphs[:-2]), ("s-2", paragraphs),
                                     ("s-3", paragraphs + extra))):
        msg = _msg("wam", sid, articles[1]["title"], text, T0 + timedelta(minutes=10 * n))
        started = datetime.now(UTC)
        out = process_batch(db_session, IngestBatch(deliveries=[msg]), neardup_index=index)
        story = db_session.get(Story, out[0].story_id)
        db_session.refresh(story)
        assert story.version == n + 1
        assert story.updated_at >= started
        stamps.append(story.updated_at)
    assert stamps == sorted(stamps) and len(set(stamps)) == 3


def test_in_one_batch_unrelated_stays_new(db_session, index, articles) -> None:
    base = _msg("spa", "c-1", articles[2]["title"], cv._paras(articles[2]["body"]), T0)
    other = _msg("spa", "c-2", articles[0]["title"], cv._paras(articles[0]["body"]), T0)
    reprint = _reprint(articles[2])
    outcomes = process_batch(db_session, IngestBatch(deliveries=[base, other, reprint]), neardup_index=index)
    assert [o.status for o in outcomes] == ["new", "new", "near_duplicate"]
    assert outcomes[2].story_id == outcomes[0].story_id != outcomes[1].story_id


def test_one_delivery_at_a_time_decides_the_same(db_session, index, articles) -> None:
    base = _msg("spa", "d-1", articles[0]["title"], cv._paras(articles[0]["body"]), T0)
    first = process_one(db_session, base, neardup_index=index)
    second = process_one(db_session, _reprint(articles[0]), neardup_index=index)
    assert (first.status, second.status) == ("new", "near_duplicate")
    assert second.story_id == first.story_id


def test_without_an_index_near_duplicates_are_not_looked_for(db_session, articles) -> None:
    base = _msg("spa", "e-1", articles[0]["title"], cv._paras(articles[0]["body"]), T0)
    outcomes = process_batch(db_session, IngestBatch(deliveries=[base, _reprint(articles[0])]))
    assert [o.status for o in outcomes] == ["new", "new"]


def test_lost_index_is_rebuilt_from_the_stored_signatures(db_session, index, articles) -> None:
    base = _msg("spa", "f-1", articles[1]["title"], cv._paras(articles[1]["body"]), T0)
    process_batch(db_session, IngestBatch(deliveries=[base]), neardup_index=index)
    index.drop()  # Redis lost it
    outcomes = process_batch(db_session, IngestBatch(deliveries=[_reprint(articles[1])]), neardup_index=index)
    assert index.present()
    assert outcomes[0].status == "near_duplicate"
    assert outcomes[0].duplicate_of == base.delivery_id


def test_export_rows_keep_the_contract_keys(db_session, index, articles) -> None:
    from akhbar.cli import export_row

    base = _msg("spa", "g-1", articles[2]["title"], cv._paras(articles[2]["body"]), T0)
    reprint = _reprint(articles[2])
    outcomes = process_batch(db_session, IngestBatch(deliveries=[base, reprint]), neardup_index=index)
    row = db_session.get(DeliveryRow, reprint.delivery_id)
    exported = export_row(row, db_session.get(Story, row.story_id))
    assert set(exported) == {"delivery_id", "source", "status", "story_id", "duplicate_of", "version",
                             "title", "body", "normalized_title", "language", "enrichment", "error",
                             "received_at", "processed_at"}
    assert (exported["status"], exported["story_id"], exported["duplicate_of"], exported["version"]) == (
        "near_duplicate", outcomes[0].story_id, base.delivery_id, 1)
    assert exported["enrichment"]  # the story's, shared by its near-duplicates


def test_in_a_batch_a_story_whose_enrichment_fails_is_rejected_alone(db_session, index, articles,
                                                               monkeypatch) -> None:
    import worker.pipeline as pipeline

    base = _msg("spa", "i-1", articles[0]["title"], cv._paras(articles[0]["body"]), T0)
    bad = _msg("spa", "i-2", articles[1]["title"], cv._paras(articles[1]["body"]), T0)
    reprint = _reprint(articles[0])
    real = pipeline.enrich_stage.enrich

    def explode(**kwargs):
        if kwargs["body"] == bad.record.body:
            raise ValueError("enrichment bug")
        return real(**kwargs)

    monkeypatch.setattr(pipeline.enrich_stage, "enrich", explode)
    outcomes = process_batch(db_session, IngestBatch(deliveries=[base, bad, reprint]), neardup_index=index)
    assert [o.status for o in outcomes] == ["new", "rejected", "near_duplicate"]
    assert db_session.get(DeliveryRow, bad.delivery_id).error["code"] == "processing_error"
    assert db_session.scalars(select(Story.id).where(Story.source_id == "i-2")).all() == []
    story = db_session.get(Story, outcomes[0].story_id)
    assert story.enrichment == expected_enrichment(base)
