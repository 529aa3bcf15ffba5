"""Queries of the ingest path: idempotent claims of exact-duplicate keys, and the writes of a story.

Every function takes an open session and leaves transaction boundaries to the caller (the task
commits once per micro-batch; each delivery runs in its own SAVEPOINT). The database's unique keys
are the authority on duplicates: a claim is an ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, so
of two workers racing on the same key exactly one wins, and the other waits for the winner's commit
and then reads the winner's row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.base import insert_for, utcnow
from models.delivery import Delivery
from models.story import Fingerprint, SourceKey, Story, StoryVersion


@dataclass(frozen=True, slots=True)
class Holder:
    """Who already holds a key: the delivery that claimed it and the story it belongs to."""

    delivery_id: str
    story_id: int | None
    version: int


def processed_deliveries(session: Session, delivery_ids: Iterable[str]) -> dict[str, str]:
    """Status of each of ``delivery_ids`` already committed (a redelivered message)."""
    ids = list(delivery_ids)
    if not ids:
        return {}
    rows = session.execute(select(Delivery.id, Delivery.status).where(Delivery.id.in_(ids)))
    return dict(rows.tuples().all())


def claim_source_key(session: Session, source: str, source_id: str, delivery_id: str) -> Holder | None:
    """Claim (source, source_id) for ``delivery_id``; None if claimed, else the earlier holder."""
    insert = insert_for(session)
    stmt = (
        insert(SourceKey)
        .values(source=source, source_id=source_id, delivery_id=delivery_id, story_id=None)
        .on_conflict_do_nothing(index_elements=["source", "source_id"])
        .returning(SourceKey.source)
    )
    if session.execute(stmt).first() is not None:
        return None
    row = session.execute(
        select(SourceKey.delivery_id, SourceKey.story_id, SourceKey.version).where(
            SourceKey.source == source, SourceKey.source_id == source_id
        )
    ).one()
    return Holder(row.delivery_id, row.story_id, row.version)


def claim_fingerprint(session: Session, content_hash: str, delivery_id: str) -> Holder | None:
    """Claim a content hash for ``delivery_id``; None if claimed, else the earlier holder."""
    insert = insert_for(session)
    stmt = (
        insert(Fingerprint)
        .values(content_hash=content_hash, delivery_id=delivery_id, story_id=None)
        .on_conflict_do_nothing(index_elements=["content_hash"])
        .returning(Fingerprint.content_hash)
    )
    if session.execute(stmt).first() is not None:
        return None
    row = session.execute(
        select(Fingerprint.delivery_id, Fingerprint.story_id, Fingerprint.version).where(
            Fingerprint.content_hash == content_hash
        )
    ).one()
    return Holder(row.delivery_id, row.story_id, row.version)


def attach_keys(session: Session, *, source: str, source_id: str, content_hash: str | None,
                story_id: int, version: int) -> None:
    """Point the keys this delivery claimed at the story it ended in."""
    session.execute(
        update(SourceKey)
        .where(SourceKey.source == source, SourceKey.source_id == source_id)
        .values(story_id=story_id, version=version)
    )
    if content_hash is not None:
        session.execute(
            update(Fingerprint)
            .where(Fingerprint.content_hash == content_hash)
            .values(story_id=story_id, version=version)
        )


def create_story(session: Session, **values: Any) -> Story:
    """Insert a new story with its first version; returns it with its id assigned."""
    story = Story(version=1, **values)
    session.add(story)
    session.flush()
    session.add(StoryVersion(story_id=story.id, version=1, delivery_id=values["canonical_delivery_id"],
                             title=values["title"], body=values["body"], paragraphs=values["paragraphs"],
                             content_hash=values["content_hash"], changes=None))
    return story


def insert_delivery(session: Session, **values: Any) -> bool:
    """Record a delivery's outcome; False if the delivery was already recorded (a concurrent
    redelivery won), in which case the caller rolls back its savepoint."""
    insert = insert_for(session)
    values.setdefault("processed_at", utcnow())
    stmt = insert(Delivery).values(**values).on_conflict_do_nothing(index_elements=["id"]).returning(Delivery.id)
    return session.execute(stmt).first() is not None


def status_counts(session: Session, run_id: str) -> dict[str, int]:
    """Deliveries of one replay run committed so far, by status."""
    from sqlalchemy import func

    rows = session.execute(
        select(Delivery.status, func.count()).where(Delivery.run_id == run_id).group_by(Delivery.status)
    )
    return {status: int(count) for status, count in rows.tuples()}


def story_by_id(session: Session, story_id: int) -> Story | None:
    return session.get(Story, story_id)


