"""Stories merged when a delivery links them, on real PostgreSQL and the real Redis index.

A chain from a real corpus article: its first half (a first version, source "spa"), its second
half under another headline (another outlet) and the full story ("spa"). The halves do not match
each other, the full story matches both. Whatever the order, one story holds the three deliveries
in the end, its canonical delivery the earliest by publication time; the merged story's versions,
deliveries and keys follow it, and the export lists the versions with what changed.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import func, select
from structlog.testing import capture_logs

from bench import corpus_variants as cv
from models import Delivery as DeliveryRow
from models import Fingerprint, SourceKey, Story, StoryVersion
from models.queries import iter_export, story_versions
from tests.conftest import expected_enrichment, read_corpus
from worker.enrichment import ENRICHMENT_VERSION
from worker.messages import Delivery, DeliveryMessage, IngestBatch, new_delivery_id
from worker.neardup import NearDupIndex, Signature, compare, signature
from worker.pipeline import process_batch, process_one
from worker.stages.normalize import normalize

# Far from the corpus's dates and from the other near-duplicate tests' (same database).
T0 = datetime(2033, 5, 10, 8, 0, tzinfo=UTC)


def _sig(title: str, paragraphs: list[str], source: str, at: datetime, *, record: bool = False) -> Signature:
    n = normalize(title=title, body="\n\n".join(paragraphs))
    sig = signature(match_title=n.match_title, match_body=n.match_body, published_at=at, source=source)
    return Signature.from_bytes(sig.to_bytes(record=True)) if record else sig


def _matches(a: tuple, b: tuple) -> bool | None:
    one = compare(_sig(*a, record=True), _sig(*b)).same_story
    other = compare(_sig(*b, record=True), _sig(*a)).same_story
    return one if one == other else None


@pytest.fixture(scope="module")
def chain() -> tuple[tuple, tuple, tuple]:
    """(head, full, tail) as (title, paragraphs, source, published_at): head~full, full~tail, and
    head and tail not the same story, whichever arrives second."""
    rows = [r for r in read_corpus(12000)[3000:6000] if r["source_dataset"] == "SaudiNewsNet" and r["title"]]
    rows = [r for r in rows if len(r["body"].split()) >= 150 and len(cv._paras(r["body"])) >= 4]
    rnd = random.Random(3)
    rnd.shuffle(rows)
    for row in rows:
        paragraphs = cv._paras(row["body"])
        cut = len(paragraphs) // 2
        head = (row["title"], paragraphs[:cut], "spa", T0 - timedelta(minutes=30))
        full = (row["title"], paragraphs, "spa", T0)
        tail = (cv.replace_title(paragraphs[cut:], rnd), paragraphs[cut:], "alyaum",
                T0 + timedelta(minutes=55))
        if _matches(head, full) and _matches(full, tail) and _matches(head, tail) is False:
            return head, full, tail
    raise AssertionError("no article gives a chain")


@pytest.fixture()
def index(redis_url: str, redis_prefix: str) -> NearDupIndex:
    idx = NearDupIndex(redis.Redis.from_url(redis_url), f"{redis_prefix}:ndm-{uuid.uuid4().hex[:8]}")
    idx.ensure()
    return idx


def _msg(member: tuple, sid: str) -> DeliveryMessage:
    title, paragraphs, source, at = member
    return DeliveryMessage(
        delivery_id=new_delivery_id(), received_at=datetime.now(UTC), correlation_id="c-ndm", run_id="ndm",
        record=Delivery(id=sid, source=source, title=title, body="\n\n".join(paragraphs), published_at=at))


def _check_one_story(session, story_id: int, msgs: list[DeliveryMessage],
                     canonical: DeliveryMessage) -> Story:
    """The deliveries all in ``story_id``, which is consistent: versions 1..n, every delivery and
    key at one of them, the canonical delivery and time those of ``canonical``."""
    session.expire_all()
    rows = session.execute(select(DeliveryRow.id, DeliveryRow.story_id, DeliveryRow.version)
                           .where(DeliveryRow.id.in_([m.delivery_id for m in msgs]))).all()
    assert {r.story_id for r in rows} == {story_id}
    story = session.get(Story, story_id)
    versions = session.scalars(select(StoryVersion).where(StoryVersion.story_id == story_id)
                               .order_by(StoryVersion.version)).all()
    assert [v.version for v in versions] == list(range(1, story.version + 1))
    assert {r.version for r in rows} <= {v.version for v in versions}
    assert story.canonical_delivery_id == canonical.delivery_id
    assert story.published_at.replace(tzinfo=UTC) == canonical.record.published_at
    # the story reads as its latest version, enriched from that version's delivery
    assert (story.title, story.body) == (versions[-1].title, versions[-1].body)
    holder = next(m for m in msgs if m.delivery_id == versions[-1].delivery_id)
    assert story.enrichment_version == ENRICHMENT_VERSION
    assert story.enrichment == expected_enrichment(holder)
    sources = {(m.record.source, m.record.id) for m in msgs}
    keys = session.execute(select(SourceKey.source, SourceKey.source_id, SourceKey.story_id)).all()
    assert {(s, i) for s, i, st in keys if (s, i) in sources and st == story_id} == sources
    fps = session.scalars(select(Fingerprint.story_id).where(Fingerprint.delivery_id.in_(
        [m.delivery_id for m in msgs]))).all()
    assert set(fps) == {story_id} and len(fps) == len(msgs)
    return story


def test_a_delivery_linking_two_stories_merges_them(db_session, index, chain) -> None:
    head, full, tail = chain
    m_head, m_tail, m_full = _msg(head, "h-1"), _msg(tail, "t-1"), _msg(full, "f-1")
    first = process_batch(db_session, IngestBatch(deliveries=[m_tail]), neardup_index=index)
    second = process_batch(db_session, IngestBatch(deliveries=[m_head]), neardup_index=index)
    assert [first[0].status, second[0].status] == ["new", "new"]
    assert first[0].story_id != second[0].story_id
    third = process_batch(db_session, IngestBatch(deliveries=[m_full]), neardup_index=index)
    assert third[0].status in ("near_duplicate", "update")
    # the story whose canonical delivery is earliest (the head's) takes the other
    assert third[0].story_id == second[0].story_id
    assert db_session.get(Story, first[0].story_id) is None
    story = _check_one_story(db_session, third[0].story_id, [m_head, m_tail, m_full], m_head)
    versions = db_session.scalars(select(StoryVersion).where(StoryVersion.story_id == story.id)
                                  .order_by(StoryVersion.version)).all()
    # the head's version, then the tail's (merged), then the full story if it is an update
    assert [v.delivery_id for v in versions][:2] == [m_head.delivery_id, m_tail.delivery_id]
    assert versions[1].changes["merged_from"] == first[0].story_id
    # the tail made a version of the story: it is an update now, linked by the full story; one new
    tail_row = db_session.get(DeliveryRow, m_tail.delivery_id)
    assert (tail_row.status, tail_row.duplicate_of, tail_row.version) == ("update", m_full.delivery_id, 2)
    assert db_session.get(DeliveryRow, m_head.delivery_id).status == "new"
    assert versions[1].changes["title_changed"] is True
    # what changed from the head to the tail: (SimHash-matched) paragraphs of each
    assert versions[1].changes["paragraphs_added"]
    assert set(versions[1].changes["paragraphs_added"]) <= set(tail[1])
    assert versions[1].changes["paragraphs_removed"]
    assert set(versions[1].changes["paragraphs_removed"]) <= set(head[1])
    if third[0].status == "update":
        assert versions[2].delivery_id == m_full.delivery_id
        assert set(versions[2].changes["paragraphs_added"]) <= set(head[1])
    # the export lists the versions with what changed, on every delivery of the story
    exported = {d.id: v for d, _s, v in iter_export(db_session) if d.story_id == story.id}
    assert set(exported) == {m_head.delivery_id, m_tail.delivery_id, m_full.delivery_id}
    for listed in exported.values():
        assert [v["version"] for v in listed] == [v.version for v in versions]
        assert [v["changes"] for v in listed] == [v.changes for v in versions]
    assert story_versions(db_session, [story.id])[story.id] == next(iter(exported.values()))


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1), (1, 2, 0), (2, 1, 0)])
def test_any_order_one_batch_or_one_by_one_ends_in_one_story(db_session, index, chain, order) -> None:
    head, full, tail = chain
    msgs = [_msg(head, "h-2"), _msg(full, "f-2"), _msg(tail, "t-2")]
    ordered = [msgs[i] for i in order]
    together = process_batch(db_session, IngestBatch(deliveries=ordered), neardup_index=index)
    assert len({o.story_id for o in together}) == 1
    db_session.expire_all()
    statuses = {m.delivery_id: db_session.get(DeliveryRow, m.delivery_id).status for m in msgs}
    assert list(statuses.values()).count("new") == 1
    assert {o.delivery_id: o.status for o in together} == statuses
    _check_one_story(db_session, together[0].story_id, msgs, msgs[0])


def test_one_by_one_in_the_order_that_needs_a_merge(db_session, index, chain) -> None:
    head, full, tail = chain
    m_head, m_tail, m_full = _msg(head, "h-3"), _msg(tail, "t-3"), _msg(full, "f-3")
    outcomes = [process_one(db_session, m, neardup_index=index) for m in (m_head, m_tail, m_full)]
    assert len({o.story_id for o in outcomes[:2]}) == 2
    assert outcomes[2].story_id == outcomes[0].story_id
    _check_one_story(db_session, outcomes[2].story_id, [m_head, m_tail, m_full], m_head)


def test_exact_duplicate_of_a_merged_story_in_the_same_batch_follows_it(db_session, index, chain) -> None:
    head, full, tail = chain
    m_head, m_tail = _msg(head, "h-4"), _msg(tail, "t-4")
    process_batch(db_session, IngestBatch(deliveries=[m_head]), neardup_index=index)
    process_batch(db_session, IngestBatch(deliveries=[m_tail]), neardup_index=index)
    again = _msg(tail, "t-4-again")  # the tail's text under another id: an exact duplicate
    m_full = _msg(full, "f-4")
    outcomes = process_batch(db_session, IngestBatch(deliveries=[again, m_full]), neardup_index=index)
    assert outcomes[0].status == "duplicate"
    final = outcomes[1].story_id
    assert outcomes[0].story_id == final
    db_session.expire_all()
    assert db_session.get(DeliveryRow, again.delivery_id).story_id == final
    assert db_session.scalar(select(func.count()).select_from(Story).where(
        Story.source_id.in_(["h-4", "t-4", "f-4"]))) == 1


def test_an_earlier_member_becomes_the_canonical_delivery(db_session, index, chain) -> None:
    _head, full, _tail = chain
    later = _msg(full, "f-5")
    earlier = _msg((full[0], cv.typo_edit(full[1], random.Random(2), 2), "okaz", T0 - timedelta(hours=2)),
                   "r-5")
    first = process_batch(db_session, IngestBatch(deliveries=[later]), neardup_index=index)
    second = process_batch(db_session, IngestBatch(deliveries=[earlier]), neardup_index=index)
    assert second[0].status == "near_duplicate"
    assert second[0].story_id == first[0].story_id
    story = _check_one_story(db_session, first[0].story_id, [later, earlier], earlier)
    assert story.version == 1


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1), (1, 2, 0), (2, 1, 0)])
def test_a_batch_retried_after_reaching_the_index_decides_as_the_first_time(db_session, index, chain,
                                                                           order) -> None:
    """A batch whose transaction is lost after its deliveries reached the index (a deadlock, a lost
    connection) is run again while the index still holds them: each delivery must see only the
    deliveries before it, as the first time, not its batch-mates added by the lost attempt."""
    head, full, tail = chain
    msgs = [_msg(head, "h-6"), _msg(full, "f-6"), _msg(tail, "t-6")]
    ordered = [msgs[i] for i in order]

    def decided(outcomes) -> list[tuple]:
        return [(o.delivery_id, o.status, o.duplicate_of) for o in outcomes]

    lost = db_session.begin_nested()
    first = decided(process_batch(db_session, IngestBatch(deliveries=ordered), neardup_index=index))
    lost.rollback()
    with capture_logs() as logs:
        again = process_batch(db_session, IngestBatch(deliveries=ordered), neardup_index=index)
    assert decided(again) == first
    assert not [e for e in logs if e["event"] == "batch_one_by_one"], logs
    _check_one_story(db_session, again[0].story_id, msgs, msgs[0])
