"""Queries of the near-duplicate stage: advisory locks, candidate deliveries, joining a story.

The near-duplicate stage (:mod:`worker.stages.neardup`) runs after a delivery has been stored as a
new story; when the delivery turns out to be a near-duplicate or an update of a stored story, the
story it created is folded into that story here, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import xxhash
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from models.delivery import Delivery
from models.story import Fingerprint, SourceKey, Story, StoryVersion

# The key a rebuild of the index takes exclusively and every indexing transaction takes shared.
REBUILD_KEY = 0x616B6862_6E640001 - (1 << 63)


def lock_key(delivery_id: str) -> int:
    """A delivery's advisory lock key: a signed 64-bit hash of its id."""
    return xxhash.xxh64_intdigest(delivery_id.encode()) - (1 << 63)


def _postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def lock_for_indexing(session: Session, delivery_ids: Iterable[str]) -> None:
    """Before a delivery reaches the index: the rebuild key shared, the delivery's own key
    exclusive, both until commit, so a concurrent lookup that finds it waits for its row. Keys are
    taken in sorted order so that two batches cannot deadlock. Nothing to do on SQLite (one writer)."""
    if not _postgresql(session):
        return
    session.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": REBUILD_KEY})
    for key in sorted({lock_key(d) for d in delivery_ids}):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def wait_for(session: Session, delivery_ids: Iterable[str], own: Iterable[str] = ()) -> None:
    """Wait for the transactions still writing these candidate deliveries (their keys shared)."""
    if not _postgresql(session):
        return
    mine = {lock_key(d) for d in own}
    for key in sorted({lock_key(d) for d in delivery_ids} - mine):
        session.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": key})


def lock_rebuild(session: Session) -> None:
    """Exclusive rebuild key: waits for every transaction that is indexing a delivery."""
    if _postgresql(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": REBUILD_KEY})


@dataclass(frozen=True, slots=True)
class Holder:
    """A stored delivery a candidate names, and the story it belongs to."""

    delivery_id: str
    story_id: int
    story_version: int
    canonical_at: datetime | None
    canonical_delivery_id: str
    withdrawn: bool


def candidate_holders(session: Session, delivery_ids: Iterable[str]) -> dict[str, Holder]:
    """The stored deliveries among ``delivery_ids`` that belong to a story, by id."""
    ids = sorted(set(delivery_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(Delivery.id, Story.id, Story.version, Story.published_at, Story.canonical_delivery_id,
               Story.withdrawn)
        .join(Story, Story.id == Delivery.story_id)
        .where(Delivery.id.in_(ids))
    ).tuples()
    return {r[0]: Holder(*r) for r in rows}


def store_signatures(session: Session, signatures: dict[str, bytes]) -> None:
    """Keep each delivery's signature with it (the index is rebuilt from these)."""
    for delivery_id, data in sorted(signatures.items()):
        session.execute(update(Delivery).where(Delivery.id == delivery_id).values(neardup_signature=data))


def stored_signatures(session: Session, since: datetime | None) -> Iterator[tuple[str, bytes | None]]:
    """(delivery id, signature) of the deliveries received since ``since``, oldest first."""
    stmt = select(Delivery.id, Delivery.neardup_signature).where(Delivery.neardup_signature.is_not(None))
    if since is not None:
        stmt = stmt.where(Delivery.received_at >= since)
    yield from session.execute(stmt.order_by(Delivery.received_at, Delivery.id)
                               .execution_options(yield_per=2000)).tuples()


def rebuild_since(window_days: int, now: datetime) -> datetime:
    """The oldest receipt time a rebuild reads: the last two windows."""
    return now - timedelta(days=2 * window_days)


def join_story(session: Session, *, delivery_id: str, own_story_id: int, story_id: int, status: str,
               duplicate_of: str, version: int | None = None,
               new_version: dict[str, Any] | None = None) -> int:
    """Fold the story ``delivery_id`` created (``own_story_id``) into ``story_id``.

    ``status`` "near_duplicate" joins at the story's current version; "update" stores
    ``new_version`` (title, body, paragraphs, normalized_title, normalized_body, content_hash,
    changes) as the story's next version and makes it the story's text. The keys the delivery
    claimed move to the story; its own story row goes. Returns the delivery's version.
    """
    story = session.get(Story, story_id, with_for_update=True)
    assert story is not None
    if status == "update" and new_version is not None:
        version = story.version + 1
        session.add(StoryVersion(
            story_id=story_id, version=version, delivery_id=delivery_id, title=new_version["title"],
            body=new_version["body"], paragraphs=new_version["paragraphs"],
            content_hash=new_version["content_hash"], changes=new_version["changes"]))
        for name in ("title", "body", "paragraphs", "normalized_title", "normalized_body", "content_hash"):
            setattr(story, name, new_version[name])
        # The story now reads as the new version: so must its enrichment, computed for that text
        # when the delivery created its own story.
        own = session.get(Story, own_story_id)
        if own is not None:
            story.enrichment, story.enrichment_version = own.enrichment, own.enrichment_version
            story.language = own.language
        story.version = version
    elif version is None:
        version = story.version
    session.flush()
    session.execute(update(SourceKey).where(SourceKey.story_id == own_story_id)
                    .values(story_id=story_id, version=version))
    session.execute(update(Fingerprint).where(Fingerprint.story_id == own_story_id)
                    .values(story_id=story_id, version=version))
    session.execute(update(Delivery).where(Delivery.story_id == own_story_id)
                    .values(story_id=story_id, version=version))
    session.execute(update(Delivery).where(Delivery.id == delivery_id)
                    .values(status=status, duplicate_of=duplicate_of))
    session.execute(delete(StoryVersion).where(StoryVersion.story_id == own_story_id))
    session.execute(delete(Story).where(Story.id == own_story_id))
    return version


def story_text(session: Session, story_id: int) -> tuple[str, str, list[Any], datetime | None, str] | None:
    """(normalized title, normalized body, paragraphs, published_at, source) of a story's latest version."""
    row = session.execute(select(Story.normalized_title, Story.normalized_body, Story.paragraphs,
                                 Story.published_at, Story.source).where(Story.id == story_id)).first()
    return None if row is None else (row[0], row[1], list(row[2]), row[3], row[4])
