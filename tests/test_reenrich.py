"""Re-enrichment of stored stories, called directly on the real PostgreSQL, each test rolled back."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

import worker.enrichment
from models import Delivery as DeliveryRow
from models import Fingerprint, Reenrichment, SourceKey, Story, StoryVersion
from producers.records import parse_seed
from tests.conftest import read_corpus
from worker import reenrich
from worker.messages import Delivery, DeliveryMessage, IngestBatch, ReenrichBatch, new_delivery_id
from worker.pipeline import process_batch
from worker.stages import enrich as enrich_stage
from worker.stages.normalize import normalize

SEED = Path(__file__).resolve().parent.parent / "seeds" / "000_7b75cc1a696a820f.txt"
N_CORPUS = 30


def _msg(item: Delivery) -> DeliveryMessage:
    return DeliveryMessage(delivery_id=new_delivery_id(), received_at=datetime.now(UTC), correlation_id="c",
                           run_id="ingest", record=item)


def _corpus_records(n: int) -> list[Delivery]:
    records = []
    for article in read_corpus(n):
        outlet = article["id"].split("/")[2] if article["source_dataset"] == "SaudiNewsNet" else "sanad"
        records.append(Delivery(id=article["id"], source=outlet, title=article["title"] or None,
                                body=article["body"], url=article["url"]))
    return records


@pytest.fixture()
def stored(db_session: Session) -> dict[str, Any]:
    """The seed story and a corpus sample stored by the ingest pipeline."""
    seed = parse_seed(SEED.read_bytes(), stem=SEED.stem, max_bytes=1 << 20)
    assert isinstance(seed, Delivery)
    records = [seed, *_corpus_records(N_CORPUS)]
    outcomes = process_batch(db_session, IngestBatch(deliveries=[_msg(r) for r in records]))
    ids = sorted({o.story_id for o in outcomes if o.status == "new"})
    assert len(ids) >= N_CORPUS // 2
    seed_id = outcomes[0].story_id
    return {"ids": ids, "seed_id": seed_id}


def _counts(session: Session) -> dict[str, int]:
    return {model.__tablename__: session.scalar(select(func.count()).select_from(model))
            for model in (Story, StoryVersion, DeliveryRow, Fingerprint, SourceKey)}


def _age(session: Session, ids: list[int], **values: Any) -> None:
    """Make stored stories look as if an older enrichment version had written them."""
    session.execute(update(Story).where(Story.id.in_(ids)).values(enrichment_version="2000.1", **values))


def _snapshot(session: Session, ids: list[int]) -> dict[int, tuple[datetime, dict[str, Any]]]:
    return {i: (_story(session, i).updated_at, _story(session, i).enrichment) for i in ids}


def _story(session: Session, story_id: int) -> Story:
    session.expire_all()
    story = session.get(Story, story_id)
    assert story is not None
    return story


def test_old_stories_are_updated_in_place_and_nothing_is_created(db_session: Session, stored) -> None:
    ids, seed_id = stored["ids"], stored["seed_id"]
    aged = ids[: len(ids) // 2]
    _age(db_session, aged)
    # The seed story's places were lost by the "older version"; its language was never detected.
    seed = _story(db_session, seed_id)
    expected_places = seed.enrichment["places"]
    db_session.execute(update(Story).where(Story.id == seed_id).values(
        enrichment={**seed.enrichment, "places": []}, language=None))
    before = _counts(db_session)
    seed_updated_at = seed.updated_at

    selected = reenrich.select(db_session)
    assert selected == sorted(set(aged) | {seed_id})
    outcomes = reenrich.reenrich_batch(db_session, ReenrichBatch(story_ids=selected, run_id="r1"))

    assert _counts(db_session) == before  # no delivery, story, version or key created
    by_id = {o.story_id: o for o in outcomes}
    assert by_id[seed_id].outcome == "updated" and by_id[seed_id].changed == ["language", "places"]
    assert all(by_id[i].outcome == "unchanged" and by_id[i].changed == [] for i in aged if i != seed_id)
    seed = _story(db_session, seed_id)
    assert seed.enrichment["places"] == expected_places and seed.language == "ar"
    assert seed.updated_at > seed_updated_at
    for story_id in selected:
        assert _story(db_session, story_id).enrichment_version == enrich_stage.ENRICHMENT_VERSION
    assert reenrich.select(db_session) == []  # the default selection is now empty

    summary = reenrich.run_summary(db_session, "r1", selected=len(selected))
    assert summary == {"selected": len(selected), "updated": 1, "unchanged": len(selected) - 1, "failed": 0,
                       "missing": 0, "changed": {"language": 1, "places": 1}}


def test_reenriched_story_equals_a_fresh_ingest(db_session: Session, stored) -> None:
    story_id = stored["ids"][3]
    _age(db_session, [story_id], enrichment={"version": "2000.1"}, language=None)
    reenrich.reenrich_batch(db_session, ReenrichBatch(story_ids=[story_id], run_id="r"))
    story = _story(db_session, story_id)
    norm = normalize(title=story.title, body=story.body)
    fresh = enrich_stage.enrich(title=story.title, body=story.body, paragraphs=norm.paragraphs,
                                match_title=norm.match_title, match_body=norm.match_body)
    assert story.enrichment == fresh
    assert story.normalized_body == norm.match_body and story.content_hash == norm.content_hash


def test_a_new_version_stamps_unchanged_stories_but_keeps_updated_at(db_session, stored, monkeypatch) -> None:
    monkeypatch.setattr(worker.enrichment, "ENRICHMENT_VERSION", "2099.1")
    monkeypatch.setattr(enrich_stage, "ENRICHMENT_VERSION", "2099.1")
    selected = reenrich.select(db_session)
    assert selected == stored["ids"]  # every story was enriched by another version
    before = {i: _story(db_session, i).updated_at for i in selected}
    outcomes = reenrich.reenrich_batch(db_session, ReenrichBatch(story_ids=selected, run_id="bump"))
    assert {o.outcome for o in outcomes} == {"unchanged"}
    for story_id in selected:
        story = _story(db_session, story_id)
        assert story.enrichment_version == "2099.1" and story.enrichment["version"] == "2099.1"
        assert story.updated_at == before[story_id]
    assert reenrich.select(db_session) == []


def test_running_twice_is_harmless(db_session: Session, stored) -> None:
    ids = stored["ids"]
    _age(db_session, ids, enrichment={"version": "2000.1"})
    batch = ReenrichBatch(story_ids=ids, run_id="twice")
    first = reenrich.reenrich_batch(db_session, batch)
    assert {o.outcome for o in first} == {"updated"}
    after_first = _snapshot(db_session, ids)

    # The same message delivered again: every story already has its record for the run.
    again = reenrich.reenrich_batch(db_session, batch)
    assert {o.outcome for o in again} == {"already_processed"}
    records = select(func.count()).select_from(Reenrichment).where(Reenrichment.run_id == "twice")
    assert db_session.scalar(records) == len(ids)

    # A second run over every story: nothing to change, nothing written.
    second = reenrich.reenrich_batch(db_session, ReenrichBatch(story_ids=ids, run_id="all-again"))
    assert {o.outcome for o in second} == {"unchanged"}
    assert _snapshot(db_session, ids) == after_first
    # ... and without a run (no records at all), still nothing written.
    reenrich.reenrich_batch(db_session, ReenrichBatch(story_ids=ids))
    assert _snapshot(db_session, ids) == after_first


def test_a_failing_story_is_recorded_without_holding_back_others(db_session, stored, monkeypatch) -> None:
    ids = stored["ids"][:6]
    bad = ids[2]
    bad_title = _story(db_session, bad).title
    _age(db_session, ids, enrichment={"version": "2000.1"})
    real = enrich_stage.enrich

    def explode(**kwargs: Any) -> dict[str, Any]:
        if kwargs["title"] == bad_title:
            raise ValueError("enrichment bug")
        return real(**kwargs)

    monkeypatch.setattr(enrich_stage, "enrich", explode)
    outcomes = reenrich.reenrich_batch(db_session, ReenrichBatch(story_ids=ids, run_id="f"))
    by_id = {o.story_id: o for o in outcomes}
    assert by_id[bad].outcome == "failed" and "enrichment bug" in (by_id[bad].error or "")
    assert all(by_id[i].outcome == "updated" for i in ids if i != bad)
    assert _story(db_session, bad).enrichment_version == "2000.1"  # left as it was
    record = db_session.get(Reenrichment, ("f", bad))
    assert record is not None and record.outcome == "failed" and "ValueError" in (record.error or "")
    assert reenrich.select(db_session) == [bad]


def test_a_story_past_the_time_limit_fails_alone(db_session, stored, monkeypatch) -> None:
    ids = stored["ids"][:4]
    slow = ids[1]
    slow_title = _story(db_session, slow).title
    _age(db_session, ids, enrichment={"version": "2000.1"})
    real = enrich_stage.enrich

    def hang(**kwargs: Any) -> dict[str, Any]:
        if kwargs["title"] == slow_title:
            time.sleep(5)
        return real(**kwargs)

    monkeypatch.setattr(enrich_stage, "enrich", hang)
    outcomes = reenrich.reenrich_batch(db_session, ReenrichBatch(story_ids=ids, run_id="t"), time_limit=0.5)
    by_id = {o.story_id: o for o in outcomes}
    assert by_id[slow].outcome == "failed" and "DeliveryTimeout" in (by_id[slow].error or "")
    assert all(by_id[i].outcome == "updated" for i in ids if i != slow)


def test_a_story_the_database_refuses_fails_alone(db_session, stored, monkeypatch) -> None:
    ids = stored["ids"][:5]
    bad = ids[1]
    bad_title = _story(db_session, bad).title
    _age(db_session, ids, enrichment={"version": "2000.1"})
    real = enrich_stage.enrich

    def nul_in_json(**kwargs: Any) -> dict[str, Any]:
        result = real(**kwargs)
        if kwargs["title"] == bad_title:
            result["keywords"] = [{"term": "nul\u0000", "count": 1, "score": 1.0}]  # jsonb refuses \u0000
        return result

    monkeypatch.setattr(enrich_stage, "enrich", nul_in_json)
    with capture_logs() as logs:
        outcomes = reenrich.reenrich_batch(db_session, ReenrichBatch(story_ids=ids, run_id="db"))
    assert any(e["event"] == "reenrich_batch_write_refused" for e in logs)
    by_id = {o.story_id: o for o in outcomes}
    assert by_id[bad].outcome == "failed" and "DataError" in (by_id[bad].error or "")
    assert all(by_id[i].outcome == "updated" for i in ids if i != bad)
    assert [i for i in ids if _story(db_session, i).enrichment_version == "2000.1"] == [bad]


def test_a_deleted_story_is_reported_missing(db_session: Session, stored) -> None:
    present = stored["ids"][0]
    outcomes = reenrich.reenrich_batch(db_session, ReenrichBatch(story_ids=[present, 10**9], run_id="m"))
    assert [(o.story_id, o.outcome) for o in outcomes] == [(present, "unchanged"), (10**9, "missing")]
    assert reenrich.run_summary(db_session, "m", selected=2)["missing"] == 1


def test_record_failed_covers_only_unfinished_stories(db_session: Session, stored) -> None:
    ids = stored["ids"][:4]
    reenrich.reenrich_batch(db_session, ReenrichBatch(story_ids=ids[:2], run_id="x"))
    batch = ReenrichBatch(story_ids=ids, run_id="x")
    assert reenrich.record_failed(db_session, batch, "OperationalError: gone") == 2
    summary = reenrich.run_summary(db_session, "x", selected=4)
    assert (summary["unchanged"], summary["failed"]) == (2, 2)


def test_one_summary_line_per_story_with_its_context(db_session: Session, stored) -> None:
    ids = stored["ids"][:3]
    _age(db_session, ids, enrichment={"version": "2000.1"})
    with capture_logs() as logs:
        reenrich.reenrich_batch(db_session, ReenrichBatch(story_ids=ids, run_id="logs"))
    lines = [e for e in logs if e["event"] == "stage_completed"]
    assert [e["story_id"] for e in lines] == ids
    for event in lines:
        assert event["stage"] == "reenrich" and event["outcome"] == "updated"
        assert isinstance(event["duration_ms"], float) and event["duration_ms"] > 0
        assert "places" in event["changed"]


def test_selection_by_source_and_time(db_session: Session, stored) -> None:
    ids = stored["ids"]
    seed_id = stored["seed_id"]
    assert reenrich.select(db_session, everything=True) == ids
    assert reenrich.select(db_session, everything=True, source="seeds") == [seed_id]
    old = datetime(2020, 1, 1, tzinfo=UTC)
    db_session.execute(update(Story).where(Story.id != seed_id).values(created_at=old))
    recent = datetime.now(UTC) - timedelta(hours=1)
    assert reenrich.select(db_session, everything=True, since=recent) == [seed_id]
    assert reenrich.select(db_session, since=recent) == []  # the default still wants another version
    assert reenrich.select(db_session, everything=True, since=old) == ids


def test_parse_since() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert reenrich.parse_since("7d", now=now) == datetime(2026, 11, 19, 12, 0, tzinfo=UTC)
    assert reenrich.parse_since("90m", now=now) == datetime(2026, 11, 26, 10, 30, tzinfo=UTC)
    assert reenrich.parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert reenrich.parse_since("2026-11-01T03:00:00+03:00") == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="not a date"):
        reenrich.parse_since("last tuesday")


def test_changed_fields_ignores_the_version_stamp() -> None:
    old = {"version": "1", "places": [], "keywords": [{"term": "a"}]}
    new = {"version": "2", "places": [{"name": "Syria"}], "keywords": [{"term": "a"}], "dates": []}
    assert reenrich.changed_fields(old, new, old_language="ar", new_language="ar") == ["dates", "places"]
    assert reenrich.changed_fields(old, old, old_language=None, new_language="ar") == ["language"]
