"""Concurrency does not change the grouping: planted near-duplicate groups delivered in two
different shuffles by two concurrent writers on the real PostgreSQL and Redis, the second run with
the index lost (dropped) halfway, end with the same groups, exactly one story per group.

Groups are real corpus articles with their reprints (typos, another dateline, another outlet) and
a shorter first version; every member of a group matches every other one, so the grouping does not
hinge on merging stories (chains that need merges are in tests/integration/test_neardup_groups.py,
with real worker processes). Committed transactions: the rows of each run are removed afterwards.
"""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import delete, select
from sqlalchemy.exc import OperationalError

from bench import corpus_variants as cv
from models import Delivery as DeliveryRow
from models import Fingerprint, SourceKey, Story, StoryVersion
from models.session import session_factory
from tests.conftest import read_corpus
from worker.messages import Delivery, DeliveryMessage, IngestBatch, new_delivery_id
from worker.neardup import NearDupIndex, compare, signature
from worker.pipeline import process_batch
from worker.stages.normalize import normalize

pytestmark = pytest.mark.slow

T0 = datetime(2032, 3, 1, 8, 0, tzinfo=UTC)
GROUPS = 30
BATCH = 6


def _members(row: dict, rnd: random.Random) -> list[tuple[str, str, list[str]]]:
    paragraphs = cv._paras(row["body"])
    return [
        ("0", row["title"], paragraphs),
        ("1", row["title"], cv.typo_edit(paragraphs, rnd, 2)),
        ("2", row["title"], cv.dateline_edit(paragraphs, rnd)),
        ("3", row["title"], paragraphs[:-1]),
    ]


def _sig(title: str, paragraphs: list[str], source: str, at: datetime):
    n = normalize(title=title, body="\n\n".join(paragraphs))
    return signature(match_title=n.match_title, match_body=n.match_body, published_at=at, source=source)


@pytest.fixture(scope="module")
def planted() -> list[tuple[str, str, str, list[str], datetime]]:
    """(group, member, title, paragraphs, published_at): groups whose members all match each other
    in both orders, and no member of one group matches another group's base."""
    rnd = random.Random(11)
    rows = [r for r in read_corpus(12000)[9000:] if r["source_dataset"] == "SaudiNewsNet" and r["title"]]
    rows = [r for r in rows if len(r["body"].split()) >= 120 and len(cv._paras(r["body"])) >= 4]
    rnd.shuffle(rows)
    out: list[tuple[str, str, str, list[str], datetime]] = []
    bases = []
    for row in rows:
        members = _members(row, rnd)
        at = [T0 + timedelta(minutes=7 * int(m)) for m, _, _ in members]
        sigs = [_sig(t, p, f"s{m}", a) for (m, t, p), a in zip(members, at, strict=True)]
        if not all(compare(a, b).same_story for a in sigs for b in sigs if a is not b):
            continue
        if any(compare(b, s).same_story for b in bases for s in sigs):
            continue
        bases.append(sigs[0])
        g = f"g{len(bases)}"
        out += [(g, m, t, p, a) for (m, t, p), a in zip(members, at, strict=True)]
        if len(bases) == GROUPS:
            break
    assert len(bases) == GROUPS
    return out


def _run(migrated_pg: str, index: NearDupIndex, planted, order_seed: int, tag: str,
         drop_at: int | None = None) -> dict[str, int]:
    """Deliver every member in a shuffled order, in batches, by two concurrent writers; returns
    the story id of each member (by "group/member")."""
    sessions = session_factory(migrated_pg, write=True)
    msgs = []
    names: dict[str, str] = {}
    for g, m, title, paragraphs, at in planted:
        msg = DeliveryMessage(
            delivery_id=new_delivery_id(), received_at=datetime.now(UTC), correlation_id="c-ndc", run_id=tag,
            record=Delivery(id=f"{g}-{m}", source=f"{tag}-s{m}", title=title, body="\n\n".join(paragraphs),
                            published_at=at))
        msgs.append(msg)
        names[msg.delivery_id] = f"{g}/{m}"
    random.Random(order_seed).shuffle(msgs)
    batches = [msgs[i:i + BATCH] for i in range(0, len(msgs), BATCH)]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            while True:
                with lock:
                    if not batches:
                        return
                    batch = batches.pop(0)
                    if drop_at is not None and len(batches) == drop_at:
                        index.drop()  # Redis lost the index mid-run
                for _attempt in range(20):
                    try:
                        with sessions.begin() as s:
                            process_batch(s, IngestBatch(deliveries=batch), neardup_index=index,
                                          neardup_window_days=7)
                        break
                    except OperationalError:
                        continue  # transient (index being rebuilt): retry the batch, as the task does
                else:
                    raise AssertionError("a batch never got through")
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    with sessions() as s:
        rows = s.execute(select(DeliveryRow.id, DeliveryRow.story_id).where(DeliveryRow.run_id == tag)).all()
    return {names[d]: story for d, story in rows}


def _cleanup(migrated_pg: str, tag: str) -> None:
    sessions = session_factory(migrated_pg, write=True)
    with sessions.begin() as s:
        ids = s.scalars(select(Story.id).where(Story.source.like(f"{tag}-%"))).all()
        s.execute(delete(DeliveryRow).where(DeliveryRow.run_id == tag))
        s.execute(delete(SourceKey).where(SourceKey.source.like(f"{tag}-%")))
        s.execute(delete(Fingerprint).where(Fingerprint.story_id.in_(ids)))
        s.execute(delete(StoryVersion).where(StoryVersion.story_id.in_(ids)))
        s.execute(delete(Story).where(Story.id.in_(ids)))


def _groups(story_of: dict[str, int]) -> set[frozenset[str]]:
    by_story: dict[int, set[str]] = {}
    for name, story in story_of.items():
        by_story.setdefault(story, set()).add(name)
    return {frozenset(v) for v in by_story.values()}


def test_two_shuffles_two_writers_and_a_lost_index_give_the_same_groups(migrated_pg, redis_url, redis_prefix,
                                                                         planted) -> None:
    client = redis.Redis.from_url(redis_url)
    expected = {frozenset(f"{g}/{m}" for g2, m, *_ in planted if g2 == g) for g, *_ in planted}
    runs = []
    for seed, drop_at in ((1, None), (2, len(planted) // BATCH // 2)):
        tag = f"ndc-{uuid.uuid4().hex[:8]}"
        index = NearDupIndex(client, f"{redis_prefix}:{tag}")
        try:
            story_of = _run(migrated_pg, index, planted, seed, tag, drop_at)
        finally:
            _cleanup(migrated_pg, tag)
            index.drop()
        assert len(story_of) == len(planted)
        runs.append(_groups(story_of))
    assert runs[0] == expected
    assert runs[1] == expected
