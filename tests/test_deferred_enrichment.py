"""A delivery that looks like a near-duplicate before its batch writes anything is not enriched
until the near-duplicate stage has decided; when the decision is not ``near_duplicate`` it is
enriched late, into whichever story holds its text. Real PostgreSQL and the real Redis index.

The hint is made wrong on purpose by indexing a phantom: a signature under a reference no delivery
was ever stored with (a transaction that rolled back leaves exactly that). The hint compares
against it; the decision waits for its transaction, finds no row and leaves it out.
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
from models import Story
from tests.conftest import expected_enrichment, read_corpus
from worker import pipeline
from worker.messages import Delivery, DeliveryMessage, IngestBatch, new_delivery_id
from worker.neardup import NearDupIndex, compare, signature
from worker.pipeline import PENDING, process_batch
from worker.stages import enrich as enrich_stage
from worker.stages import normalize as normalize_stage

# Far from the corpus's own dates and from the other near-duplicate tests' time.
T0 = datetime(2032, 3, 9, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def articles() -> list[dict]:
    """Two long SaudiNewsNet articles with a headline and at least five paragraphs."""
    rows = [r for r in read_corpus(12000)[9000:] if r["source_dataset"] == "SaudiNewsNet" and r["title"]]
    rows = [r for r in rows if len(r["body"].split()) >= 150 and len(cv._paras(r["body"])) >= 5]
    random.Random(11).shuffle(rows)
    assert len(rows) >= 2
    return rows[:2]


@pytest.fixture()
def index(redis_url: str, redis_prefix: str) -> NearDupIndex:
    idx = NearDupIndex(redis.Redis.from_url(redis_url), f"{redis_prefix}:nd-{uuid.uuid4().hex[:8]}")
    idx.ensure()
    return idx


@pytest.fixture()
def enriched(monkeypatch) -> list[str]:
    """The source ids of the deliveries enrichment runs for, in order."""
    calls: list[str] = []
    real = enrich_stage.enrich

    def counting(**kwargs):
        calls.append(kwargs["body"])
        return real(**kwargs)

    monkeypatch.setattr(pipeline.enrich_stage, "enrich", counting)
    return calls


def _msg(sid: str, title: str, paragraphs: list[str], at: datetime, source: str = "spa") -> DeliveryMessage:
    return DeliveryMessage(
        delivery_id=new_delivery_id(), received_at=datetime.now(UTC), correlation_id="c-de", run_id="de",
        record=Delivery(id=sid, source=source, title=title, body="\n\n".join(paragraphs), published_at=at),
    )


def _reprint(article: dict, sid: str) -> DeliveryMessage:
    rnd = random.Random(3)
    paragraphs = cv.dateline_edit(cv.typo_edit(cv._paras(article["body"]), rnd, 2), rnd)
    return _msg(sid, article["title"], paragraphs, T0 + timedelta(minutes=40), source="okaz")


def _phantom(index: NearDupIndex, msg: DeliveryMessage) -> None:
    """Index the signature of ``msg`` under a reference no delivery holds."""
    record = msg.record
    norm = normalize_stage.normalize(title=record.title, body=record.body, format=record.format)
    sig = signature(match_title=norm.match_title, match_body=norm.match_body,
                    published_at=record.published_at, source=record.source)
    # The same text: the best verdict there is, and not an update (a near-duplicate's)
    assert compare(sig, sig).label == "duplicate"
    index.add(str(uuid.uuid4()), sig)


def _pending(db_session) -> int:
    return db_session.scalar(
        select(func.count()).select_from(Story).where(Story.enrichment_version == PENDING))


def _enrich_lines(logs: list[dict]) -> dict[str, dict]:
    return {e["delivery_id"]: e for e in logs if e["event"] == "stage_completed" and e["stage"] == "enrich"}


def test_a_near_duplicate_of_a_stored_story_is_never_enriched(db_session, index, articles, enriched) -> None:
    base = _msg("dn-1", articles[0]["title"], cv._paras(articles[0]["body"]), T0)
    reprint = _reprint(articles[0], "dn-2")
    first = process_batch(db_session, IngestBatch(deliveries=[base]), neardup_index=index)
    with capture_logs() as logs:
        second = process_batch(db_session, IngestBatch(deliveries=[reprint]), neardup_index=index)
    assert (first[0].status, second[0].status) == ("new", "near_duplicate")
    assert enriched == [base.record.body]
    assert _enrich_lines(logs)[reprint.delivery_id]["outcome"] == "skipped"
    assert "enrich" not in second[0].stage_ms
    story = db_session.get(Story, first[0].story_id)
    assert story.enrichment == expected_enrichment(base)
    assert story.enrichment_version == enrich_stage.ENRICHMENT_VERSION
    assert _pending(db_session) == 0


def test_a_near_duplicate_of_an_earlier_delivery_of_the_batch_is_never_enriched(
        db_session, index, articles, enriched) -> None:
    base = _msg("db-1", articles[1]["title"], cv._paras(articles[1]["body"]), T0)
    reprint = _reprint(articles[1], "db-2")
    outcomes = process_batch(db_session, IngestBatch(deliveries=[base, reprint]), neardup_index=index)
    assert [o.status for o in outcomes] == ["new", "near_duplicate"]
    assert enriched == [base.record.body]
    assert db_session.get(Story, outcomes[0].story_id).enrichment == expected_enrichment(base)


def test_a_wrong_hint_ending_new_is_enriched_late(db_session, index, articles, enriched) -> None:
    msg = _msg("dw-1", articles[0]["title"], cv._paras(articles[0]["body"]), T0 + timedelta(days=1))
    _phantom(index, msg)
    with capture_logs() as logs:
        outcomes = process_batch(db_session, IngestBatch(deliveries=[msg]), neardup_index=index)
    assert outcomes[0].status == "new"
    assert enriched == [msg.record.body]
    line = _enrich_lines(logs)[msg.delivery_id]
    assert line["outcome"] == "ok" and line["late"] is True
    story = db_session.get(Story, outcomes[0].story_id)
    assert story.enrichment == expected_enrichment(msg)
    assert story.enrichment_version == enrich_stage.ENRICHMENT_VERSION
    assert story.language == "ar"
    assert _pending(db_session) == 0


def test_a_wrong_hint_ending_an_update_enriches_the_story_it_updates(db_session, index, articles,
                                                                    enriched) -> None:
    """The update copies the delivery's text, still without its enrichment, into the stored story:
    the late enrichment is written there."""
    paragraphs = cv._paras(articles[1]["body"])
    at = T0 + timedelta(days=2)
    short = _msg("du-1", articles[1]["title"], paragraphs[:-4], at)
    full = _msg("du-2", articles[1]["title"], paragraphs, at + timedelta(minutes=30))
    first = process_batch(db_session, IngestBatch(deliveries=[short]), neardup_index=index)
    _phantom(index, full)
    with capture_logs() as logs:
        second = process_batch(db_session, IngestBatch(deliveries=[full]), neardup_index=index)
    assert (first[0].status, second[0].status) == ("new", "update")
    assert _enrich_lines(logs)[full.delivery_id]["late"] is True
    assert enriched == [short.record.body, full.record.body]
    story = db_session.get(Story, first[0].story_id)
    db_session.refresh(story)
    assert (story.version, story.body) == (2, full.record.body)
    assert story.enrichment == expected_enrichment(full)
    assert story.enrichment_version == enrich_stage.ENRICHMENT_VERSION
    assert _pending(db_session) == 0


def test_a_late_enrichment_that_fails_rejects_that_delivery_alone(db_session, index, articles,
                                                                 monkeypatch) -> None:
    other = _msg("df-1", articles[1]["title"], cv._paras(articles[1]["body"]), T0 + timedelta(days=3))
    bad = _msg("df-2", articles[0]["title"], cv._paras(articles[0]["body"]), T0 + timedelta(days=3))
    _phantom(index, bad)
    real = enrich_stage.enrich

    def explode(**kwargs):
        if kwargs["body"] == bad.record.body:
            raise ValueError("enrichment bug")
        return real(**kwargs)

    monkeypatch.setattr(pipeline.enrich_stage, "enrich", explode)
    with capture_logs() as logs:
        outcomes = process_batch(db_session, IngestBatch(deliveries=[other, bad]), neardup_index=index)
    assert [o.status for o in outcomes] == ["new", "rejected"]
    assert any(e["event"] == "batch_one_by_one" for e in logs)
    assert db_session.get(DeliveryRow, bad.delivery_id).error["code"] == "processing_error"
    assert db_session.scalars(select(Story.id).where(Story.source_id == "df-2")).all() == []
    assert db_session.get(Story, outcomes[0].story_id).enrichment == expected_enrichment(other)
    assert _pending(db_session) == 0


def test_deferring_changes_no_outcome_on_a_corpus_slice(db_session, redis_url, redis_prefix,
                                                        monkeypatch) -> None:
    """600 deliveries (corpus articles with re-deliveries, surface variants, reprints and
    updates, as the benchmark builds them) in batches of 40, with deferring and without: every
    delivery ends with the same status, duplicate, version, story and story enrichment."""
    from bench.e2e import build_records
    from producers.records import parse_json_record
    from worker.stages import neardup as neardup_stage

    corpus = [{"id": r["id"], "title": r["title"], "body": r["body"], "source": r["source_dataset"],
               "url": r["url"], "published_at": None, "category": r["category"]}
              for r in read_corpus(13000)[12400:]]
    lines, _kinds = build_records(600, seed=5, corpus=corpus)
    records = [parse_json_record(line, default_source="slice", max_bytes=2 << 20, max_depth=32)
               for line in lines]
    assert all(isinstance(r, Delivery) for r in records)
    real_enrich = enrich_stage.enrich
    calls = [0]

    def counting(**kwargs):
        calls[0] += 1
        return real_enrich(**kwargs)

    monkeypatch.setattr(pipeline.enrich_stage, "enrich", counting)

    def run(tag: str) -> tuple[dict[str, tuple], int]:
        prefix = f"{redis_prefix}:nd-{tag}-{uuid.uuid4().hex[:6]}"
        index = NearDupIndex(redis.Redis.from_url(redis_url), prefix)
        index.ensure()
        calls[0] = 0
        names: dict[str, int] = {}
        msgs = []
        for i, record in enumerate(records):
            msg = DeliveryMessage(delivery_id=new_delivery_id(), received_at=datetime.now(UTC),
                                  correlation_id="c-eq", run_id=tag, record=record)
            names[msg.delivery_id] = i
            msgs.append(msg)
        savepoint = db_session.begin_nested()
        outcomes = []
        for start in range(0, len(msgs), 40):
            outcomes += process_batch(db_session, IngestBatch(deliveries=msgs[start:start + 40]),
                                      neardup_index=index)
        result = {}
        for o in outcomes:
            # the story it is in now (a later batch may have merged the one it was decided into)
            row = db_session.get(DeliveryRow, o.delivery_id)
            story = db_session.get(Story, row.story_id)
            result[names[o.delivery_id]] = (
                row.status, names.get(row.duplicate_of), row.version, names[story.canonical_delivery_id],
                story.version, story.enrichment, story.enrichment_version)
        assert _pending(db_session) == 0
        savepoint.rollback()
        return result, calls[0]

    deferred, enriched_deferring = run("on")
    monkeypatch.setattr(neardup_stage, "likely_near_duplicates", lambda index, items: set())
    plain, enriched_plain = run("off")
    assert plain == deferred
    statuses = [v[0] for v in plain.values()]
    assert statuses.count("near_duplicate") >= 30
    # every near-duplicate of a stored story or an earlier delivery was left unenriched
    assert enriched_deferring <= enriched_plain - statuses.count("near_duplicate") + 5


def test_the_hint_compares_an_earlier_delivery_of_the_batch_as_the_index_returns_it(index, articles) -> None:
    """The verdicts the hint keeps are the ones apply() would compute: against the index's record
    form of a candidate (body MinHash cut to 8 bits), not the signature in memory."""
    from worker.neardup import Signature
    from worker.stages import neardup as neardup_stage

    def item(msg: DeliveryMessage) -> neardup_stage.Item:
        record = msg.record
        norm = normalize_stage.normalize(title=record.title, body=record.body, format=record.format)
        return neardup_stage.Item(
            delivery_id=msg.delivery_id, story_id=0, source=record.source, title=record.title,
            body=record.body, paragraphs=norm.paragraphs, match_title=norm.match_title,
            match_body=norm.match_body,
            content_hash=norm.content_hash, published_at=record.published_at)

    base = item(_msg("dh-1", articles[0]["title"], cv._paras(articles[0]["body"]), T0 + timedelta(days=4)))
    reprint = item(_reprint(articles[0], "dh-2"))
    assert neardup_stage.likely_near_duplicates(index, [base, reprint]) == {reprint.delivery_id}
    indexed = Signature.from_bytes(neardup_stage.sign(base).to_bytes(record=True))
    in_memory = compare(neardup_stage.sign(base), neardup_stage.sign(reprint))
    assert reprint.verdicts == {base.delivery_id: compare(indexed, neardup_stage.sign(reprint))}
    assert reprint.verdicts[base.delivery_id] != in_memory  # the two forms do score differently
